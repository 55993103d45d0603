package learner

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/verifier"
)

// probeGroups samples one step of on-policy groups on the built-in task the
// way the actors do (task.EncodePrompt, T = 1, task.TrainMaxNew, the arith
// verifier) and returns them with the step's Pass@1.
func probeGroups(t testing.TB, m *policy.Model, tok *policy.Tokenizer, ds task.Dataset, b, k int, step int64, rng *rand.Rand) []Group {
	t.Helper()
	chk, err := verifier.Lookup(task.KindArith)
	if err != nil {
		t.Fatal(err)
	}
	var groups []Group
	for q := range b {
		p := ds.Problems[rng.IntN(len(ds.Problems))]
		prompt, err := task.EncodePrompt(tok, p)
		if err != nil {
			t.Fatal(err)
		}
		prompts := make([][]int32, k)
		for i := range prompts {
			prompts[i] = prompt
		}
		out, err := m.Sample(prompts, policy.SampleOptions{Temperature: 1, MaxNew: task.TrainMaxNew, EOS: tok.EOS()}, rng)
		if err != nil {
			t.Fatal(err)
		}
		rs := make([]Rollout, len(out))
		for i, o := range out {
			var r float32
			if chk.Check(p.Answer, task.ResponseText(tok, o.Tokens)).Correct {
				r = 1
			}
			rs[i] = Rollout{ID: fmt.Sprint(step, "/", q, "/", i), PromptTokens: prompt, Tokens: o.Tokens, LogProbs: o.LogProbs, Reward: r, Version: step}
		}
		g, err := NewGroup(p.ID, k, nil, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	return groups
}

func probeSeqs(groups []Group) []policy.Seq {
	var out []policy.Seq
	for _, g := range groups {
		for _, r := range g.Rollouts {
			out = append(out, concat(r.PromptTokens, r.Tokens))
		}
	}
	return out
}

// seqLogProbs sums each response's current log-prob.
func seqLogProbs(t testing.TB, m *policy.Model, groups []Group) []float64 {
	t.Helper()
	lps, _, err := m.Score(probeSeqs(groups))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(lps))
	for i, row := range lps {
		for _, x := range row {
			out[i] += float64(x)
		}
	}
	return out
}

// A hand-scripted reward makes a random-init model usable: every group gets
// a non-zero advantage whatever it sampled.
func scriptRewards(groups []Group) []Group {
	for gi := range groups {
		g := &groups[gi]
		for i := range g.Rollouts {
			g.Rollouts[i].Reward = float32((i + gi) % 2)
		}
		g.Advantages = Advantages(rewards(g.Rollouts))
	}
	return groups
}

// TestFreshRatioIsOneE10: at a step's first mini-batch the learner's
// log-probs of fresh tokens equal the ones the sampler recorded, so
// w = exp(logp_theta - logp_behaviour) is 1 (ALGORITHM.md E10). A mismatch
// (prompt, BOS/EOS, temperature or weights) would bias every update.
// Tolerance: |log w| <= 1e-5.
func TestFreshRatioIsOneE10(t *testing.T) {
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := task.Builtin("heldout")
	if err != nil {
		t.Fatal(err)
	}
	groups := probeGroups(t, m, task.BuiltinTokenizer(), ds, 4, 4, 0, rand.New(rand.NewPCG(5, 6)))
	pass, err := m.Forward(probeSeqs(groups))
	if err != nil {
		t.Fatal(err)
	}
	i, n := 0, 0
	for _, g := range groups {
		for _, r := range g.Rollouts {
			for j, b := range r.LogProbs {
				if d := math.Abs(float64(pass.LogProbs[i][j] - b)); d > 1e-5 {
					t.Fatalf("rollout %s token %d: |log w| = %g, want <= 1e-5", r.ID, j, d)
				}
				n++
			}
			i++
		}
	}
	if n == 0 {
		t.Fatal("no response tokens sampled")
	}
}

// TestSmallStepFollowsAdvantageE9E10: one update at a small learning rate
// raises the summed log-prob of every positive-advantage response on average
// and lowers the negative ones (the sign of the update). Each group's
// rewards are scripted so that half its responses are positive.
func TestSmallStepFollowsAdvantageE9E10(t *testing.T) {
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(7, 8)))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := task.Builtin("heldout")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.B, cfg.K, cfg.MiniBatches, cfg.LR, cfg.OnPolicyOnly, cfg.Rho = 4, 4, 1, 1e-5, true, 0
	l, err := New(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups := scriptRewards(probeGroups(t, m, task.BuiltinTokenizer(), ds, cfg.B, cfg.K, 0, rand.New(rand.NewPCG(9, 10))))
	before := seqLogProbs(t, m, groups)
	if _, err := l.Step(StepInput{Groups: groups}); err != nil {
		t.Fatal(err)
	}
	after := seqLogProbs(t, m, groups)
	var up, down float64
	i := 0
	for _, g := range groups {
		for j := range g.Rollouts {
			if g.Advantages[j] > 0 {
				up += after[i] - before[i]
			} else {
				down += after[i] - before[i]
			}
			i++
		}
	}
	if !(up > 0 && down < 0) {
		t.Fatalf("summed log-prob change: positive advantage %+.4g (want > 0), negative %+.4g (want < 0)", up, down)
	}
}

