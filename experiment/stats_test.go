package experiment

import (
	"math"
	"testing"
)

// Student's t table: the two-sided 5% critical values.
func TestTwoSidedMatchesTTable(t *testing.T) {
	for _, c := range []struct{ t, df float64 }{{12.706, 1}, {2.776, 4}, {2.228, 10}, {2.042, 30}} {
		if p := twoSided(c.t, c.df); math.Abs(p-0.05) > 5e-4 {
			t.Errorf("p(|T| > %v; df %v) = %.5f, want 0.050", c.t, c.df, p)
		}
	}
	if p := twoSided(0, 7); math.Abs(p-1) > 1e-12 {
		t.Errorf("p(t = 0) = %v, want 1", p)
	}
}

func TestWelch(t *testing.T) {
	// Equal sizes and spreads: t = diff / sqrt(2 s^2 / n), df = 2n - 2.
	a := []float64{1, 2, 3, 4, 5}
	b := []float64{3, 4, 5, 6, 7}
	w := Welch(a, b)
	if w.Diff != -2 || math.Abs(w.DF-8) > 1e-12 || math.Abs(w.T-(-2/math.Sqrt(2*2.5/5))) > 1e-12 {
		t.Fatalf("Welch = %+v, want diff -2, t -2, df 8", w)
	}
	if math.Abs(w.P-twoSided(-2, 8)) > 1e-15 || w.P < 0.05 || w.P > 0.1 {
		t.Errorf("p = %v, want p(|T| > 2; df 8), about 0.081", w.P)
	}
	// Unequal spreads: the Welch-Satterthwaite df lies between the smaller
	// sample's n - 1 and the pooled n_a + n_b - 2.
	w = Welch([]float64{10, 10.1, 9.9, 10.05}, []float64{5, 15, 8, 12, 11, 9})
	if w.DF <= 3 || w.DF >= 8 {
		t.Errorf("df %v outside (3, 8)", w.DF)
	}
	if w.P < 0.9 {
		t.Errorf("means 10.01 vs 10.0 gave p = %v", w.P)
	}
	if w := Welch([]float64{1}, b); !math.IsNaN(w.P) {
		t.Errorf("one value: p = %v, want NaN", w.P)
	}
	if w := Welch([]float64{1, 1}, []float64{1, 1}); !math.IsNaN(w.P) {
		t.Errorf("no spread: p = %v, want NaN", w.P)
	}
}

func TestPaired(t *testing.T) {
	// The same shift on every unit with a little noise is significant
	// paired, though the samples overlap (Welch cannot see it).
	a := []float64{50, 40, 60, 45, 55}
	b := []float64{49, 39.2, 58.9, 44.1, 53.8}
	p, err := Paired(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if p.P > 0.001 || p.DF != 4 {
		t.Errorf("paired = %+v, want p < 0.001, df 4", p)
	}
	if w := Welch(a, b); w.P < 0.5 {
		t.Errorf("Welch p = %v on overlapping samples, want > 0.5", w.P)
	}
	if _, err := Paired(a, b[:3]); err == nil {
		t.Error("unequal lengths accepted")
	}
}

func TestCompareAgainstReferences(t *testing.T) {
	p := Plan{Settings: []Setting{{Name: "s", Arms: []Arm{{Name: "on", OnPolicy: true}, {Name: "ex"}, {Name: "x"}}}}}
	var runs []RunResult
	for seed, v := range []float64{0.50, 0.52, 0.51} {
		runs = append(runs, RunResult{Setting: "s", Arm: "on", Seed: uint64(seed), FinalID: v},
			RunResult{Setting: "s", Arm: "ex", Seed: uint64(seed), FinalID: v - 0.05},
			RunResult{Setting: "s", Arm: "x", Seed: uint64(seed), FinalID: v + 0.01*float64(seed)})
	}
	cs := Compare(p, runs)
	if len(cs) != 3 {
		t.Fatalf("%d comparisons, want 3 (ex, x vs on; x vs ex): %+v", len(cs), cs)
	}
	if cs[0].Arm != "ex" || cs[0].Reference != "on" || math.Abs(cs[0].ID.Diff+0.05) > 1e-12 {
		t.Errorf("first comparison %+v, want ex vs on, diff -0.05", cs[0])
	}
	if cs[2].Arm != "x" || cs[2].Reference != "ex" || math.Abs(cs[2].ID.Diff-0.06) > 1e-12 {
		t.Errorf("third comparison %+v, want x vs ex, diff +0.06", cs[2])
	}
}
