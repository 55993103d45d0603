package learner

import (
	"errors"
	"math"
	"testing"

	"github.com/exgrpo/exgrpo/task"
)

func TestConfigDefaultsValidate(t *testing.T) {
	for name, c := range map[string]Config{"default": DefaultConfig(), "paper": PaperConfig()} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	p, d := PaperConfig(), DefaultConfig()
	// The symbols the paper fixes and the tiny task keeps.
	if p.K != 8 || p.Rho != 0.5 || p.Beta != 0.1 || p.Start != 0.35 || p.CEnt != 0.001 || p.Eps != 0.2 || p.LR != 1e-6 || p.ClipNorm != 1 || p.SkipNorm != 500 {
		t.Errorf("paper config drifted: %+v", p)
	}
	if d.K != p.K || d.Rho != p.Rho || d.Beta != p.Beta || d.Start != p.Start || d.B >= p.B || d.LR <= p.LR || d.LMax != DefaultLMax {
		t.Errorf("default config should differ from the paper only in B, LR and LMax: %+v", d)
	}
}

// ALGORITHM.md E12: the built-in L_max is the task's response cap during RL.
func TestDefaultLMaxIsTaskCapE12(t *testing.T) {
	if DefaultLMax != task.TrainMaxNew || DefaultConfig().LMax != task.TrainMaxNew {
		t.Fatalf("DefaultLMax = %d, task.TrainMaxNew = %d", DefaultLMax, task.TrainMaxNew)
	}
}

func TestConfigValidateRejects(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Config)
	}{
		{"K<2", func(c *Config) { c.K = 1 }},
		{"B=0", func(c *Config) { c.B = 0 }},
		{"rho=1", func(c *Config) { c.Rho = 1 }},
		{"rho<0", func(c *Config) { c.Rho = -0.1 }},
		{"rho NaN", func(c *Config) { c.Rho = math.NaN() }},
		{"beta=0", func(c *Config) { c.Beta = 0 }},
		{"start=1", func(c *Config) { c.Start = 1 }},
		{"lmax=0", func(c *Config) { c.LMax = 0 }},
		{"cent<0", func(c *Config) { c.CEnt = -1 }},
		{"eps=0", func(c *Config) { c.Eps = 0 }},
		{"minibatches=0", func(c *Config) { c.MiniBatches = 0 }},
		{"minibatches>B", func(c *Config) { c.MiniBatches = c.B + 1 }},
		{"staleness<0", func(c *Config) { c.Staleness = -1 }},
		{"candidates=0", func(c *Config) { c.Candidates = 0 }},
		{"selection", func(c *Config) { c.Selection = "median" }},
		{"lr=0", func(c *Config) { c.LR = 0 }},
		{"beta2=1", func(c *Config) { c.Beta2 = 1 }},
		{"adameps=0", func(c *Config) { c.AdamEps = 0 }},
		{"wd<0", func(c *Config) { c.WeightDecay = -0.1 }},
		{"clip=0", func(c *Config) { c.ClipNorm = 0 }},
		{"skip<clip", func(c *Config) { c.SkipNorm = 0.5 }},
		{"onpolicy with rho", func(c *Config) { c.OnPolicyOnly = true }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mut(&c)
			if err := c.Validate(); !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate() = %v, want ErrConfig", err)
			}
		})
	}
	c := DefaultConfig()
	c.OnPolicyOnly, c.Rho = true, 0
	if err := c.Validate(); err != nil {
		t.Fatalf("on-policy baseline with rho 0: %v", err)
	}
}

// ALGORITHM.md E5, E6: the pool is asked for floor(rho*B) questions in mixed
// mode only, never by the on-policy baseline.
func TestPoolQuestionsE5E6(t *testing.T) {
	c := PaperConfig()
	if got := c.PoolQuestions(true); got != 64 {
		t.Errorf("mixed, rho 0.5, B 128: %d, want 64", got)
	}
	if got := c.PoolQuestions(false); got != 0 {
		t.Errorf("before the delayed start: %d, want 0", got)
	}
	c.Rho, c.B = 0.25, 10
	if got := c.PoolQuestions(true); got != 2 {
		t.Errorf("rho 0.25, B 10: %d, want floor(2.5) = 2", got)
	}
	c.Rho, c.OnPolicyOnly = 0, true
	if got := c.PoolQuestions(true); got != 0 {
		t.Errorf("on-policy only: %d, want 0", got)
	}
}
