package learner

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

func rollout(id string, reward float32, n int, version int64) Rollout {
	r := Rollout{ID: id, PromptTokens: []int32{1, 2}, Tokens: make([]int32, n), LogProbs: make([]float32, n), Version: version, Reward: reward}
	for i := range r.Tokens {
		r.Tokens[i] = int32(3 + i)
		r.LogProbs[i] = -0.5
	}
	return r
}

// ALGORITHM.md E8, E9: 0 of 7 fresh rollouts correct plus the correct
// replayed trajectory: k = 1, mean 1/8, so A = 0.875 for the replayed one and
// -0.125 for each fresh one.
func TestGroupReplayedAdvantageE8E9(t *testing.T) {
	rep := rollout("exp", 1, 4, 0)
	fresh := make([]Rollout, 7)
	for i := range fresh {
		fresh[i] = rollout(fmt.Sprintf("f%d", i), 0, 3, 5)
	}
	g, err := NewGroup("q", 8, &rep, fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Replayed() || len(g.Rollouts) != 8 || g.Rollouts[0].ID != "exp" || !g.Rollouts[0].Replayed {
		t.Fatalf("replayed trajectory must come first in a group of 8: %+v", g.Rollouts[0])
	}
	if g.Correct() != 1 {
		t.Errorf("k = %d, want 1 (the replayed one counts, E2)", g.Correct())
	}
	const tol = 1e-7
	if math.Abs(float64(g.Advantages[0])-0.875) > tol {
		t.Errorf("replayed advantage %v, want 0.875 (tol %g)", g.Advantages[0], tol)
	}
	for i := 1; i < 8; i++ {
		if math.Abs(float64(g.Advantages[i])+0.125) > tol {
			t.Errorf("fresh advantage %d = %v, want -0.125 (tol %g)", i, g.Advantages[i], tol)
		}
	}
}

// ALGORITHM.md E9: Dr.GRPO advantages are r - mean with no std division.
func TestAdvantagesE9(t *testing.T) {
	cases := []struct {
		name string
		r    []float32
		want []float32
	}{
		{"all wrong", []float32{0, 0, 0, 0}, []float32{0, 0, 0, 0}},
		{"all right", []float32{1, 1, 1, 1}, []float32{0, 0, 0, 0}},
		{"half", []float32{1, 0, 1, 0}, []float32{0.5, -0.5, 0.5, -0.5}},
		// GRPO would divide by std = sqrt(3)/4 = 0.433 and give 1.732.
		{"one of four", []float32{1, 0, 0, 0}, []float32{0.75, -0.25, -0.25, -0.25}},
		{"three of eight", []float32{1, 1, 1, 0, 0, 0, 0, 0}, []float32{0.625, 0.625, 0.625, -0.375, -0.375, -0.375, -0.375, -0.375}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Advantages(tc.r)
			var sum float64
			for i := range got {
				if math.Abs(float64(got[i]-tc.want[i])) > 1e-7 {
					t.Errorf("A[%d] = %v, want %v (tol 1e-7)", i, got[i], tc.want[i])
				}
				sum += float64(got[i])
			}
			if math.Abs(sum) > 1e-6 {
				t.Errorf("advantages sum to %v, want 0", sum)
			}
		})
	}
}

// ALGORITHM.md E8: a fresh question has K fresh rollouts, a replayed one K-1
// plus the replayed; anything else is rejected.
func TestNewGroupSizesE8(t *testing.T) {
	mk := func(n int) []Rollout {
		out := make([]Rollout, n)
		for i := range out {
			out[i] = rollout(fmt.Sprint(i), float32(i%2), 2, 0)
		}
		return out
	}
	rep := rollout("exp", 1, 2, 0)
	cases := []struct {
		name  string
		rep   *Rollout
		fresh []Rollout
		ok    bool
	}{
		{"fresh K", nil, mk(8), true},
		{"fresh K-1", nil, mk(7), false},
		{"replayed K-1", &rep, mk(7), true},
		{"replayed K", &rep, mk(8), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := NewGroup("q", 8, tc.rep, tc.fresh, nil)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok = %t", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrGroup) {
				t.Fatalf("err = %v, want ErrGroup", err)
			}
			if tc.ok && len(g.Advantages) != 8 {
				t.Fatalf("%d advantages, want 8", len(g.Advantages))
			}
		})
	}
	bad := mk(8)
	bad[3].LogProbs = bad[3].LogProbs[:1]
	if _, err := NewGroup("q", 8, nil, bad, nil); !errors.Is(err, ErrGroup) {
		t.Errorf("log-prob/token length mismatch accepted: %v", err)
	}
	bad = mk(8)
	bad[2].Reward = 0.5
	if _, err := NewGroup("q", 8, nil, bad, nil); !errors.Is(err, ErrGroup) {
		t.Errorf("reward 0.5 accepted: %v", err)
	}
}

