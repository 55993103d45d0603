package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

// one evaluates the objective on a single one-token response.
func one(t *testing.T, cfg Config, mixed, replayed bool, adv, logp, behaviour float64) (ObjectiveStats, float64) {
	t.Helper()
	items := []Item{{Advantage: float32(adv), Behaviour: []float32{float32(behaviour)}, Replayed: replayed}}
	st, dlp, _, err := Objective(cfg, mixed, items, [][]float32{{float32(logp)}}, [][]float32{{0}})
	if err != nil {
		t.Fatal(err)
	}
	return st, float64(dlp[0][0])
}

func unitConfig() Config {
	c := DefaultConfig()
	c.LMax, c.CEnt = 1, 0
	return c
}

// ALGORITHM.md E11: the slope of f(w) = w/(w+beta) at w = 1 is
// beta/(1+beta)^2 = 0.0826 for beta = 0.1. Through the gradient fed to the
// backward pass: a replayed token at w = 1 with A = 1 and L_max = 1 has
// dL/dlogp = -f'(1) * dw/dlogp = -0.0826.
func TestPolicyShapingSlopeE11(t *testing.T) {
	cfg := unitConfig()
	cfg.Beta = 0.1
	st, g := one(t, cfg, true, true, 1, -1.3, -1.3)
	want := -0.1 / (1.1 * 1.1)
	if math.Abs(want+0.0826) > 5e-5 {
		t.Fatalf("reference slope %v is not 0.0826", -want)
	}
	if math.Abs(g-want) > 1e-6 {
		t.Fatalf("dL/dlogp = %v, want %v = -0.0826 (tol 1e-6)", g, want)
	}
	if math.Abs(st.Loss+1/1.1) > 1e-6 {
		t.Fatalf("loss = %v, want -f(1) = -0.9091 (tol 1e-6)", st.Loss)
	}
	// The fresh token at the same point has slope 1, twelve times steeper.
	_, gf := one(t, cfg, true, false, 1, -1.3, -1.3)
	if math.Abs(gf+1) > 1e-6 {
		t.Fatalf("fresh dL/dlogp = %v, want -1", gf)
	}
}

// ALGORITHM.md E11: replayed tokens are never clipped. At w = e^1 = 2.718,
// far outside [0.8, 1.2], the shaped gradient -A*beta*w/(w+beta)^2 = -0.0342
// remains, for A > 0 and A < 0 alike; in PPO mode the fresh token would get 0.
func TestReplayedNeverClippedE11(t *testing.T) {
	cfg := unitConfig()
	w := math.E
	for _, a := range []float64{1, -1} {
		_, g := one(t, cfg, true, true, a, 0, -1)
		want := -a * 0.1 * w / ((w + 0.1) * (w + 0.1))
		if math.Abs(g-want) > 1e-6 || g == 0 {
			t.Errorf("A=%v: dL/dlogp = %v, want %v (tol 1e-6)", a, g, want)
		}
	}
}

// ALGORITHM.md E10: the PPO clipped surrogate before the delayed start, eps
// = 0.2, and the plain ratio in mixed mode. Gradient is -A*w where the
// unclipped branch is the minimum, else 0.
func TestFreshTokensE10(t *testing.T) {
	cfg := unitConfig()
	cfg.Eps = 0.2
	cases := []struct {
		name      string
		mixed     bool
		adv, w    float64
		wantLoss  float64
		wantGrad  float64
		clippedTo bool
	}{
		{"ppo A>0 inside", false, 1, 1.1, -1.1, -1.1, false},
		{"ppo A>0 above 1+eps clipped", false, 1, 1.5, -1.2, 0, true},
		{"ppo A>0 below 1-eps not clipped", false, 1, 0.5, -0.5, -0.5, false},
		{"ppo A<0 below 1-eps clipped", false, -1, 0.5, 0.8, 0, true},
		{"ppo A<0 above 1+eps not clipped", false, -1, 1.5, 1.5, 1.5, false},
		{"ppo A<0 inside", false, -0.5, 0.9, 0.45, 0.45, false},
		{"mixed A>0 above 1+eps no clip", true, 1, 1.5, -1.5, -1.5, false},
		{"mixed A<0 below 1-eps no clip", true, -1, 0.5, 0.5, 0.5, false},
		{"ppo A=0", false, 0, 2, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, g := one(t, cfg, tc.mixed, false, tc.adv, math.Log(tc.w)-0.7, -0.7)
			if math.Abs(st.Loss-tc.wantLoss) > 1e-5 || math.Abs(g-tc.wantGrad) > 1e-5 {
				t.Fatalf("loss %v grad %v, want %v and %v (tol 1e-5)", st.Loss, g, tc.wantLoss, tc.wantGrad)
			}
			if (st.Clipped == 1) != tc.clippedTo {
				t.Fatalf("clipped = %d, want %t", st.Clipped, tc.clippedTo)
			}
		})
	}
}

