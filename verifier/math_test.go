package verifier

import (
	"testing"
)

// TestMathConventions pins the grading conventions of docs/VERIFIER.md, one
// row per convention, with both an accepted and a rejected example where it
// matters. Responses are boxed unless the row is about extraction.
func TestMathConventions(t *testing.T) {
	c, err := Lookup("math")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, gold, pred string
		want             bool
	}{
		{"fraction vs decimal", `\frac{1}{2}`, `\boxed{0.5}`, true},
		{"fraction forms", `\frac{1}{2}`, `\boxed{\dfrac12}`, true},
		{"slash fraction", `\frac{3}{4}`, `\boxed{3/4}`, true},
		{"wrong fraction", `\frac{1}{2}`, `\boxed{\frac{1}{3}}`, false},
		{"integer with trailing zeros", `1000`, `\boxed{1000.00}`, true},
		{"thousands comma", `1000`, `\boxed{1,000}`, true},
		{"thousands braces", `12345`, `\boxed{12{,}345}`, true},
		{"sqrt canonical", `2\sqrt{3}`, `\boxed{\sqrt{12}}`, true},
		{"rationalised", `\frac{\sqrt{3}}{3}`, `\boxed{\frac{1}{\sqrt{3}}}`, true},
		{"close radicals differ", `1000`, `\boxed{\sqrt{1000001}}`, false},
		{"nested radicals", `\sqrt{2}+\sqrt{3}`, `\boxed{\sqrt{5+2\sqrt{6}}}`, true},
		{"sqrt wrong", `2\sqrt{3}`, `\boxed{3\sqrt{2}}`, false},
		{"interval closure matters", `[1,2)`, `\boxed{[1,2]}`, false},
		{"interval same", `[1,2)`, `\boxed{[1, 2)}`, true},
		{"tuple order matters", `(1,2)`, `\boxed{(2,1)}`, false},
		{"set order free", `\{1,2\}`, `\boxed{\{2,1\}}`, true},
		{"list order free", `1, 2, 3`, `\boxed{3, 1, 2}`, true},
		{"list needs all items", `1, 2`, `\boxed{1}`, false},
		{"polynomial identity", `x^2+2x+1`, `\boxed{(x+1)^2}`, true},
		{"polynomial differs", `x^2+1`, `\boxed{(x+1)^2}`, false},
		{"commuted terms", `a+b`, `\boxed{b+a}`, true},
		{"abs is not identity", `|x|`, `\boxed{x}`, false},
		{"trig identity", `\sec^2 y`, `\boxed{\tan^2 y + 1}`, true},
		{"percent accepts number", `50\%`, `\boxed{50}`, true},
		{"percent accepts fraction", `50\%`, `\boxed{0.5}`, true},
		{"plain gold rejects percent scale", `0.5`, `\boxed{50}`, false},
		{"percent prediction for a fraction gold", `0.28`, `\boxed{28\%}`, true},
		{"percent prediction for a number gold", `28`, `\boxed{28\%}`, true},
		{"unparsable prediction is not guessed", `3`, `\boxed{3+}`, false},
		{"repeating decimal", `\frac{5}{9}`, `\boxed{0.\overline{5}}`, true},
		{"repeating decimal with prefix", `\frac{1}{6}`, `\boxed{0.1\overline{6}}`, true},
		{"vector as tuple", `\begin{pmatrix} 1 \\ 2 \end{pmatrix}`, `\boxed{(1,2)}`, true},
		{"vector as tuple wrong", `\begin{pmatrix} 1 \\ 2 \end{pmatrix}`, `\boxed{(2,1)}`, false},
		{"words ignore case", `\text{Monday}`, `\boxed{\text{monday}}`, true},
		{"repeated box", `1`, `\boxed{1}\boxed{1}`, true},
		{"anchor then prose", `11`, `The answer is 11 because 5+6=11 and not 12`, true},
		{"mathrm unit", `12`, `\boxed{12\ \mathrm{cm}^2}`, true},
		{"mathrm e is not a unit", `2`, `\boxed{2\mathrm{e}}`, false},
		{"mixed number", `\frac{5}{2}`, `\boxed{2\frac{1}{2}}`, true},
		{"negative mixed number", `-\frac{5}{2}`, `\boxed{-2\frac12}`, true},
		{"coefficient times fraction", `\frac{2x}{3}`, `\boxed{2\frac{x}{3}}`, true},
		{"absolute value chain", `1 \le |z| < 2`, `\boxed{(-2,-1] \cup [1,2)}`, true},
		{"absolute value chain wrong closure", `1 \le |z| < 2`, `\boxed{[-2,-1] \cup [1,2)}`, false},
		{"degrees", `90^\circ`, `\boxed{90}`, true},
		{"units dropped", `12`, `\boxed{12 \text{ cm}}`, true},
		{"equation simple lhs", `x = 3`, `\boxed{3}`, true},
		{"prediction equation", `3`, `\boxed{x = 3}`, true},
		{"gold equation not simple", `2x + 3 = 0`, `\boxed{0}`, false},
		{"equation scaled", `2x+4y=6`, `\boxed{x+2y-3=0}`, true},
		{"inequality as interval", `x > 5`, `\boxed{(5, \infty)}`, true},
		{"inequality flipped", `x \le 2`, `\boxed{2 \ge x}`, true},
		{"inequality wrong direction", `x > 5`, `\boxed{x < 5}`, false},
		{"choice letter", `C`, `\boxed{\text{(C)}}`, true},
		{"choice letter wrong", `C`, `The answer is D.`, false},
		{"decimal rounding of exact gold", `\frac{\pi}{2}`, `\boxed{1.5708}`, true},
		{"one decimal place is too coarse", `\frac{\pi}{2}`, `\boxed{1.6}`, false},
		{"pm expands", `3 \pm \sqrt{2}`, `\boxed{3+\sqrt{2}, 3-\sqrt{2}}`, true},
		{"pm needs both", `\pm 2`, `\boxed{2}`, false},
		{"matrix", `\begin{pmatrix}1\\2\end{pmatrix}`, `\boxed{\begin{bmatrix}1\\2\end{bmatrix}}`, true},
		{"matrix wrong", `\begin{pmatrix}1\\2\end{pmatrix}`, `\boxed{\begin{pmatrix}1\\3\end{pmatrix}}`, false},
		{"power", `1024`, `\boxed{2^{10}}`, true},
		{"factorial", `3628800`, `\boxed{10!}`, true},
		{"huge exact", `\frac{1}{2^{99}}`, `\boxed{\frac{1}{2^{98}}}`, false},
		{"text answer", `\text{even}`, `\boxed{\text{even}}`, true},
		{"text answer wrong", `\text{even}`, `\boxed{\text{odd}}`, false},
		{"anchor phrase", `34`, `Thus the final answer is 34.`, true},
		{"last number", `12`, `We count them all and get 12`, true},
		{"glued number is not an answer", `2`, `AZYUK2A`, false},
		{"several boxes joined", `1, 2`, `\boxed{1} and \boxed{2}`, true},
		{"far boxes not joined", `2`, `\boxed{1} no no no no \boxed{2}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := c.Check(tc.gold, tc.pred)
			if v.Correct != tc.want {
				t.Fatalf("Check(%q, %q) = %+v, want correct=%v", tc.gold, tc.pred, v, tc.want)
			}
			if v.Reason == "" {
				t.Fatal("no reason")
			}
		})
	}
}

func TestMathReasons(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ThinkGate = true
	gated, err := NewMath(cfg)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := Lookup("math")
	cases := []struct {
		name   string
		c      Checker
		gold   string
		pred   string
		reason string
	}{
		{"correct", plain, "4", `\boxed{4}`, ReasonCorrect},
		{"wrong", plain, "4", `\boxed{5}`, ReasonWrongValue},
		{"empty response", plain, "4", ``, ReasonNoAnswer},
		{"empty box", plain, "4", `\boxed{}`, ReasonNoAnswer},
		{"gate closed", gated, "4", `<think>hmm</think>\boxed{4}`, ReasonCorrect},
		{"gate missing", gated, "4", `\boxed{4}`, ReasonFormatGate},
		{"box only in reasoning", gated, "4", `<think>\boxed{4}</think>`, ReasonNoAnswer},
		{"empty gold", plain, "", `\boxed{4}`, ReasonBadGold},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v := tc.c.Check(tc.gold, tc.pred); v.Reason != tc.reason {
				t.Fatalf("got %+v, want reason %s", v, tc.reason)
			}
		})
	}
}

// TestDeterministic: the same input gets the same verdict (evaluation
// points are a pure function of the seed and the variable names).
func TestDeterministic(t *testing.T) {
	c, _ := Lookup("math")
	for i := 0; i < 20; i++ {
		a := c.Check(`\frac{x+2}{7}`, `\boxed{\frac{x}{7}+\frac{2}{7}}`)
		if !a.Correct {
			t.Fatalf("run %d: %+v", i, a)
		}
	}
}

// TestConcurrentUse: one checker shared by goroutines gives the verdicts it
// gives sequentially (run with -race to check for shared state).
func TestConcurrentUse(t *testing.T) {
	cases := loadCorpus(t)
	c, _ := Lookup("math")
	want := make([]Verdict, len(cases))
	for i, tc := range cases {
		want[i] = c.Check(tc.Gold, tc.Prediction)
	}
	const workers = 4
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			for i := w; i < len(cases); i += workers {
				if got := c.Check(cases[i].Gold, cases[i].Prediction); got != want[i] {
					errs <- cases[i].Gold
					return
				}
			}
			errs <- ""
		}(w)
	}
	for w := 0; w < workers; w++ {
		if g := <-errs; g != "" {
			t.Errorf("concurrent verdict differs for gold %q", g)
		}
	}
}
