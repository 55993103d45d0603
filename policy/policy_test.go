package policy

import (
	"math"
	"math/rand/v2"
	"testing"
)

func tinyConfig(tied bool) Config {
	return Config{Vocab: 11, Context: 16, Layers: 2, Width: 16, Heads: 2, Tied: tied}
}

func newTestModel(t testing.TB, cfg Config, seed uint64) *Model {
	t.Helper()
	m, err := New(cfg, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// Larger weights than GPT-2's init so that attention and the MLP are far
	// from linear and every path carries gradient.
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range m.Params {
		m.Params[i] += float32(rng.NormFloat64() * 0.3)
	}
	return m
}

func randomSeqs(rng *rand.Rand, cfg Config, lens, prompts []int) []Seq {
	seqs := make([]Seq, len(lens))
	for i := range lens {
		toks := make([]int32, lens[i])
		for j := range toks {
			toks[j] = int32(rng.IntN(cfg.Vocab))
		}
		seqs[i] = Seq{Tokens: toks, PromptLen: prompts[i]}
	}
	return seqs
}

// weightedLoss is L = Σ a·logp + Σ b·entropy in float64.
func weightedLoss(t testing.TB, m *Model, seqs []Seq, a, b [][]float32, temp float32) float64 {
	t.Helper()
	lp, en, err := m.ScoreAt(seqs, temp)
	if err != nil {
		t.Fatal(err)
	}
	var L float64
	for i := range lp {
		for j := range lp[i] {
			L += float64(a[i][j])*float64(lp[i][j]) + float64(b[i][j])*float64(en[i][j])
		}
	}
	return L
}

// TestGradientCheck compares Backward with central finite differences of
// L = Σ a·logp + Σ b·H (random a, b) on every parameter tensor. The forward
// pass is float32, so the step is 1e-2 and an element passes when
// |num − ana| ≤ 0.02·max(|num|, |ana|) + 2e-3; for each tensor the
// element with the largest analytic gradient plus 6 random elements are checked.
func TestGradientCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tied    bool
		lens    []int
		prompts []int
		entOnly bool
		width   int     // 0 = tinyConfig's 16 (head size 8, the vector paths)
		temp    float32 // 0 = 1
	}{
		{"tied", true, []int{9, 5, 14}, []int{3, 1, 6}, false, 0, 0},
		{"untied", false, []int{7, 12}, []int{2, 4}, false, 0, 0},
		{"entropy only", true, []int{8, 6}, []int{3, 2}, true, 0, 0},
		{"logp only", false, []int{10, 3}, []int{5, 1}, false, 0, 0},
		{"head size 6", true, []int{11, 4}, []int{2, 3}, false, 12, 0},
		{"head size 24", false, []int{6, 13}, []int{1, 5}, false, 48, 0},
		{"T=0.5", true, []int{9, 5, 14}, []int{3, 1, 6}, false, 0, 0.5},
		{"T=1.7 untied", false, []int{7, 12}, []int{2, 4}, false, 0, 1.7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(tc.tied)
			if tc.width != 0 {
				cfg.Width = tc.width
			}
			m := newTestModel(t, cfg, 7)
			rng := rand.New(rand.NewPCG(3, 4))
			seqs := randomSeqs(rng, cfg, tc.lens, tc.prompts)
			a, b := make([][]float32, len(seqs)), make([][]float32, len(seqs))
			for i, s := range seqs {
				k := len(s.Tokens) - s.PromptLen
				a[i], b[i] = make([]float32, k), make([]float32, k)
				for j := 0; j < k; j++ {
					if !tc.entOnly {
						a[i][j] = float32(rng.NormFloat64())
					}
					if tc.name != "logp only" {
						b[i][j] = float32(rng.NormFloat64())
					}
				}
			}
			temp := tc.temp
			if temp == 0 {
				temp = 1
			}
			ps, err := m.ForwardAt(seqs, temp)
			if err != nil {
				t.Fatal(err)
			}
			var bArg [][]float32
			if tc.name != "logp only" {
				bArg = b
			}
			if err := ps.Backward(a, bArg); err != nil {
				t.Fatal(err)
			}
			const eps = 1e-2
			for _, s := range m.specs {
				idx := []int{}
				best, bestAbs := 0, -1.0
				for i := 0; i < s.size(); i++ {
					if g := math.Abs(float64(m.Grads[s.Offset+i])); g > bestAbs {
						best, bestAbs = i, g
					}
				}
				idx = append(idx, best)
				for range 6 {
					idx = append(idx, rng.IntN(s.size()))
				}
				if bestAbs == 0 && !(tc.tied == false && s.Name == "wte") {
					// Every tensor must receive gradient (wpe rows past the
					// longest sequence aside, which random picks may hit).
					t.Errorf("%s: all gradients are zero", s.Name)
				}
				for _, i := range idx {
					p := &m.Params[s.Offset+i]
					orig := *p
					*p = orig + eps
					lp := weightedLoss(t, m, seqs, a, b, temp)
					*p = orig - eps
					lm := weightedLoss(t, m, seqs, a, b, temp)
					*p = orig
					num := (lp - lm) / (2 * eps)
					ana := float64(m.Grads[s.Offset+i])
					if math.Abs(num-ana) > 0.02*math.Max(math.Abs(num), math.Abs(ana))+2e-3 {
						t.Errorf("%s[%d]: finite difference %.6g, backward %.6g", s.Name, i, num, ana)
					}
				}
			}
		})
	}
}

