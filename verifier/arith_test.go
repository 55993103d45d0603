package verifier

import (
	"errors"
	"testing"
)

func TestArith(t *testing.T) {
	c, err := Lookup("arith")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, gold, resp string
		correct          bool
		reason           string
	}{
		{"plain", "42", `6*7 = 42. \boxed{42}`, true, ReasonCorrect},
		{"negative", "-5", `2-7 = -5 so \boxed{-5}`, true, ReasonCorrect},
		{"spaces inside box", "12", `\boxed{ 12 }`, true, ReasonCorrect},
		{"last box wins", "3", `\boxed{4} no wait \boxed{3}`, true, ReasonCorrect},
		{"wrong", "42", `\boxed{41}`, false, ReasonWrongValue},
		{"leading zeros equal", "7", `\boxed{007}`, true, ReasonCorrect},
		{"no box", "42", `the answer is 42`, false, ReasonNoAnswer},
		{"fraction not integer", "1", `\boxed{\frac{2}{2}}`, false, ReasonNotInteger},
		{"decimal not integer", "1", `\boxed{1.0}`, false, ReasonNotInteger},
		{"big", "123456789012345678901234567890", `\boxed{123456789012345678901234567890}`, true, ReasonCorrect},
		{"bad gold", "x", `\boxed{1}`, false, ReasonBadGold},
		{"boxed gold", `\boxed{9}`, `\boxed{9}`, true, ReasonCorrect},
		{"unclosed box", "5", `\boxed{5`, true, ReasonCorrect},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := c.Check(tc.gold, tc.resp)
			if v.Correct != tc.correct || v.Reason != tc.reason {
				t.Fatalf("Check(%q, %q) = %+v, want correct=%v reason=%s", tc.gold, tc.resp, v, tc.correct, tc.reason)
			}
		})
	}
}

func TestArithThinkGate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ThinkGate = true
	c, err := NewArith(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Check("4", `2+2 \boxed{4}`); v.Correct || v.Reason != ReasonFormatGate {
		t.Fatalf("ungated response: %+v, want format_gate", v)
	}
	if v := c.Check("4", `<think>\boxed{5}</think> so \boxed{4}`); !v.Correct {
		t.Fatalf("gated response: %+v, want correct", v)
	}
	if v := c.Check("4", `<think>\boxed{4}</think> done`); v.Correct || v.Reason != ReasonNoAnswer {
		t.Fatalf("box only inside think: %+v, want no_answer", v)
	}
}

func TestLookup(t *testing.T) {
	for _, k := range []string{"math", "arith"} {
		if _, err := Lookup(k); err != nil {
			t.Errorf("Lookup(%q): %v", k, err)
		}
	}
	if _, err := Lookup("chess"); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Lookup(chess) error %v, want ErrUnknownKind", err)
	}
	// The -think kinds gate on </think>; the plain kinds do not.
	for _, c := range []struct{ kind, gold, plain, thought string }{
		{"math", `\frac12`, `\boxed{0.5}`, `<think>\boxed{3}</think> \boxed{0.5}`},
		{"arith", "4", `2+2=\boxed{4}`, `<think>\boxed{5}</think> \boxed{4}`},
	} {
		plain, _ := Lookup(c.kind)
		gated, err := Lookup(c.kind + "-think")
		if err != nil {
			t.Fatalf("Lookup(%s-think): %v", c.kind, err)
		}
		if v := plain.Check(c.gold, c.plain); !v.Correct {
			t.Errorf("%s: ungated answer %+v, want correct", c.kind, v)
		}
		if v := gated.Check(c.gold, c.plain); v.Correct || v.Reason != ReasonFormatGate {
			t.Errorf("%s-think: answer without </think> %+v, want format_gate", c.kind, v)
		}
		if v := gated.Check(c.gold, c.thought); !v.Correct {
			t.Errorf("%s-think: answer after </think> %+v, want correct", c.kind, v)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	bad := DefaultConfig()
	bad.Points = 0
	if err := bad.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("Points=0 accepted: %v", err)
	}
	bad = DefaultConfig()
	bad.ThinkGate, bad.ThinkClose = true, ""
	if err := bad.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("gate without marker accepted: %v", err)
	}
}
