package policy

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLogSoftmaxAgreesWithScore: at T=1 the distribution's entry for each
// response token is Score's log-prob and its entropy Score's entropy
// (tolerance 1e-5); at T=2 each row is a normalised distribution equal to
// log softmax(log p / 2) of the T=1 row (tolerance 1e-5).
func TestLogSoftmaxAgreesWithScore(t *testing.T) {
	cfg := Config{Vocab: 9, Context: 32, Layers: 1, Width: 8, Heads: 2, Tied: true}
	m := newTestModel(t, cfg, 3)
	seqs := randomSeqs(rand.New(rand.NewPCG(2, 2)), cfg, []int{12, 20}, []int{4, 7})
	lp, en, err := m.Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := m.LogSoftmax(seqs, 1)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := m.LogSoftmax(seqs, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		for j, row := range d1[i] {
			tok := s.Tokens[s.PromptLen+j]
			if d := math.Abs(float64(row[tok] - lp[i][j])); d > 1e-5 {
				t.Fatalf("seq %d pos %d: log-prob %v, Score %v", i, j, row[tok], lp[i][j])
			}
			var h, mass, z float64
			for _, l := range row {
				h -= math.Exp(float64(l)) * float64(l)
				z += math.Exp(float64(l) / 2)
			}
			if d := math.Abs(h - float64(en[i][j])); d > 1e-5 {
				t.Fatalf("seq %d pos %d: entropy %v, Score %v", i, j, h, en[i][j])
			}
			for v, l := range d2[i][j] {
				mass += math.Exp(float64(l))
				want := float64(row[v])/2 - math.Log(z)
				if d := math.Abs(float64(l) - want); d > 1e-5 {
					t.Fatalf("seq %d pos %d tok %d: T=2 log-prob %v, want %v", i, j, v, l, want)
				}
			}
			if math.Abs(mass-1) > 1e-5 {
				t.Fatalf("T=2 row sums to %v", mass)
			}
		}
	}
}
