package task

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// naiveEval evaluates a flat + - * / expression (no parentheses) by the
// textbook two-pass reduction over the token list: an independent reference
// for the tree evaluator behind Solve.
func naiveEval(t *testing.T, expr string) int64 {
	t.Helper()
	var nums []int64
	var ops []byte
	start := 0
	for i := 0; i <= len(expr); i++ {
		if i == len(expr) || strings.IndexByte("+-*/", expr[i]) >= 0 {
			v, err := strconv.ParseInt(expr[start:i], 10, 64)
			if err != nil {
				t.Fatalf("naiveEval %q: %v", expr, err)
			}
			nums = append(nums, v)
			if i < len(expr) {
				ops = append(ops, expr[i])
			}
			start = i + 1
		}
	}
	// Pass 1: * and / left to right.
	for i := 0; i < len(ops); {
		if ops[i] == '*' || ops[i] == '/' {
			v := nums[i] * nums[i+1]
			if ops[i] == '/' {
				v = nums[i] / nums[i+1]
			}
			nums = append(nums[:i], append([]int64{v}, nums[i+2:]...)...)
			ops = append(ops[:i], ops[i+1:]...)
			continue
		}
		i++
	}
	// Pass 2: + and - left to right.
	v := nums[0]
	for i, op := range ops {
		if op == '+' {
			v += nums[i+1]
		} else {
			v -= nums[i+1]
		}
	}
	return v
}

func TestSolve(t *testing.T) {
	tests := []struct {
		name, expr, want, sol string
		maxAbs                int64
		wantErr               bool
	}{
		{name: "precedence", expr: "7-2*3+4", want: "5", sol: `2*3=6,7-6=1,1+4=5,\boxed{5}`},
		{name: "two products", expr: "1*2+3*4", want: "14", sol: `1*2=2,3*4=12,2+12=14,\boxed{14}`},
		{name: "negative", expr: "1-9-4", want: "-12", sol: `1-9=-8,-8-4=-12,\boxed{-12}`},
		{name: "parentheses", expr: "(3+4)*2", want: "14", sol: `3+4=7,7*2=14,\boxed{14}`},
		{name: "right paren", expr: "2*(3-5)", want: "-4", sol: `3-5=-2,2*-2=-4,\boxed{-4}`},
		{name: "division", expr: "8/2+3", want: "7", sol: `8/2=4,4+3=7,\boxed{7}`},
		{name: "inexact division", expr: "7/2", wantErr: true},
		{name: "division by zero", expr: "7/0", wantErr: true},
		{name: "bound exceeded", expr: "9*9*9", maxAbs: 99, wantErr: true},
		{name: "bound met", expr: "9*9+9", maxAbs: 99, want: "90", sol: `9*9=81,81+9=90,\boxed{90}`},
		{name: "syntax", expr: "3+", wantErr: true},
		{name: "unbalanced", expr: "(3+4", wantErr: true},
		{name: "trailing", expr: "3+4)", wantErr: true},
		{name: "unary minus", expr: "-3", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, sol, err := Solve(tt.expr, tt.maxAbs)
			if tt.wantErr {
				if !errors.Is(err, ErrExpr) {
					t.Fatalf("Solve(%q) err = %v, want ErrExpr", tt.expr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Solve(%q): %v", tt.expr, err)
			}
			if got := strconv.FormatInt(v, 10); got != tt.want || sol != tt.sol {
				t.Errorf("Solve(%q) = %s, %q; want %s, %q", tt.expr, got, sol, tt.want, tt.sol)
			}
		})
	}
}

func FuzzSolve(f *testing.F) {
	for _, s := range []string{"7-2*3+4", "(3+4)*2", "8/2", "((1))", "9999999999", "1+(2*(3-4))/1", ")("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		v, sol, err := Solve(expr, 0)
		if err != nil {
			return
		}
		if got := LastBoxed(sol); got != strconv.FormatInt(v, 10) {
			t.Fatalf("Solve(%q) solution %q boxes %q, value %d", expr, sol, got, v)
		}
	})
}

