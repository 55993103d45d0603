package learner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Truncated importance sampling on fresh tokens (E10 with TruncCap): the
// token's loss and gradient use min(w, C); tokens above the cap are counted;
// with the cap off nothing changes. Tolerance 1e-6.
func TestObjectiveTruncCap(t *testing.T) {
	const A = 0.5
	for _, tc := range []struct {
		name       string
		cap        float64
		w          float64
		mixed      bool
		wantW      float64 // the weight the loss and gradient use
		wantCapped int
	}{
		{"mixed above the cap", 2, 3, true, 2, 1},
		{"mixed below the cap", 2, 1.5, true, 1.5, 0},
		{"mixed cap off", 0, 3, true, 3, 0},
		{"PPO branch, negative advantage above the cap", 2, 3, false, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.TruncCap, cfg.CEnt, cfg.LMax = tc.cap, 0, 1
			a := float32(A)
			if !tc.mixed {
				a = -A // A < 0 with w > 1+eps: the unclipped branch, unbounded without the cap
			}
			lb := float32(-1)
			lp := float32(float64(lb) + math.Log(tc.w))
			st, dlp, _, err := Objective(cfg, tc.mixed, []Item{{Advantage: a, Behaviour: []float32{lb}}}, [][]float32{{lp}}, [][]float32{{0.3}})
			if err != nil {
				t.Fatal(err)
			}
			want := -float64(a) * tc.wantW
			if math.Abs(st.PolicyLoss-want) > 1e-6 || math.Abs(float64(dlp[0][0])-want) > 1e-6 || st.Capped != tc.wantCapped {
				t.Errorf("loss %g, dL/dlogp %g, capped %d; want %g, %g, %d", st.PolicyLoss, dlp[0][0], st.Capped, want, want, tc.wantCapped)
			}
			if math.Abs(st.MeanAbsLogW-math.Log(tc.w)) > 1e-6 {
				t.Errorf("mean |log w| %g, want %g", st.MeanAbsLogW, math.Log(tc.w))
			}
		})
	}
}

// The step reports the engine/trainer mismatch at its first mini-batch:
// fresh rollouts whose recorded log-probs are the trainer's minus 0.1 give
// mean |log w| = 0.1 (1e-5), and with TruncCap = 1.05 (w = e^0.1 = 1.105
// above it) every fresh token is capped.
func TestStepReportsMismatch(t *testing.T) {
	m := tinyModel(t, 3)
	rng := rand.New(rand.NewPCG(9, 0))
	var groups []Group
	for q := range 2 {
		var rs []Rollout
		for i := range 4 {
			r := Rollout{ID: fmt.Sprint(q, "/", i), PromptTokens: []int32{tBOS, int32(2 + q)}, Tokens: []int32{int32(3 + rng.IntN(tVocab-3)), tEOS}, Reward: float32(i % 2)}
			lp, _ := score(t, m, r)
			for j := range lp {
				lp[j] -= 0.1
			}
			r.LogProbs = lp
			rs = append(rs, r)
		}
		g, err := NewGroup(fmt.Sprint("q", q), 4, nil, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	cfg := DefaultConfig()
	cfg.K, cfg.B, cfg.MiniBatches, cfg.Start, cfg.TruncCap = 4, 2, 2, 0, 1.05
	l, err := New(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := l.Step(StepInput{Mixed: true, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(sum.MismatchLogW-0.1) > 1e-5 || sum.CappedFraction != 1 {
		t.Errorf("mismatch %g, capped fraction %g; want 0.1 and 1", sum.MismatchLogW, sum.CappedFraction)
	}
}

// TrainerBehaviour: a fresh trajectory trained at step 1 with engine
// log-probs far from the trainer's is replayed at step 2 with the trainer's
// own log-probs of step 1 (scored before step 1's updates), not the engine's.
func TestTrainerBehaviourForReplay(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("TrainerBehaviour=", on), func(t *testing.T) {
			m := tinyModel(t, 5)
			rng := rand.New(rand.NewPCG(4, 0))
			groups := mixedBatch(t, m, rng)
			engine := groups[1].Rollouts[2] // a fresh one
			for j := range engine.LogProbs {
				engine.LogProbs[j] -= 1 // the engine disagrees by a nat per token
			}
			before, _ := score(t, m, engine)
			cfg := DefaultConfig()
			cfg.K, cfg.B, cfg.MiniBatches, cfg.Start, cfg.TrainerBehaviour = 4, 2, 1, 0, on
			l, err := New(cfg, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Step(StepInput{Step: 1, Mixed: true, Groups: groups}); err != nil {
				t.Fatal(err)
			}
			if own, ok := l.behaviour[engine.ID]; ok != on || (on && maxAbsDiff(own, before) > 1e-6) {
				t.Fatalf("remembered %v (%v), want %v and the pre-step scores %v", own, ok, on, before)
			}
			// Step 2 replays it (with the stored engine log-probs, as the
			// pool would hand them back).
			rep := engine
			rep.Replayed, rep.Reward = true, 1
			var fresh []Rollout
			for i := range 3 {
				r := Rollout{ID: fmt.Sprint("f", i), PromptTokens: rep.PromptTokens, Tokens: []int32{5, tEOS}, Reward: float32(i % 2)}
				r.LogProbs, _ = score(t, m, r)
				fresh = append(fresh, r)
			}
			g, err := NewGroup("q1", 4, &rep, fresh, nil)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := l.Step(StepInput{Step: 2, Mixed: true, Groups: []Group{g}})
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if on {
				want = 1
			}
			if sum.TrainerBehaviour != want {
				t.Errorf("%d replayed trajectories used the trainer's log-probs, want %d", sum.TrainerBehaviour, want)
			}
		})
	}
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}
