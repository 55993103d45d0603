package experiment

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/gonum/stat/distuv"
)

// Test is a two-sample comparison of means: Diff = mean(a) - mean(b), the
// t statistic, its degrees of freedom and the two-sided p-value. NaN
// fields when a sample is too small (fewer than two values, or no spread).
type Test struct {
	Diff float64 `json:"diff"`
	T    float64 `json:"t"`
	DF   float64 `json:"df"`
	P    float64 `json:"p"`
	NA   int     `json:"na"`
	NB   int     `json:"nb"`
}

// Welch compares two independent samples without assuming equal variances
// (Welch's t-test, Welch-Satterthwaite degrees of freedom): the test for
// two arms run with their own seeds.
func Welch(a, b []float64) Test {
	ca, cb := NewCell(a), NewCell(b)
	t := Test{Diff: ca.Mean - cb.Mean, T: math.NaN(), DF: math.NaN(), P: math.NaN(), NA: len(a), NB: len(b)}
	if len(a) < 2 || len(b) < 2 {
		return t
	}
	va, vb := ca.SD*ca.SD/float64(len(a)), cb.SD*cb.SD/float64(len(b))
	if va+vb == 0 {
		return t
	}
	t.T = t.Diff / math.Sqrt(va+vb)
	t.DF = (va + vb) * (va + vb) / (va*va/float64(len(a)-1) + vb*vb/float64(len(b)-1))
	t.P = twoSided(t.T, t.DF)
	return t
}

// Paired compares two samples measured on the same units (a[i] and b[i] on
// the same seed's recorded data: `exgrpo retrain` under two objective
// settings): a one-sample t-test of the differences.
func Paired(a, b []float64) (Test, error) {
	if len(a) != len(b) {
		return Test{}, fmt.Errorf("%w: paired samples of %d and %d values", ErrConfig, len(a), len(b))
	}
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	c := NewCell(d)
	t := Test{Diff: c.Mean, T: math.NaN(), DF: math.NaN(), P: math.NaN(), NA: len(a), NB: len(b)}
	if len(d) < 2 || c.SD == 0 {
		return t, nil
	}
	t.T = c.Mean / (c.SD / math.Sqrt(float64(len(d))))
	t.DF = float64(len(d) - 1)
	t.P = twoSided(t.T, t.DF)
	return t, nil
}

func twoSided(t, df float64) float64 {
	st := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}
	return 2 * st.Survival(math.Abs(t))
}

// Comparison is one arm's final pass@1 against a reference arm of the same
// setting, held-out (ID) and the OOD mean, by Welch's test over seeds.
type Comparison struct {
	Setting   string `json:"setting"`
	Arm       string `json:"arm"`
	Reference string `json:"reference"`
	ID        Test   `json:"id"`
	OOD       Test   `json:"ood"`
}

// Compare tests every arm of each setting against the setting's on-policy
// arm and every ExGRPO arm against the setting's reference ExGRPO arm (its
// first non-on-policy arm), in the plan's order.
func Compare(p Plan, runs []RunResult) []Comparison {
	by := map[[2]string][]RunResult{}
	for _, r := range runs {
		by[[2]string{r.Setting, r.Arm}] = append(by[[2]string{r.Setting, r.Arm}], r)
	}
	finals := func(rs []RunResult, ood bool) []float64 {
		rs = append([]RunResult(nil), rs...)
		sort.Slice(rs, func(i, j int) bool { return rs[i].Seed < rs[j].Seed })
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = r.FinalID
			if ood {
				xs[i] = r.OOD
			}
		}
		return xs
	}
	var out []Comparison
	for _, s := range p.Settings {
		var refs []string
		for _, a := range s.Arms {
			if a.OnPolicy && len(refs) == 0 {
				refs = append(refs, a.Name)
			}
		}
		for _, a := range s.Arms {
			if !a.OnPolicy {
				refs = append(refs, a.Name)
				break
			}
		}
		for _, ref := range refs {
			rb := by[[2]string{s.Name, ref}]
			if len(rb) == 0 {
				continue
			}
			for _, a := range s.Arms {
				ra := by[[2]string{s.Name, a.Name}]
				if a.Name == ref || len(ra) == 0 || (a.OnPolicy && ref != refs[0]) {
					continue // the on-policy arm against ExGRPO is the first table's row read backwards
				}
				out = append(out, Comparison{Setting: s.Name, Arm: a.Name, Reference: ref,
					ID: Welch(finals(ra, false), finals(rb, false)), OOD: Welch(finals(ra, true), finals(rb, true))})
			}
		}
	}
	return out
}

// writeComparisons is the significance table of WriteMarkdown.
func writeComparisons(b *strings.Builder, cs []Comparison) {
	if len(cs) == 0 {
		return
	}
	b.WriteString("\nSignificance: each arm's final pass@1 minus a reference arm's (the setting's on-policy arm, and its first ExGRPO arm), " +
		"in points, with Welch's two-sided t-test over seeds (t, Welch-Satterthwaite df, p; no correction for the number of comparisons).\n\n")
	b.WriteString("| setting | arm | vs | ID diff | t | df | p | OOD diff | p (OOD) |\n|---|---|---|---|---|---|---|---|---|\n")
	f := func(x float64, d int) string {
		if math.IsNaN(x) {
			return "-"
		}
		return fmt.Sprintf("%.*f", d, x)
	}
	pv := func(p float64) string {
		if p < 0.001 {
			return "< 0.001"
		}
		return f(p, 3)
	}
	for _, c := range cs {
		fmt.Fprintf(b, "| %s | %s | %s | %+.1f | %s | %s | %s | %+.1f | %s |\n", c.Setting, c.Arm, c.Reference,
			100*c.ID.Diff, f(c.ID.T, 2), f(c.ID.DF, 1), pv(c.ID.P), 100*c.OOD.Diff, pv(c.OOD.P))
	}
}
