package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ALGORITHM.md E7: lowest mean entropy wins, ties go to the earliest stored;
// the ablations pick the highest, or a uniform draw.
func TestRankE7(t *testing.T) {
	nan := math.NaN()
	cands := func(h ...float64) []Ranked {
		out := make([]Ranked, len(h))
		for i, x := range h {
			out[i] = Ranked{ID: string(rune('a' + i)), Index: i, Entropy: x}
		}
		return out
	}
	cases := []struct {
		name   string
		sel    Selection
		h      []float64
		chosen int
		order  string
	}{
		{"lowest", SelectLowestEntropy, []float64{0.9, 0.2, 0.5}, 1, "bca"},
		{"lowest tie to earliest", SelectLowestEntropy, []float64{0.7, 0.3, 0.3, 0.3}, 1, "bcda"},
		{"highest", SelectHighestEntropy, []float64{0.9, 0.2, 0.95}, 2, "cab"},
		{"highest tie to earliest", SelectHighestEntropy, []float64{0.4, 0.8, 0.8}, 1, "bca"},
		{"NaN never wins lowest", SelectLowestEntropy, []float64{nan, 3}, 1, "ba"},
		{"NaN never wins highest", SelectHighestEntropy, []float64{nan, 0.1}, 1, "ba"},
		{"single", SelectLowestEntropy, []float64{1}, 0, "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, r := Rank(tc.sel, cands(tc.h...), nil)
			order := ""
			for _, x := range r {
				order += x.ID
			}
			if c != tc.chosen || order != tc.order {
				t.Fatalf("chosen %d order %s, want %d and %s", c, order, tc.chosen, tc.order)
			}
		})
	}
	if c, r := Rank(SelectLowestEntropy, nil, nil); c != -1 || r != nil {
		t.Fatal("empty candidate list must choose -1")
	}
}

// ALGORITHM.md E7 ablation "random": uniform over candidates. 30,000 draws
// over 3 candidates: each frequency within 0.02 of 1/3 (about 6 standard
// deviations of 0.0027).
func TestRankRandomE7(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 0))
	c := []Ranked{{ID: "a", Index: 0, Entropy: 0.1}, {ID: "b", Index: 1, Entropy: 0.2}, {ID: "c", Index: 2, Entropy: 0.3}}
	var n [3]int
	const draws = 30000
	for range draws {
		i, _ := Rank(SelectRandom, c, rng)
		n[i]++
	}
	for i, k := range n {
		if f := float64(k) / draws; math.Abs(f-1.0/3) > 0.02 {
			t.Errorf("candidate %d drawn with frequency %.4f, want 1/3 +- 0.02", i, f)
		}
	}
}

// ALGORITHM.md E7: the mean runs over every response token, EOS included.
func TestMeanEntropyE7(t *testing.T) {
	if got := MeanEntropy([]float32{0.5, 1.5, 4}); math.Abs(got-2) > 1e-12 {
		t.Fatalf("mean entropy %v, want 2", got)
	}
	if !math.IsNaN(MeanEntropy(nil)) {
		t.Fatal("empty response must give NaN")
	}
}
