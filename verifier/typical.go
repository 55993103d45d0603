package verifier

import "strings"

// TypicalItems returns (gold, response) pairs shaped like the reward path's
// traffic: short worked solutions that end in a boxed answer, correct and
// wrong, over integers, fractions, radicals, tuples, intervals and
// expressions. Used by the throughput benchmarks (go test -bench and
// exgrpo bench verifier).
func TypicalItems() [][2]string {
	return [][2]string{
		{"42", `We have 6 \cdot 7 = 42, so the answer is \boxed{42}.`},
		{"42", `Adding up, 40 + 3 = 43. Thus \boxed{43}.`},
		{`\frac{3}{4}`, `The probability is $\frac{6}{8} = \boxed{\frac{3}{4}}$.`},
		{`\frac{3}{4}`, `So the ratio is \boxed{0.75}.`},
		{`2\sqrt{3}`, `The side is $\sqrt{12} = \boxed{\sqrt{12}}$.`},
		{`(1, -2)`, `Solving the system gives $(x,y) = \boxed{(1,-2)}$.`},
		{`[-3, 2)`, `The solution set is \boxed{[-3,2)}.`},
		{`x^2+2x+1`, `Expanding, we get \boxed{(x+1)^2}.`},
		{`28\%`, `The total loss is \boxed{28\%}.`},
		{`-5`, `Hence $x = \boxed{-5}$.`},
		{`\text{(C)}`, `The correct option is \boxed{C}.`},
		{`1000`, `There are \boxed{1{,}000} ways.`},
	}
}

// StressItems returns pathological (gold, response) pairs: 1 MiB inputs,
// deep nesting, huge powers and factorials, unclosed constructs. Each must be
// decided (a verdict with a reason) within the step budget. Used by the
// limit tests and by the worst-case timings of the benchmarks.
func StressItems() map[string][2]string {
	mib := 1 << 20
	return map[string][2]string{
		"1MiB prose then box":     {"42", strings.Repeat("the answer might be 7 ", mib/22) + `\boxed{42}`},
		"1MiB digits":             {"42", strings.Repeat("9", mib)},
		"1MiB dollars":            {"42", strings.Repeat("$", mib)},
		"1MiB open braces in box": {"42", `\boxed{` + strings.Repeat("{", mib-8)},
		"1MiB nested boxes":       {"42", strings.Repeat(`\boxed{`, mib/7)},
		"deep parens in box":      {"1", `\boxed{` + strings.Repeat("(", 3000) + "1" + strings.Repeat(")", 3000) + "}"},
		"deep fracs":              {"1", `\boxed{` + strings.Repeat(`\frac{1}{`, 1500) + "1" + strings.Repeat("}", 1500) + "}"},
		"huge power":              {"1", `\boxed{2^{2^{2^{2^{2^{99999}}}}}}`},
		"huge factorial":          {"1", `\boxed{99999999!}`},
		"long sum at answer cap":  {"1", `\boxed{` + strings.Repeat("x+", 2000) + "1}"},
		"many pm":                 {"1", `\boxed{` + strings.Repeat(`1\pm `, 500) + "1}"},
		"long list":               {"1", `\boxed{` + strings.Repeat("1,", 2000) + "1}"},
		"nested sets":             {`\{1\}`, `\boxed{` + strings.Repeat(`\{`, 1000) + "1" + strings.Repeat(`\}`, 1000) + "}"},
		"deep gold":               {strings.Repeat("(", 100000) + "1" + strings.Repeat(")", 100000), `\boxed{1}`},
		"matrix bomb":             {"1", `\boxed{` + strings.Repeat(`\begin{pmatrix}1&2\\3&4\end{pmatrix}`, 60) + "}"},
		"just over the size cap":  {"1", strings.Repeat("a", DefaultConfig().MaxInputBytes+1)},
		"unclosed environments":   {"1", `\boxed{\begin{pmatrix}` + strings.Repeat("1&", 1000)},
		"many anchors":            {"1", strings.Repeat("The answer is ", 50000)},
		"many inline regions":     {"1", strings.Repeat("$x$ ", 200000)},
	}
}
