package experiment

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/task"
)

func TestNewCell(t *testing.T) {
	const tol = 1e-12
	for _, tc := range []struct {
		name string
		xs   []float64
	}{
		{"one", []float64{0.3}},
		{"three", []float64{0.1, 0.4, 0.25}},
		{"equal", []float64{0.5, 0.5, 0.5, 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCell(tc.xs)
			// Reference: the textbook formulas, written out independently.
			var sum, sq float64
			lo, hi := tc.xs[0], tc.xs[0]
			for _, x := range tc.xs {
				sum += x
				sq += x * x
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
			n := float64(len(tc.xs))
			mean := sum / n
			sd := 0.0
			if len(tc.xs) > 1 {
				sd = math.Sqrt(math.Max(0, (sq-n*mean*mean)/(n-1)))
			}
			if c.N != len(tc.xs) || math.Abs(c.Mean-mean) > tol || math.Abs(c.SD-sd) > 1e-9 || c.Min != lo || c.Max != hi {
				t.Errorf("NewCell(%v) = %+v; want mean %v sd %v min %v max %v (tolerance %g)", tc.xs, c, mean, sd, lo, hi, tol)
			}
		})
	}
	if c := NewCell(nil); c != (Cell{}) {
		t.Errorf("NewCell(nil) = %+v, want the zero Cell", c)
	}
}

func TestRolloutsToReach(t *testing.T) {
	evals := []Eval{{0, 0, 0.20}, {5, 1280, 0.24}, {10, 2560, 0.31}, {15, 3840, 0.28}}
	for _, tc := range []struct {
		name   string
		target float64
		want   int
		ok     bool
	}{
		{"already at start", 0.2, 0, true},
		{"first crossing", 0.30, 2560, true},
		{"exact value counts", 0.24, 1280, true},
		{"never", 0.5, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RolloutsToReach(evals, tc.target)
			if got != tc.want || ok != tc.ok {
				t.Errorf("RolloutsToReach(target %v) = %d, %t; want %d, %t", tc.target, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPlansValidate(t *testing.T) {
	for _, p := range []Plan{QuickPlan(), FullPlan(), CausesPlan()} {
		if err := p.Validate(); err != nil {
			t.Errorf("plan %s: %v", p.Name, err)
		}
	}
	full := FullPlan()
	for _, tc := range []struct {
		name string
		edit func(*Plan)
	}{
		{"no seeds", func(p *Plan) { p.Seeds = nil }},
		{"budget below one step", func(p *Plan) { p.Budget = p.K*p.B - 1 }},
		{"unknown OOD set", func(p *Plan) { p.OODSets = []string{"ood-nope"} }},
		{"rho out of range", func(p *Plan) { p.Settings[0].Arms[1].Rho = 1 }},
		{"unknown question selection", func(p *Plan) { p.Settings[0].Arms[1].QuestionSelection = "bucketed" }},
		{"repeated arm", func(p *Plan) { p.Settings[0].Arms[1].Name = p.Settings[0].Arms[0].Name }},
		{"fewer questions than B", func(p *Plan) { p.Settings[0].Questions = p.B - 1 }},
		{"fewer questions than the setting's B", func(p *Plan) { p.Settings[0].B = p.Settings[0].Questions + 1 }},
		{"budget below one step of the setting's B", func(p *Plan) { p.Settings[0].B = p.Budget/p.K + 1 }},
		{"negative retirement", func(p *Plan) { p.Settings[0].Arms[1].RetireAfter = -1 }},
		{"negative replay limit", func(p *Plan) { p.Settings[0].Arms[1].ReplayLimit = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := FullPlan()
			p.Settings = append([]Setting(nil), full.Settings...)
			p.Settings[0].Arms = append([]Arm(nil), full.Settings[0].Arms...)
			tc.edit(&p)
			if err := p.Validate(); !errors.Is(err, ErrConfig) {
				t.Errorf("Validate = %v, want ErrConfig", err)
			}
		})
	}
}

// Issue 16's arms and settings reach the learner's and the pool's
// configurations: retirement after m groups in both (0 there = never), the
// replay limit in the pool, the paper setting's B in the learner.
func TestCauseArmsAndSettings(t *testing.T) {
	p := CausesPlan()
	want := map[string][2]int{ // arm -> RetireAfter, ReplayLimit
		"onpolicy": {1, 0}, "exgrpo-nodelay": {1, 0}, "retire-2": {2, 0}, "retire-3": {3, 0}, "retire-never": {0, 0}, "replay-limit-4": {1, 4},
	}
	seen := 0
	for _, s := range p.Settings {
		for _, a := range s.Arms {
			w, ok := want[a.Name]
			if !ok {
				t.Fatalf("unexpected arm %s", a.Name)
			}
			lc, err := p.settingConfig(s, a)
			if err != nil {
				t.Fatal(err)
			}
			pc, err := p.poolConfig(a)
			if err != nil {
				t.Fatal(err)
			}
			if lc.RetireAfter != w[0] || pc.RetireAfter != w[0] || pc.ReplayLimit != w[1] {
				t.Errorf("%s/%s: learner retires after %d, pool after %d with limit %d; want %v", s.Name, a.Name, lc.RetireAfter, pc.RetireAfter, pc.ReplayLimit, w)
			}
			if wantB := map[string]int{"paper": 128}[s.Name]; (wantB == 0 && lc.B != p.B) || (wantB > 0 && lc.B != wantB) {
				t.Errorf("%s/%s: B = %d", s.Name, a.Name, lc.B)
			}
			seen++
		}
	}
	if seen != 18 {
		t.Errorf("%d arms in the causes plan, want 18", seen)
	}
	if _, err := PlanNamed("nope"); !errors.Is(err, ErrConfig) {
		t.Errorf("PlanNamed(nope) = %v", err)
	}
	if ls := LowSignalSpec(); ls.Validate() != nil || PaperSetting().Questions < 100*PaperSetting().B {
		t.Error("low-signal spec invalid or the paper setting's set not much larger than B")
	}
}

func TestFilter(t *testing.T) {
	p, err := FullPlan().Filter([]string{"base"}, []string{"onpolicy", "no-is"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Settings) != 1 || len(p.Settings[0].Arms) != 2 || p.Settings[0].Arms[1].Name != "no-is" || !p.Settings[0].Arms[1].NoIS {
		t.Errorf("Filter(base; onpolicy, no-is) = %+v", p.Settings)
	}
	if p.Runs() != 2*len(p.Seeds) {
		t.Errorf("Runs = %d, want %d", p.Runs(), 2*len(p.Seeds))
	}
	if _, err := FullPlan().Filter(nil, []string{"nonesuch"}); !errors.Is(err, ErrConfig) {
		t.Errorf("Filter with an unknown arm: %v, want ErrConfig", err)
	}
	// A named arm runs in a named setting even where the plan pairs it only
	// with another setting; without named settings the plan's pairing holds.
	mu, err := FullPlan().Filter([]string{"base"}, []string{"onpolicy", "exgrpo-mu2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(mu.Settings) != 1 || len(mu.Settings[0].Arms) != 2 || mu.Settings[0].Arms[1].Mu != 2 {
		t.Errorf("Filter(base; onpolicy, exgrpo-mu2) = %+v", mu.Settings)
	}
	only, err := FullPlan().Filter(nil, []string{"exgrpo-mu2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(only.Settings) != 1 || only.Settings[0].Name != "hard" {
		t.Errorf("Filter(; exgrpo-mu2) = %+v, want the hard setting only", only.Settings)
	}
}

// The ablation arms differ from ExGRPO (delayed start off) in exactly the
// switch they name.
func TestAblationConfigs(t *testing.T) {
	p := FullPlan()
	ex, err := p.learnerConfig(ArmExGRPONoDelay)
	if err != nil {
		t.Fatal(err)
	}
	exPool, _ := p.poolConfig(ArmExGRPONoDelay)
	for _, a := range Ablations() {
		lc, err := p.learnerConfig(a)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		pc, err := p.poolConfig(a)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		diffs := 0
		if lc.Rho != ex.Rho {
			diffs++
		}
		if lc.Selection != ex.Selection {
			diffs++
		}
		if lc.NoPolicyShaping != ex.NoPolicyShaping {
			diffs++
		}
		if lc.NoISCorrection != ex.NoISCorrection {
			diffs++
		}
		if pc.Selection != exPool.Selection {
			diffs++
		}
		lc.Rho, lc.Selection, lc.NoPolicyShaping, lc.NoISCorrection = ex.Rho, ex.Selection, ex.NoPolicyShaping, ex.NoISCorrection
		if diffs != 1 || !reflect.DeepEqual(lc, ex) {
			t.Errorf("arm %s changes %d switches (want 1) or another field of the learner config", a.Name, diffs)
		}
	}
	on, err := p.learnerConfig(ArmOnPolicy)
	if err != nil || !on.OnPolicyOnly || on.Rho != 0 {
		t.Errorf("on-policy arm: %+v, %v; want OnPolicyOnly with rho 0", on, err)
	}
}

func TestAggregateTargetAndReach(t *testing.T) {
	p := QuickPlan()
	p.Settings = p.Settings[:1]
	mk := func(arm string, seed uint64, final float64, evals []Eval) RunResult {
		return RunResult{Setting: "base", Arm: arm, Seed: seed, FinalID: final, Evals: evals,
			Steps: []Step{{FreshGroups: 4, FreshSignal: 1, Replayed: 2, ReplayedSignal: 1, ReplayedAllOK: 1, Buckets: make([]int, p.K)}}}
	}
	runs := []RunResult{
		mk("onpolicy", 1, 0.30, nil),
		mk("exgrpo-nodelay", 1, 0.35, []Eval{{0, 0, 0.2}, {5, 1000, 0.31}}),
		mk("onpolicy", 2, 0.20, nil),
		mk("exgrpo-nodelay", 2, 0.22, []Eval{{0, 0, 0.2}, {5, 1000, 0.22}, {10, 2000, 0.26}}),
	}
	rows := Aggregate(p, runs)
	if len(rows) != 2 || rows[0].Arm != "onpolicy" || rows[1].Arm != "exgrpo-nodelay" {
		t.Fatalf("rows %+v, want onpolicy then exgrpo-nodelay", rows)
	}
	ex := rows[1]
	if math.Abs(ex.Target-0.25) > 1e-12 || ex.Reached != 2 || ex.Reach.Mean != 1500 {
		t.Errorf("exgrpo target %v reached %d mean %v; want 0.25, 2 seeds, 1500 rollouts", ex.Target, ex.Reached, ex.Reach.Mean)
	}
	if ex.ReplayedSignal != 0.5 || ex.ReplayedAllOK != 0.5 || ex.FreshSignal != 0.25 {
		t.Errorf("shares: replayed signal %v, all correct %v, fresh signal %v; want 0.5, 0.5, 0.25", ex.ReplayedSignal, ex.ReplayedAllOK, ex.FreshSignal)
	}
}

// tinyPlan is a plan small enough for a unit test: a 1-layer width-16
// model warmed up for a few steps, 3 steps of 4 questions x 4 rollouts.
func tinyPlan(t *testing.T) (Plan, Setting) {
	t.Helper()
	p := Plan{Name: "tiny", Seeds: []uint64{1}, K: 4, B: 4, LR: 1e-3, MaxNew: task.TrainMaxNew, EvalEvery: 2,
		HeldOut: 6, OODQuestions: 3, EvalSamples: 2, OODSets: []string{"ood-paren"}}
	p.Budget = 3 * p.K * p.B
	pre := task.DefaultPretrainConfig()
	pre.Model = task.ModelConfig()
	pre.Model.Layers, pre.Model.Width, pre.Model.Heads = 1, 16, 2
	pre.Steps, pre.Batch, pre.Warmup = 4, 8, 1
	s := BaseSetting(ArmOnPolicy, ArmExGRPONoDelay)
	s.Pretrain, s.Questions = pre, 40
	p.Settings = []Setting{s}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p, s
}

// A run spends its budget, evaluates at the start, every EvalEvery steps
// and at the end, keeps the pool's bookkeeping consistent, does not modify
// the base model, and is reproducible from its seed.
func TestRunTiny(t *testing.T) {
	p, s := tinyPlan(t)
	e, err := NewEnv(context.Background(), p, s, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := append([]float32(nil), e.Base.Model.Params...)
	for _, a := range s.Arms {
		t.Run(a.Name, func(t *testing.T) {
			var calls []int
			r, m, err := Run(context.Background(), p, e, a, 1, func(n int) { calls = append(calls, n) })
			if err != nil {
				t.Fatal(err)
			}
			if r.Rollouts < p.Budget || r.Rollouts >= p.Budget+p.K*p.B {
				t.Errorf("rollouts %d, want the budget %d reached by the last step", r.Rollouts, p.Budget)
			}
			if len(calls) != len(r.Steps) || calls[len(calls)-1] != r.Rollouts {
				t.Errorf("progress calls %v for %d steps and %d rollouts", calls, len(r.Steps), r.Rollouts)
			}
			if len(r.Evals) < 2 || r.Evals[0].Rollouts != 0 || r.Evals[len(r.Evals)-1].Pass1 != r.FinalID {
				t.Errorf("evals %+v: want one at 0 rollouts and the final one last", r.Evals)
			}
			if _, ok := r.FinalOOD["ood-paren"]; !ok || r.OOD != r.FinalOOD["ood-paren"] {
				t.Errorf("OOD %v, mean %v", r.FinalOOD, r.OOD)
			}
			prev := 0
			for _, st := range r.Steps {
				occ := 0
				for _, n := range st.Buckets {
					occ += n
				}
				if occ != st.Pool || st.Rollouts <= prev {
					t.Errorf("step %d: buckets %v sum %d, pool %d; rollouts %d after %d", st.Step, st.Buckets, occ, st.Pool, st.Rollouts, prev)
				}
				prev = st.Rollouts
				if a.OnPolicy && (st.Mixed || st.Replayed > 0 || st.Pool > 0) {
					t.Errorf("on-policy step %d mixed %t replayed %d pool %d", st.Step, st.Mixed, st.Replayed, st.Pool)
				}
				if !a.OnPolicy && !st.Mixed {
					t.Errorf("step %d not mixed with the delayed start off", st.Step)
				}
			}
			// Issue 16 diagnostics: shares in range, replays counted per
			// question, the retired questions measured.
			replays := 0
			for _, st := range r.Steps {
				replays += st.Replayed
				for _, x := range []float64{st.ReplayedTokenShare, st.ReplayedGradShare, st.FirstClipped, st.Clipped} {
					if !(x >= 0 && x <= 1) {
						t.Errorf("step %d: share %v out of [0, 1]", st.Step, x)
					}
				}
				if st.Replayed > 0 && !(st.ReplayedTokenShare > 0 && st.ReplayedGradShare >= 0) {
					t.Errorf("step %d replays %d groups with token share %v", st.Step, st.Replayed, st.ReplayedTokenShare)
				}
				if st.Replayed == 0 && (st.ReplayedTokenShare != 0 || st.ReplayedGradShare != 0) {
					t.Errorf("step %d replays nothing, shares %v %v", st.Step, st.ReplayedTokenShare, st.ReplayedGradShare)
				}
			}
			if r.Replays.Replays != replays || (replays > 0) != (r.Replays.Questions > 0) {
				t.Errorf("replay stats %+v for %d replayed groups", r.Replays, replays)
			}
			if last := r.Steps[len(r.Steps)-1]; (last.Retired > 0) != (r.RetiredN > 0) || r.RetiredN > p.HeldOut || r.RetiredPass1 < 0 || r.RetiredPass1 > 1 {
				t.Errorf("retired %d at the end, %d evaluated, pass@1 %v", last.Retired, r.RetiredN, r.RetiredPass1)
			}
			if r.SolvedN < r.RetiredN || r.SolvedN > p.HeldOut || r.SolvedPass1 < 0 || r.SolvedPass1 > 1 {
				t.Errorf("solved %d evaluated (pass@1 %v), retired %d", r.SolvedN, r.SolvedPass1, r.RetiredN)
			}
			if reflect.DeepEqual(m.Params, before) {
				t.Error("the trained model equals the base model")
			}
			if !reflect.DeepEqual(e.Base.Model.Params, before) {
				t.Error("Run modified the base model")
			}
			again, _, err := Run(context.Background(), p, e, a, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range []*RunResult{&r, &again} {
				x.WallSeconds = 0
				for i := range x.Steps {
					x.Steps[i].StepSeconds = 0
				}
			}
			if !reflect.DeepEqual(r, again) {
				t.Error("two runs with the same seed differ")
			}
		})
	}
}

// Replays per question: the histogram bins by powers of two, the top-10
// share counts the ten largest.
func TestNewReplayStats(t *testing.T) {
	many := map[string]int{}
	for i := range 20 {
		many[fmt.Sprint(i)] = 1
	}
	many["hot"] = 80
	for _, tc := range []struct {
		name   string
		counts map[string]int
		want   ReplayStats
	}{
		{"none", map[string]int{}, ReplayStats{}},
		{"one", map[string]int{"a": 3}, ReplayStats{Replays: 3, Questions: 1, Max: 3, Top10Share: 1, Hist: []int{0, 1}}},
		{"bins", map[string]int{"a": 1, "b": 2, "c": 4, "d": 7, "e": 8, "z": 0},
			ReplayStats{Replays: 22, Questions: 5, Max: 8, Top10Share: 1, Hist: []int{1, 1, 2, 1}}},
		{"concentrated", many, ReplayStats{Replays: 100, Questions: 21, Max: 80, Top10Share: 0.89, Hist: []int{20, 0, 0, 0, 0, 0, 1}}},
	} {
		if got := NewReplayStats(tc.counts); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestWriteAll(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two tiny runs and draws plots")
	}
	p, s := tinyPlan(t)
	e, err := NewEnv(context.Background(), p, s, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := Results{Plan: p, Command: "test", Commit: "test", Date: "test"}
	for _, a := range s.Arms {
		r, _, err := Run(context.Background(), p, e, a, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Runs = append(res.Runs, r)
	}
	dir := t.TempDir()
	if err := WriteAll(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "table.md", "curves-base.png", "reward-base.png", "entropy-base.png"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	table, err := os.ReadFile(filepath.Join(dir, "table.md"))
	if err != nil || !strings.Contains(string(table), "| gradient share |") || !strings.Contains(string(table), "retired pass@1") || !strings.Contains(string(table), "solved pass@1") {
		t.Errorf("table.md lacks the replay-spread table (%v)", err)
	}
	back, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil || len(back.Runs) != 2 || len(back.Rows) != 2 {
		t.Errorf("ReadResults: %d runs, %d rows, %v", len(back.Runs), len(back.Rows), err)
	}
}

func TestMerge(t *testing.T) {
	a, b := QuickPlan(), QuickPlan()
	a.Settings, b.Settings = a.Settings[:1], a.Settings[1:]
	b.Seeds = []uint64{2}
	ra := Results{Plan: a, Command: "a", Runs: []RunResult{{Setting: "base", Arm: "onpolicy", Seed: 1}}}
	rb := Results{Plan: b, Command: "b", Runs: []RunResult{{Setting: "hard", Arm: "onpolicy", Seed: 2}, {Setting: "base", Arm: "onpolicy", Seed: 1}}}
	m, err := Merge(ra, rb)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Plan.Settings) != 2 || len(m.Runs) != 2 || len(m.Plan.Seeds) != 2 || m.Command != "a; b" {
		t.Errorf("merged: %d settings, %d runs, seeds %v, command %q; want 2, 2 (duplicate dropped), [1 2], \"a; b\"", len(m.Plan.Settings), len(m.Runs), m.Plan.Seeds, m.Command)
	}
	rb.Plan.Budget++
	if _, err := Merge(ra, rb); !errors.Is(err, ErrConfig) {
		t.Errorf("merging different budgets: %v, want ErrConfig", err)
	}
}

func TestArmMu(t *testing.T) {
	p := FullPlan()
	for _, tc := range []struct {
		arm  Arm
		want float64
	}{{ArmExGRPONoDelay, float64(p.K) / 2}, {ArmExGRPOLowMu, 2}} {
		c, err := p.poolConfig(tc.arm)
		if err != nil || c.Mu != tc.want {
			t.Errorf("arm %s: pool Mu %v (%v), want %v", tc.arm.Name, c.Mu, err, tc.want)
		}
	}
}