// Asynchrony extension: with S = 1 at step 10, fresh rollouts of versions 9
// and 10 train, version 8 is dropped and counted; replayed experience of
// version 2 is kept (E11 corrects it).
func TestFilterStaleS(t *testing.T) {
	rs := []Rollout{rollout("a", 1, 1, 10), rollout("b", 0, 1, 9), rollout("c", 0, 1, 8), rollout("d", 1, 1, 2)}
	rs[3].Replayed = true
	kept, dropped := FilterStale(10, 1, rs)
	if dropped != 1 || len(kept) != 3 || kept[2].ID != "d" {
		t.Fatalf("kept %d, dropped %d, want 3 and 1 (c dropped)", len(kept), dropped)
	}
	if _, dropped := FilterStale(10, 0, rs); dropped != 2 {
		t.Fatalf("S = 0 dropped %d, want 2 (b and c)", dropped)
	}
}

// ALGORITHM.md E5: with start = 0.35, Pass@1 per step 0.10, 0.30, 0.40, 0.20
// gives modes off, off, off, on: mixed begins on the step AFTER the first
// step above the threshold, and stays on although Pass@1 falls back.
func TestDelayedStartE5(t *testing.T) {
	cases := []struct {
		name  string
		start float64
		onPol bool
		pass  []float64
		want  []bool // mode of each step
	}{
		{"paper threshold", 0.35, false, []float64{0.10, 0.30, 0.40, 0.20, 0.0}, []bool{false, false, false, true, true}},
		{"equal is not above", 0.35, false, []float64{0.35, 0.35, 0.36, 0}, []bool{false, false, false, true}},
		{"start 0 means from step 0", 0, false, []float64{0, 0, 0}, []bool{true, true, true}},
		{"negative start", -1, false, []float64{0}, []bool{true}},
		{"on-policy never mixes", 0.35, true, []float64{0.9, 0.9, 0.9}, []bool{false, false, false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Start, cfg.OnPolicyOnly = tc.start, tc.onPol
			mixed := InitialMixed(cfg)
			for step, p := range tc.pass {
				if mixed != tc.want[step] {
					t.Fatalf("step %d: mixed = %t, want %t", step, mixed, tc.want[step])
				}
				if got := cfg.PoolQuestions(mixed) > 0; got != (mixed && cfg.Rho > 0 && !tc.onPol) {
					t.Fatalf("step %d: pool asked = %t while mixed = %t", step, got, mixed)
				}
				mixed = NextMixed(cfg, mixed, p)
			}
		})
	}
}

// ALGORITHM.md E5: Pass@1 counts fresh rollouts only (3 of 7 here), not the
// replayed trajectory.
func TestPass1E5(t *testing.T) {
	rep := rollout("exp", 1, 2, 0)
	fresh := []Rollout{rollout("a", 1, 2, 0), rollout("b", 1, 2, 0), rollout("c", 0, 2, 0)}
	g1, _ := NewGroup("q1", 4, &rep, fresh, nil)
	g2, _ := NewGroup("q2", 4, nil, []Rollout{rollout("d", 1, 2, 0), rollout("e", 0, 2, 0), rollout("f", 0, 2, 0), rollout("g", 0, 2, 0)}, nil)
	if got := Pass1([]Group{g1, g2}); math.Abs(got-3.0/7) > 1e-12 {
		t.Fatalf("Pass@1 = %v, want 3/7", got)
	}
	if Pass1(nil) != 0 {
		t.Fatal("empty step Pass@1 must be 0")
	}
}
