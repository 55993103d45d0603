package learner

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
)

// builtinOf wraps m (trained in place) in the built-in trainer.
func builtinOf(t testing.TB, m *policy.Model) trainer.Trainer {
	t.Helper()
	tr, err := trainer.NewBuiltin(m, nil, policy.DefaultAdamW(), trainer.BuiltinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestStepMicroBatched: a step streamed through the trainer in micro-batches
// of at most 20 tokens (forward, objective, backward each, then one AdamW
// update per mini-batch) gives the same summary figures and the same
// weights as whole mini-batches (tolerances: 1e-6 relative on losses and
// entropy, 1e-6 absolute on weights after LR 1e-4 updates).
func TestStepMicroBatched(t *testing.T) {
	run := func(budget int) (StepSummary, []float32, int) {
		m := tinyModel(t, 7)
		rng := rand.New(rand.NewPCG(4, 0))
		groups := append(mixedBatch(t, m, rng), mixedBatch(t, m, rng)...)
		cfg := DefaultConfig()
		cfg.K, cfg.B, cfg.MiniBatches, cfg.Start, cfg.LMax = 4, 4, 2, 0, 8
		tr, err := trainer.NewBuiltin(m, nil, cfg.AdamW(), trainer.BuiltinOptions{MicroBatchTokens: budget})
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewTrainer(cfg, tr)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := l.StepContext(context.Background(), StepInput{Step: 3, PolicyVersion: 3, Mixed: true, Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		var seqs []policy.Seq
		for _, g := range groups[:2] {
			for _, r := range g.Rollouts {
				seqs = append(seqs, concat(r.PromptTokens, r.Tokens))
			}
		}
		return sum, slices.Clone(m.Params), len(microBatches(seqs, budget))
	}
	one, w1, n1 := run(0)
	mb, w2, n2 := run(20)
	if n1 != 1 || n2 < 3 {
		t.Fatalf("micro-batches: %d and %d, want 1 and at least 3", n1, n2)
	}
	rel := func(a, b float64) float64 { return math.Abs(a-b) / math.Max(1e-12, math.Abs(a)) }
	if rel(one.Loss, mb.Loss) > 1e-6 || rel(one.Entropy, mb.Entropy) > 1e-6 || rel(one.PolicyLoss, mb.PolicyLoss) > 1e-6 ||
		one.Tokens != mb.Tokens || one.ReplayedTokens != mb.ReplayedTokens || rel(one.GradNorm, mb.GradNorm) > 1e-5 {
		t.Errorf("summaries differ:\n one batch %+v\n micro     %+v", one, mb)
	}
	d := 0.0
	for i := range w1 {
		d = math.Max(d, math.Abs(float64(w1[i]-w2[i])))
	}
	if d > 1e-6 {
		t.Errorf("weights differ by %g", d)
	}
}

func TestMicroBatches(t *testing.T) {
	seq := func(n int) policy.Seq { return policy.Seq{Tokens: make([]int32, n), PromptLen: 1} }
	seqs := []policy.Seq{seq(5), seq(5), seq(12), seq(3), seq(3)}
	for _, tc := range []struct {
		budget int
		want   [][2]int
	}{
		{0, [][2]int{{0, 5}}},
		{10, [][2]int{{0, 2}, {2, 3}, {3, 5}}},
		{6, [][2]int{{0, 1}, {1, 2}, {2, 3}, {3, 5}}},
		{100, [][2]int{{0, 5}}},
	} {
		if got := microBatches(seqs, tc.budget); !slices.Equal(got, tc.want) {
			t.Errorf("budget %d: %v, want %v", tc.budget, got, tc.want)
		}
	}
}