// ALGORITHM.md E11 ablations. Without shaping the replayed token gets the
// plain ratio (slope -A*w = -2 at w = 2); without IS correction w is 1 in
// value whatever was stored, so the slope is -beta/(1+beta)^2 = -0.0826.
func TestReplayedAblationsE11(t *testing.T) {
	cfg := unitConfig()
	cfg.NoPolicyShaping = true
	st, g := one(t, cfg, true, true, 1, math.Log(2)-1, -1)
	if math.Abs(g+2) > 1e-5 || math.Abs(st.Loss+2) > 1e-5 {
		t.Errorf("no shaping: loss %v grad %v, want -2 and -2 (tol 1e-5)", st.Loss, g)
	}
	cfg = unitConfig()
	cfg.NoISCorrection = true
	st, g = one(t, cfg, true, true, 1, -0.2, -5)
	if math.Abs(g+0.1/1.21) > 1e-6 || math.Abs(st.MeanRatioRep-1) > 1e-12 {
		t.Errorf("no IS: grad %v ratio %v, want -0.0826 and 1 (tol 1e-6)", g, st.MeanRatioRep)
	}
	cfg = unitConfig()
	_, g = one(t, cfg, true, true, 1, -0.2, -5)
	if math.Abs(g) > 1e-3 {
		t.Errorf("with IS, w = e^4.8 saturates f: grad %v, want about 0 (|g| < 1e-3)", g)
	}
}

// ALGORITHM.md E12: the token losses are summed and divided by L_max, not by
// each response's length: a 1-token and a 9-token response with the same
// advantage get the same per-token gradient -A*w/L_max = -1/48.
func TestNormalisationE12(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CEnt = 0
	items := []Item{
		{Advantage: 1, Behaviour: []float32{-1}},
		{Advantage: 1, Behaviour: []float32{-1, -1, -1, -1, -1, -1, -1, -1, -1}},
	}
	logps := [][]float32{{-1}, {-1, -1, -1, -1, -1, -1, -1, -1, -1}}
	ents := [][]float32{{0}, make([]float32, 9)}
	st, dlp, _, err := Objective(cfg, true, items, logps, ents)
	if err != nil {
		t.Fatal(err)
	}
	want := -1.0 / float64(cfg.LMax)
	for i := range dlp {
		for t2, g := range dlp[i] {
			if math.Abs(float64(g)-want) > 1e-7 {
				t.Fatalf("item %d token %d: grad %v, want %v (tol 1e-7)", i, t2, g, want)
			}
		}
	}
	if math.Abs(st.Loss-(-10.0/48)) > 1e-6 {
		t.Fatalf("loss %v, want -10/48 (tol 1e-6)", st.Loss)
	}
}