func TestPrintTreeRoundTrip(t *testing.T) {
	// printTree must write exactly the parentheses that make parseExpr give
	// back a tree with the same value and the same evaluation steps.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		n := randomTree(2+i%5, "+-*", func() int64 { return rng.Int64N(10) }, rng)
		want, wantSteps, err := evalSteps(n, -maxValue, maxValue, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := printTree(n, 0, false)
		back, err := parseExpr(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		got, gotSteps, err := evalSteps(back, -maxValue, maxValue, nil)
		if err != nil || got != want || !reflect.DeepEqual(gotSteps, wantSteps) {
			t.Fatalf("%q: value %d steps %v, want %d %v (err %v)", s, got, gotSteps, want, wantSteps, err)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	for _, set := range BuiltinSets() {
		t.Run(set.Name, func(t *testing.T) {
			a, err := Generate(set.Name, set.Spec, 100, 7)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Generate(set.Name, set.Spec, 100, 7)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatal("same spec and seed gave different datasets")
			}
			c, err := Generate(set.Name, set.Spec, 100, 8)
			if err != nil {
				t.Fatal(err)
			}
			if reflect.DeepEqual(a.Problems, c.Problems) {
				t.Fatal("seeds 7 and 8 gave the same dataset")
			}
		})
	}
}

func TestGeneratedProblemsWellFormed(t *testing.T) {
	for _, set := range BuiltinSets() {
		t.Run(set.Name, func(t *testing.T) {
			ds, err := Builtin(set.Name)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds.Problems) != set.N {
				t.Fatalf("%d problems, want %d", len(ds.Problems), set.N)
			}
			spec := set.Spec.withDefaults()
			ids := map[string]bool{}
			prompts := map[string]bool{}
			levels := map[int]int{}
			for _, p := range ds.Problems {
				if ids[p.ID] || prompts[p.Prompt] {
					t.Fatalf("duplicate question %s %q", p.ID, p.Prompt)
				}
				ids[p.ID], prompts[p.Prompt] = true, true
				levels[p.Level]++
				if p.Kind != KindArith || p.Family != spec.Family {
					t.Fatalf("%s: kind %q family %q", p.ID, p.Kind, p.Family)
				}
				if got := SplitOf(p.Prompt); got != spec.Split {
					t.Fatalf("%s %q in split %s, want %s", p.ID, p.Prompt, got, spec.Split)
				}
				if ops := strings.Count(p.Prompt, "+") + strings.Count(p.Prompt, "-") + strings.Count(p.Prompt, "*") + strings.Count(p.Prompt, "/"); ops != p.Level-1 {
					t.Fatalf("%q has %d operators, level %d", p.Prompt, ops, p.Level)
				}
				if LastBoxed(p.Solution) != p.Answer {
					t.Fatalf("%q: solution %q does not box answer %q", p.Prompt, p.Solution, p.Answer)
				}
				if !strings.ContainsAny(p.Prompt, "()") {
					if got := strconv.FormatInt(naiveEval(t, p.Prompt), 10); got != p.Answer {
						t.Fatalf("%q: answer %s, reference evaluation %s", p.Prompt, p.Answer, got)
					}
				}
				if strings.ContainsAny(p.ID, ".*> ") {
					t.Fatalf("id %q is not subject-safe", p.ID)
				}
				if len(p.Prompt) > MaxPromptChars || len(p.Solution) > MaxResponseChars {
					t.Fatalf("%q: prompt %d or solution %d chars over the caps %d/%d", p.Prompt, len(p.Prompt), len(p.Solution), MaxPromptChars, MaxResponseChars)
				}
			}
			for _, l := range spec.Levels {
				if levels[l] == 0 {
					t.Errorf("level %d absent", l)
				}
			}
		})
	}
}

func TestSplitsDisjoint(t *testing.T) {
	train, err := Builtin("train")
	if err != nil {
		t.Fatal(err)
	}
	train2, err := Generate("train", TrainSpec(), 4000, 99)
	if err != nil {
		t.Fatal(err)
	}
	trainPrompts := map[string]bool{}
	for _, p := range append(train.Problems, train2.Problems...) {
		trainPrompts[p.Prompt] = true
	}
	for _, name := range append([]string{"heldout"}, OODSetNames()...) {
		ds, err := Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ds.Problems {
			if trainPrompts[p.Prompt] {
				t.Fatalf("%s question %q is also a training question", name, p.Prompt)
			}
		}
	}
	// The partition is close to its nominal share (10%) over the chain space.
	rng := rand.New(rand.NewPCG(3, 4))
	held := 0
	const n = 20000
	for range n {
		if SplitOf(TrainSpec().withDefaults().expression(4, rng)) == SplitHeldOut {
			held++
		}
	}
	if frac := float64(held) / n; frac < 0.08 || frac > 0.12 { // nominal 0.10, binomial sd 0.002
		t.Errorf("held-out share %.3f, want 0.10 ± 0.02", frac)
	}
}

func TestGenerateExhausted(t *testing.T) {
	// Enumerate the held-out two-operand questions, then ask for more.
	s := Spec{Levels: []int{2}, Split: SplitHeldOut}
	want := map[string]bool{}
	for a := 1; a <= 9; a++ {
		for b := 1; b <= 9; b++ {
			for _, op := range "+-*" {
				e := strconv.Itoa(a) + string(op) + strconv.Itoa(b)
				if _, _, err := solveIn(e, 0, 9); err == nil && SplitOf(e) == SplitHeldOut {
					want[e] = true
				}
			}
		}
	}
	ds, err := Generate("x", s, len(want)+1, 1)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	if len(ds.Problems) != len(want) {
		t.Fatalf("drew %d distinct held-out two-operand questions, there are %d", len(ds.Problems), len(want))
	}
	for _, p := range ds.Problems {
		if !want[p.Prompt] {
			t.Fatalf("drew %q, not a valid held-out question", p.Prompt)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"train", TrainSpec(), true},
		{"no levels", Spec{}, false},
		{"level 1", Spec{Levels: []int{1}}, false},
		{"paren level 2", Spec{Family: FamilyParen, Levels: []int{2}}, false},
		{"bad family", Spec{Family: "x", Levels: []int{2}}, false},
		{"weights mismatch", Spec{Levels: []int{2, 3}, Weights: []float64{1}}, false},
		{"zero weights", Spec{Levels: []int{2}, Weights: []float64{0}}, false},
		{"digits", Spec{Levels: []int{2}, Digits: 5}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrSpec) {
				t.Fatalf("error %v does not wrap ErrSpec", err)
			}
		})
	}
}
