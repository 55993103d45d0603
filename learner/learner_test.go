package learner

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
)

// Token ids of the toy problems below: 0 BOS, 1 EOS, 2.. symbols.
const (
	tBOS   = 0
	tEOS   = 1
	tVocab = 8
)

func tinyModel(t testing.TB, seed int64) *policy.Model {
	t.Helper()
	m, err := policy.New(policy.Config{Vocab: tVocab, Context: 16, Layers: 1, Width: 16, Heads: 2, Tied: true}, rand.New(rand.NewPCG(uint64(seed), 0)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// score returns the current policy's per-token log-probs of a rollout.
func score(t testing.TB, m *policy.Model, r Rollout) (logps, ents []float32) {
	t.Helper()
	lp, en, err := m.Score([]policy.Seq{concat(r.PromptTokens, r.Tokens)})
	if err != nil {
		t.Fatal(err)
	}
	return lp[0], en[0]
}

// ALGORITHM.md E7 through the policy: the chosen candidate has the lowest
// mean entropy as computed by an independent path (Forward), ties go to the
// earliest stored, the cap keeps the most recent, and the random rule does
// not score.
func TestSelectTrajectoryE7(t *testing.T) {
	m := tinyModel(t, 1)
	prompt := []int32{tBOS, 3}
	resp := [][]int32{{4, 5, tEOS}, {2, tEOS}, {6, 6, 6, 7}, {2, tEOS}, {5, tEOS}}
	var cands []Rollout
	var seqs []policy.Seq
	for i, r := range resp {
		cands = append(cands, Rollout{ID: fmt.Sprint("c", i), PromptTokens: prompt, Tokens: r, LogProbs: make([]float32, len(r)), Reward: 1, Replayed: true})
		seqs = append(seqs, concat(prompt, r))
	}
	pass, err := m.Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, len(resp))
	for i := range resp {
		want[i] = MeanEntropy(pass.Entropies[i])
	}
	lo, hi := 0, 0
	for i := range want {
		// c1 and c3 are the same response: equal entropy, c1 must win a tie.
		if want[i] < want[lo]-1e-6 {
			lo = i
		}
		if want[i] > want[hi]+1e-6 {
			hi = i
		}
	}
	cfg := DefaultConfig()
	for _, tc := range []struct {
		sel  Selection
		want int
	}{{SelectLowestEntropy, lo}, {SelectHighestEntropy, hi}} {
		cfg.Selection = tc.sel
		got, ranking, err := SelectTrajectory(context.Background(), builtinOf(t, m), cfg, cands, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: chose %d, want %d (entropies %v)", tc.sel, got, tc.want, want)
		}
		if len(ranking) != len(cands) {
			t.Fatalf("ranking has %d entries", len(ranking))
		}
		for _, r := range ranking {
			if math.Abs(r.Entropy-want[r.Index]) > 1e-5 {
				t.Errorf("candidate %d: Score entropy %v, Forward %v (tol 1e-5)", r.Index, r.Entropy, want[r.Index])
			}
		}
		// Tie: c3 duplicates c1, so c1 ranks immediately before c3.
		p1 := slices.IndexFunc(ranking, func(r Ranked) bool { return r.Index == 1 })
		p3 := slices.IndexFunc(ranking, func(r Ranked) bool { return r.Index == 3 })
		if p3 != p1+1 {
			t.Errorf("%s: tie between c1 and c3 not broken to the earliest: positions %d, %d", tc.sel, p1, p3)
		}
	}
	// Cap of 2: only c3 and c4 are considered.
	cfg.Selection, cfg.Candidates = SelectLowestEntropy, 2
	got, ranking, _ := SelectTrajectory(context.Background(), builtinOf(t, m), cfg, cands, nil)
	if len(ranking) != 2 || got < 3 {
		t.Errorf("cap 2: chose %d among %d ranked, want one of the two most recent", got, len(ranking))
	}
	cfg.Selection, cfg.Candidates = SelectRandom, 32
	got, ranking, _ = SelectTrajectory(context.Background(), builtinOf(t, m), cfg, cands, rand.New(rand.NewPCG(2, 0)))
	if got < 0 || got >= len(cands) || !math.IsNaN(ranking[0].Entropy) {
		t.Errorf("random: chose %d, first entropy %v (want NaN: not scored)", got, ranking[0].Entropy)
	}
}

// gradOf returns the parameter gradient of sum_t dl[t]*logp_t for one
// sequence, through the policy's backward pass.
func gradOf(t *testing.T, m *policy.Model, s policy.Seq, dl []float32) []float32 {
	t.Helper()
	pass, err := m.Forward([]policy.Seq{s})
	if err != nil {
		t.Fatal(err)
	}
	m.ZeroGrads()
	if err := pass.Backward([][]float32{dl}, nil); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(m.Grads)
}

// ALGORITHM.md E11 through the real gradient path: for a one-token replayed
// response at w = 1 with A = 1, L_max = 1, c_ent = 0, the parameter gradient
// of the ExGRPO loss is -f'(1) = -beta/(1+beta)^2 = -0.0826 times the
// gradient of the token's log-prob; for the same token fresh it is -1 times.
func TestShapingSlopeThroughPolicyE11(t *testing.T) {
	m := tinyModel(t, 3)
	r := Rollout{ID: "exp", PromptTokens: []int32{tBOS, 4}, Tokens: []int32{5}, Reward: 1}
	r.LogProbs, _ = score(t, m, r) // w = 1
	cfg := DefaultConfig()
	cfg.LMax, cfg.CEnt, cfg.Beta = 1, 0, 0.1
	seq := concat(r.PromptTokens, r.Tokens)
	base := gradOf(t, m, seq, []float32{1})
	for _, tc := range []struct {
		name     string
		replayed bool
		slope    float64
	}{{"replayed", true, -0.1 / 1.21}, {"fresh", false, -1}} {
		pass, err := m.Forward([]policy.Seq{seq})
		if err != nil {
			t.Fatal(err)
		}
		_, dlp, dent, err := Objective(cfg, true, []Item{{Advantage: 1, Behaviour: r.LogProbs, Replayed: tc.replayed}}, pass.LogProbs, pass.Entropies)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrads()
		if err := pass.Backward(dlp, dent); err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for i, g := range m.Grads {
			num += float64(g) * float64(base[i])
			den += float64(base[i]) * float64(base[i])
		}
		ratio := num / den // least-squares slope of the loss gradient on the log-prob gradient
		if math.Abs(ratio-tc.slope) > 1e-4 {
			t.Errorf("%s: gradient = %.5f x grad logp, want %.5f (tol 1e-4)", tc.name, ratio, tc.slope)
		}
		for i, g := range m.Grads {
			if math.Abs(float64(g)-tc.slope*float64(base[i])) > 1e-5*(1+math.Abs(float64(base[i]))) {
				t.Fatalf("%s: parameter %d gradient %v, want %v", tc.name, i, g, tc.slope*float64(base[i]))
			}
		}
	}
	if math.Abs(0.1/1.21-0.0826) > 5e-5 {
		t.Fatal("beta/(1+beta)^2 is not 0.0826")
	}
}

// mixedBatch builds a mixed-mode mini-batch on m: one replayed group and one
// fresh group of K = 4, with behaviour log-probs moved off the current
// policy so that w != 1.
func mixedBatch(t testing.TB, m *policy.Model, rng *rand.Rand) []Group {
	var groups []Group
	for q := range 2 {
		prompt := []int32{tBOS, int32(2 + q), int32(3 + q)}
		var rs []Rollout
		for i := range 4 {
			n := 1 + rng.IntN(4)
			r := Rollout{ID: fmt.Sprint(q, "/", i), PromptTokens: prompt, Tokens: make([]int32, n), Reward: float32(rng.IntN(2))}
			for j := range r.Tokens {
				r.Tokens[j] = int32(2 + rng.IntN(tVocab-2))
			}
			r.Tokens[n-1] = tEOS
			lp, _ := score(t, m, r)
			for j := range lp {
				lp[j] += float32(0.4 * (rng.Float64() - 0.5))
				lp[j] = min(lp[j], 0)
			}
			r.LogProbs = lp
			rs = append(rs, r)
		}
		var rep *Rollout
		if q == 0 {
			rs[0].Reward = 1
			rep = &rs[0]
			rs = rs[1:]
		}
		g, err := NewGroup(fmt.Sprint("q", q), 4, rep, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	return groups
}

// ALGORITHM.md E10-E13 through the policy: the gradient of the full ExGRPO
// loss (fresh tokens, replayed shaped tokens, entropy bonus) with respect to
// parameters agrees with central finite differences of the loss computed
// from Forward. Two weightings: c_ent = 0.1, where the policy terms dominate,
// and c_ent = 2, where the entropy bonus does (so that an error in either
// part shows). The model is float32, so the step is h = 1e-2 on the 8
// parameters with the largest gradients and the tolerance is 3% relative
// (plus 2e-5 absolute).
func TestLossGradientFiniteDifferenceE10E13(t *testing.T) {
	for _, cent := range []float64{0.1, 2} {
		t.Run(fmt.Sprint("cent=", cent), func(t *testing.T) {
			m := tinyModel(t, 5)
			rng := rand.New(rand.NewPCG(9, 0))
			groups := mixedBatch(t, m, rng)
			cfg := DefaultConfig()
			cfg.LMax, cfg.CEnt, cfg.K = 4, cent, 4
			var seqs []policy.Seq
			var items []Item
			for _, g := range groups {
				for i, r := range g.Rollouts {
					seqs = append(seqs, concat(r.PromptTokens, r.Tokens))
					items = append(items, Item{Advantage: g.Advantages[i], Behaviour: r.LogProbs, Replayed: r.Replayed})
				}
			}
			loss := func() float64 {
				pass, err := m.Forward(seqs)
				if err != nil {
					t.Fatal(err)
				}
				st, _, _, err := Objective(cfg, true, items, pass.LogProbs, pass.Entropies)
				if err != nil {
					t.Fatal(err)
				}
				return st.Loss
			}
			pass, _ := m.Forward(seqs)
			st, dlp, dent, err := Objective(cfg, true, items, pass.LogProbs, pass.Entropies)
			if err != nil {
				t.Fatal(err)
			}
			if st.ReplayedTokens == 0 || st.ReplayedTokens == st.Tokens || math.Abs(st.PolicyLoss) < 1e-3 {
				t.Fatalf("batch must mix fresh and replayed tokens with a visible policy term: %+v", st)
			}
			m.ZeroGrads()
			if err := pass.Backward(dlp, dent); err != nil {
				t.Fatal(err)
			}
			grads := slices.Clone(m.Grads)
			idx := make([]int, len(grads))
			for i := range idx {
				idx[i] = i
			}
			slices.SortFunc(idx, func(a, b int) int { return -cmpAbs(grads[a], grads[b]) })
			const h = 1e-2
			for _, i := range idx[:8] {
				p0 := m.Params[i]
				m.Params[i] = p0 + h
				up := loss()
				m.Params[i] = p0 - h
				down := loss()
				m.Params[i] = p0
				fd := (up - down) / (2 * h)
				if diff := math.Abs(fd - float64(grads[i])); diff > 0.03*math.Abs(fd)+2e-5 {
					t.Errorf("parameter %d: analytic %.6g, finite difference %.6g", i, grads[i], fd)
				}
			}
		})
	}
}

func cmpAbs(a, b float32) int {
	x, y := math.Abs(float64(a)), math.Abs(float64(b))
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// ALGORITHM.md E14: a step of 4 groups with 2 mini-batches makes 2 AdamW
// updates that move the parameters, clipped (the norm exceeds ClipNorm = 1)
// rather than skipped; with a skip bound below the gradient norm both
// updates are skipped and the parameters stay bit-identical.
func TestStepMiniBatchesE14(t *testing.T) {
	for _, tc := range []struct {
		name          string
		clip, skip    float64
		wantSkipped   int
		wantUnchanged bool
	}{{"update", 1, 500, 0, false}, {"skip", 1e-9, 1e-9, 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel(t, 7)
			rng := rand.New(rand.NewPCG(4, 0))
			groups := append(mixedBatch(t, m, rng), mixedBatch(t, m, rng)...)
			cfg := DefaultConfig()
			cfg.K, cfg.B, cfg.MiniBatches, cfg.ClipNorm, cfg.SkipNorm, cfg.Start, cfg.LMax = 4, 4, 2, tc.clip, tc.skip, 0, 1
			l, err := New(cfg, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := slices.Clone(m.Params)
			sum, err := l.Step(StepInput{Step: 3, PolicyVersion: 3, Mixed: true, Groups: groups})
			if err != nil {
				t.Fatal(err)
			}
			if len(sum.Updates) != 2 || sum.Skipped != tc.wantSkipped {
				t.Fatalf("%d updates, %d skipped; want 2 and %d", len(sum.Updates), sum.Skipped, tc.wantSkipped)
			}
			if slices.Equal(before, m.Params) != tc.wantUnchanged {
				t.Fatalf("parameters unchanged = %t, want %t", !tc.wantUnchanged, tc.wantUnchanged)
			}
			if !(sum.GradNorm > 0) || sum.Tokens == 0 || sum.ReplayedTokens == 0 {
				t.Fatalf("summary figures missing: %+v", sum)
			}
			if tc.wantSkipped == 0 && !(sum.GradNorm > cfg.ClipNorm) {
				t.Fatalf("gradient norm %v does not exceed the clip %v: the clipped-update path is not exercised", sum.GradNorm, cfg.ClipNorm)
			}
			if len(sum.Groups) != 4 || !sum.Groups[0].Replayed || sum.Groups[0].ReplayedID != groups[0].Rollouts[0].ID || sum.Groups[0].Size != 4 {
				t.Fatalf("group summary: %+v", sum.Groups[0])
			}
		})
	}
}

// ALGORITHM.md E5 through Step: a replayed group before the delayed start is
// refused; the summary carries Pass@1 and the next step's mode.
func TestStepModeE5(t *testing.T) {
	m := tinyModel(t, 8)
	groups := mixedBatch(t, m, rand.New(rand.NewPCG(1, 0)))
	cfg := DefaultConfig()
	cfg.K, cfg.B, cfg.Start = 4, 4, 0.35
	l, err := New(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Step(StepInput{Mixed: false, Groups: groups}); err == nil {
		t.Fatal("replayed group accepted before the delayed start")
	}
	fresh := groups[1:]
	sum, err := l.Step(StepInput{Mixed: false, Groups: fresh})
	if err != nil {
		t.Fatal(err)
	}
	want := float64(fresh[0].Correct()) / 4
	if sum.Pass1 != want || sum.NextMixed != (want > 0.35) || sum.Mixed {
		t.Fatalf("Pass@1 %v next mixed %t, want %v and %t", sum.Pass1, sum.NextMixed, want, want > 0.35)
	}
}