// ALGORITHM.md E13: the bonus -c_ent * mean entropy: with c_ent = 0.001 and
// 4 tokens of entropy 1, 2, 3, 6 the term is -0.003 and each token's
// dL/dH = -0.00025.
func TestEntropyBonusE13(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CEnt = 0.001
	items := []Item{{Advantage: 0, Behaviour: []float32{-1, -1, -1}}, {Advantage: 0, Behaviour: []float32{-1}}}
	st, _, dent, err := Objective(cfg, true, items, [][]float32{{-1, -1, -1}, {-1}}, [][]float32{{1, 2, 3}, {6}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(st.EntropyTerm+0.003) > 1e-12 || math.Abs(st.MeanEntropy-3) > 1e-12 || math.Abs(st.Loss+0.003) > 1e-12 {
		t.Fatalf("entropy term %v, mean %v, loss %v; want -0.003, 3, -0.003", st.EntropyTerm, st.MeanEntropy, st.Loss)
	}
	for i := range dent {
		for _, g := range dent[i] {
			if math.Abs(float64(g)+0.00025) > 1e-10 {
				t.Fatalf("dL/dH = %v, want -0.00025 (tol 1e-10)", g)
			}
		}
	}
}

// ALGORITHM.md E10-E13: the analytic derivatives of the whole objective
// (fresh and replayed tokens, entropy bonus) agree with central finite
// differences to 2e-4 relative (inputs are float32, step h = 1e-3), with
// ratios drawn in [0.61, 1.65] so that some PPO tokens are clipped, none
// within 0.01 of a kink.
func TestObjectiveFiniteDifferenceE10E13(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 0))
	for _, mixed := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.CEnt = 0.05
		var items []Item
		var logps, ents [][]float32
		for i := range 6 {
			n := 1 + rng.IntN(5)
			it := Item{Advantage: float32(rng.Float64() - 0.5), Replayed: mixed && i < 2}
			lp, en := make([]float32, n), make([]float32, n)
			for t := range n {
				b := -0.1 - 2*rng.Float64()
				it.Behaviour = append(it.Behaviour, float32(b))
				for {
					d := rng.Float64() - 0.5
					w := math.Exp(d)
					if math.Abs(w-0.8) > 0.01 && math.Abs(w-1.2) > 0.01 {
						lp[t] = float32(b + d)
						break
					}
				}
				en[t] = float32(2 * rng.Float64())
			}
			items = append(items, it)
			logps, ents = append(logps, lp), append(ents, en)
		}
		st, dlp, dent, err := Objective(cfg, mixed, items, logps, ents)
		if err != nil {
			t.Fatal(err)
		}
		if !mixed && (st.Clipped == 0 || st.Clipped == st.Tokens) {
			t.Fatalf("PPO case clipped %d of %d tokens; the check needs both branches", st.Clipped, st.Tokens)
		}
		// Finite differences need a float64 evaluation: perturb by h in the
		// log domain through a copy of the inputs.
		loss := func() float64 {
			st, _, _, _ := Objective(cfg, mixed, items, logps, ents)
			return st.Loss
		}
		const h = 1e-3 // float32 inputs: h must be large against their 6e-8 relative spacing
		check := func(kind string, x *float32, g float32) {
			x0 := *x
			*x = x0 + h
			up := loss()
			*x = x0 - h
			down := loss()
			*x = x0
			fd := (up - down) / (float64(*x+h) - float64(*x-h))
			if diff := math.Abs(fd - float64(g)); diff > 2e-4*math.Max(math.Abs(fd), 1e-3) {
				t.Errorf("mixed=%t %s: analytic %v, finite difference %v", mixed, kind, g, fd)
			}
		}
		for i := range items {
			for t2 := range logps[i] {
				check("dlogp", &logps[i][t2], dlp[i][t2])
				check("dent", &ents[i][t2], dent[i][t2])
			}
		}
	}
}

func TestObjectiveRejects(t *testing.T) {
	cfg := DefaultConfig()
	items := []Item{{Advantage: 1, Behaviour: []float32{-1, -1}}}
	if _, _, _, err := Objective(cfg, true, items, [][]float32{{-1}}, [][]float32{{0}}); err == nil {
		t.Error("short log-prob row accepted")
	}
	items[0].Replayed = true
	if _, _, _, err := Objective(cfg, false, items, [][]float32{{-1, -1}}, [][]float32{{0, 0}}); err == nil {
		t.Error("replayed item before the delayed start accepted (E5)")
	}
}

// The replayed share of the gradient weight (issue 16 diagnostics): one
// fresh and one replayed token, both at w = 1 with |A| = 1 and L_max = 2,
// have |dL/dlogp| = 1/2 and f'(1)/2 = 0.0413, so the replayed share is
// 0.0826 / 1.0826 = 0.0763, with shaping; without shaping 1/2.
func TestCoefMassReplayedShareE11(t *testing.T) {
	cfg := unitConfig()
	cfg.LMax = 2
	items := []Item{
		{Advantage: 1, Behaviour: []float32{-0.5}},
		{Advantage: -1, Behaviour: []float32{-0.7}, Replayed: true},
	}
	lp := [][]float32{{-0.5}, {-0.7}}
	ent := [][]float32{{0}, {0}}
	for _, tc := range []struct {
		noShaping bool
		want      float64
	}{{false, 0.0826446 / 1.0826446}, {true, 0.5}} {
		c := cfg
		c.NoPolicyShaping = tc.noShaping
		st, _, _, err := Objective(c, true, items, lp, ent)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CoefMassReplayed / st.CoefMass; math.Abs(got-tc.want) > 1e-6 {
			t.Errorf("no shaping %v: replayed share %v, want %v", tc.noShaping, got, tc.want)
		}
		if math.Abs(st.CoefMass-(0.5+st.CoefMassReplayed)) > 1e-9 {
			t.Errorf("no shaping %v: mass %v, want 0.5 + %v", tc.noShaping, st.CoefMass, st.CoefMassReplayed)
		}
	}
}