// TestRLProbe is the measurement behind docs/benchmarks/rl-tuning.md, not a
// check: on-policy Dr.GRPO in one process (no NATS) from the cached base
// model, printing batch reward, entropy and held-out pass@1 (400 x 4, T = 1).
// It runs only when EXGRPO_RL_PROBE=1; settings come from the environment:
// PROBE_LR (default the learner's), PROBE_STEPS (150), PROBE_MB (1),
// PROBE_BETA2 (0.99), PROBE_PRETRAIN (warm-up steps, default task's),
// PROBE_EVAL (every 25 steps).
func TestRLProbe(t *testing.T) {
	if os.Getenv("EXGRPO_RL_PROBE") != "1" {
		t.Skip("measurement; set EXGRPO_RL_PROBE=1")
	}
	env := func(name string, def float64) float64 {
		if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
			return v
		}
		return def
	}
	pc := task.DefaultPretrainConfig()
	pc.Steps = int(env("PROBE_PRETRAIN", float64(pc.Steps)))
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := task.BaseModel(context.Background(), cache+"/exgrpo", pc, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, tok := ck.Model, ck.Tokenizer
	train, err := task.Builtin("train")
	if err != nil {
		t.Fatal(err)
	}
	held, err := task.Builtin("heldout")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.LR = env("PROBE_LR", cfg.LR)
	cfg.MiniBatches = int(env("PROBE_MB", 1))
	cfg.Beta2 = env("PROBE_BETA2", 0.99)
	cfg.OnPolicyOnly, cfg.Rho = true, 0
	l, err := New(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	eval := func(tag string) {
		r, err := task.Evaluate(m, tok, held, 4, 1, rand.New(rand.NewPCG(7, 7)))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: held-out pass@1 %.4f, sound %d of %d correct", tag, r.Overall.Pass1, r.Sound, r.Correct)
	}
	eval("base")
	rng := rand.New(rand.NewPCG(1, 99))
	steps, every := int(env("PROBE_STEPS", 150)), int(env("PROBE_EVAL", 25))
	for s := range steps {
		sum, err := l.Step(StepInput{Step: int64(s), PolicyVersion: int64(s), Groups: probeGroups(t, m, tok, train, cfg.B, cfg.K, int64(s), rng)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d reward %.3f entropy %.3f grad norm %.1f", s, sum.Pass1, sum.Entropy, sum.GradNorm)
		if (s+1)%every == 0 {
			eval(fmt.Sprint("step ", s+1))
		}
	}
}
