package verifier

import (
	"testing"
)

func addCorpusSeeds(f *testing.F) {
	for _, tc := range loadCorpus(f) {
		f.Add(tc.Gold, tc.Prediction)
	}
	for _, in := range pathologicalSeeds {
		f.Add(in[0], in[1])
	}
}

var pathologicalSeeds = [][2]string{
	{"1", `\boxed{`}, {"1", `\boxed{\frac{`}, {"1", `\sqrt[`}, {"(", ")"}, {`\{`, `\}`},
	{"1", `\begin{pmatrix}1&\\\\&\end{pmatrix}`}, {"x", `\left(\right.`}, {"1", "$$$"},
	{`\pm`, `\pm\pm`}, {"1", `0^{-1}`}, {"1", `\frac{1}{0}`}, {"1", `(-8)^{1/3}`},
	{"1", "\xff\xfe\\boxed{\x00}"}, {"A", `\text{`}, {"1,000", "1{,}000"},
}

// FuzzMathCheck: the math checker never panics and always gives a reason.
func FuzzMathCheck(f *testing.F) {
	addCorpusSeeds(f)
	c, _ := Lookup("math")
	f.Fuzz(func(t *testing.T, gold, pred string) {
		v := c.Check(gold, pred)
		if v.Reason == "" {
			t.Fatalf("no reason for %q / %q", gold, pred)
		}
		if v.Correct != (v.Reason == ReasonCorrect) {
			t.Fatalf("correct=%v with reason %q", v.Correct, v.Reason)
		}
	})
}

// FuzzParse: normalisation and parsing of any string end without panic, and
// an answer that parses compares equal to itself.
func FuzzParse(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, s, _ string) {
		if len(s) > 4096 {
			return
		}
		bud := &budget{left: DefaultConfig().StepBudget}
		n := normalize(s)
		node, err := parseAnswer(n.s, bud)
		if err != nil || bud.out {
			return
		}
		c := &comparer{cfg: DefaultConfig(), bud: &budget{left: DefaultConfig().StepBudget}}
		v := c.canon(node, true)
		w := c.canon(node, false)
		_ = c.same(v, w)
	})
}

// FuzzExtract: extraction of answers from any response ends without panic
// and returns a substring-derived answer.
func FuzzExtract(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, gold, pred string) {
		_, _ = goldAnswer(gold)
		_, _ = predictedAnswer(pred)
		_, _ = predictedLetter(pred)
		_, _ = lastBox(pred)
		_ = findBoxes(pred)
	})
}

// FuzzArith: the arithmetic checker never panics.
func FuzzArith(f *testing.F) {
	addCorpusSeeds(f)
	c, _ := Lookup("arith")
	f.Fuzz(func(t *testing.T, gold, pred string) {
		if v := c.Check(gold, pred); v.Reason == "" {
			t.Fatal("no reason")
		}
	})
}