// TestPassLifecycle: two passes alive at once keep separate activations
// (gradients equal the sum of separate runs, tolerance 1e-6 relative), a
// second Backward fails, and bad shapes are rejected.
func TestPassLifecycle(t *testing.T) {
	cfg := tinyConfig(true)
	m := newTestModel(t, cfg, 5)
	rng := rand.New(rand.NewPCG(8, 8))
	s1 := randomSeqs(rng, cfg, []int{6, 9}, []int{2, 3})
	s2 := randomSeqs(rng, cfg, []int{12}, []int{4})
	grad := func(seqs []Seq) [][]float32 {
		d := make([][]float32, len(seqs))
		for i, s := range seqs {
			d[i] = make([]float32, len(s.Tokens)-s.PromptLen)
			for j := range d[i] {
				d[i][j] = 1
			}
		}
		return d
	}
	run := func(seqs []Seq) []float32 {
		m.ZeroGrads()
		ps, err := m.Forward(seqs)
		if err != nil {
			t.Fatal(err)
		}
		if err := ps.Backward(grad(seqs), nil); err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), m.Grads...)
	}
	g1, g2 := run(s1), run(s2)
	m.ZeroGrads()
	p1, err := m.Forward(s1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := m.Forward(s2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Backward(grad(s2), nil); err != nil {
		t.Fatal(err)
	}
	if err := p1.Backward(grad(s1), nil); err != nil {
		t.Fatal(err)
	}
	for i := range g1 {
		want := float64(g1[i]) + float64(g2[i])
		if d := math.Abs(float64(m.Grads[i]) - want); d > 1e-6*(1+math.Abs(want)) {
			t.Fatalf("grad %d: interleaved passes give %g, separate %g", i, m.Grads[i], want)
		}
	}
	if err := p1.Backward(grad(s1), nil); err == nil {
		t.Error("second Backward on one Pass succeeded")
	}
	p3, _ := m.Forward(s1)
	if err := p3.Backward(grad(s2), nil); err == nil {
		t.Error("Backward with the wrong shape succeeded")
	}
	for _, bad := range [][]Seq{
		{{Tokens: []int32{1, 2}, PromptLen: 0}},
		{{Tokens: []int32{1, 2}, PromptLen: 3}},
		{{Tokens: []int32{1, 99}, PromptLen: 1}},
		{{Tokens: make([]int32, cfg.Context+1), PromptLen: 1}},
	} {
		if _, err := m.Forward(bad); err == nil {
			t.Errorf("Forward(%v) succeeded", bad[0].PromptLen)
		}
		if _, _, err := m.Score(bad); err == nil {
			t.Errorf("Score(%v) succeeded", bad[0].PromptLen)
		}
	}
}
