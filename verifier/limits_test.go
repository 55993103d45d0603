package verifier

import (
	"strings"
	"testing"
)

func pathological() map[string][2]string { return StressItems() }

func TestPathologicalInputsAreDecided(t *testing.T) {
	for _, kind := range []string{"math", "arith"} {
		c, err := Lookup(kind)
		if err != nil {
			t.Fatal(err)
		}
		for name, in := range pathological() {
			v := c.Check(in[0], in[1])
			if v.Reason == "" {
				t.Errorf("%s/%s: verdict without reason", kind, name)
			}
		}
	}
}

func TestSizeCap(t *testing.T) {
	c, _ := Lookup("math")
	big := strings.Repeat("a", DefaultConfig().MaxInputBytes+1)
	if v := c.Check("1", big); v.Reason != ReasonTooLarge {
		t.Fatalf("oversized response: %+v, want too_large", v)
	}
	if v := c.Check(big, `\boxed{1}`); v.Reason != ReasonTooLarge {
		t.Fatalf("oversized gold: %+v, want too_large", v)
	}
	// A 1 MiB response is under the cap and is graded.
	resp := strings.Repeat("x ", (1<<20)/2-8) + `\boxed{1}`
	if v := c.Check("1", resp); !v.Correct {
		t.Fatalf("1 MiB response with the right box: %+v", v)
	}
}

func TestStepBudgetGivesTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StepBudget = 1000
	c, err := NewMath(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := c.Check("x^2+2x+1", `\boxed{`+strings.Repeat("(x+1)", 400)+`}`)
	if v.Reason != ReasonTimeout {
		t.Fatalf("tiny budget: %+v, want timeout", v)
	}
}
