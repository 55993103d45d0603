package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/experiment"
	"github.com/exgrpo/exgrpo/internal/progress"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

func init() {
	register("experiment", "on-policy vs ExGRPO, ablations, weak base and hard set at equal rollout budget (--quick: ~10 min)", runExperiment)
}

func expList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// buildRevision, when set at link time (-ldflags "-X main.buildRevision=..."),
// names the commit a binary built outside a git checkout comes from.
var buildRevision string

// buildCommit is the VCS revision the binary was built from, with
// "+modified" when the tree had uncommitted changes.
func buildCommit() string {
	if buildRevision != "" {
		return buildRevision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, mod := "unknown", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				mod = "+modified"
			}
		}
	}
	return rev + mod
}

func runExperiment(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("experiment", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "the quick plan (about 10 minutes): on-policy vs ExGRPO on the base and hard settings, one seed")
	planName := fs.String("plan", "full", "the plan: full (issue 8's arms), quick (as --quick), causes (issue 16: retirement, replay limit, the paper's proportions, low signal)")
	out := fs.String("out", "", "output directory (default results/experiment-<plan>)")
	settings := fs.String("settings", "", "comma-separated settings to run (full: base, weak, hard; causes: base, paper, lowsignal, hard); default all of the plan")
	arms := fs.String("arms", "", "comma-separated arms to run (full: onpolicy, exgrpo, exgrpo-nodelay, exgrpo-mu2, no-qsel, no-tsel, no-shaping, no-is, high-entropy, rho-0.25, rho-0.75; causes: onpolicy, exgrpo-nodelay, retire-2, retire-3, retire-never, replay-limit-4); default all")
	seeds := fs.String("seeds", "", "comma-separated seeds, overriding the plan's")
	budget := fs.Int("budget", 0, "fresh rollouts per run, overriding the plan's")
	lr := fs.Float64("lr", 0, "learning rate, overriding the plan's")
	hardN := fs.Int("hard-questions", 0, "size of the hard fixed question set, overriding the plan's")
	evalEvery := fs.Int("eval-every", 0, "steps between held-out evaluations, overriding the plan's")
	baseSteps := fs.Int("base-steps", 0, "warm-up steps of the base model of the base and hard settings, overriding task.DefaultPretrainConfig's (to repeat an experiment on an earlier default base)")
	cacheDir := fs.String("cache-dir", "", "base-model cache (default <out>/base-models: pretrained by this tree's task code, so a stale shared cache cannot leak in)")
	resume := fs.Bool("resume", false, "keep the runs already in <out>/results.json and run only the missing ones")
	replot := fs.Bool("replot", false, "only rewrite table.md and the plots from <out>/results.json")
	listOnly := fs.Bool("list", false, "print the plan and exit")
	merge := fs.String("merge", "", "comma-separated output directories whose results.json to merge into --out (then table.md and plots)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	plan, err := experiment.PlanNamed(*planName)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *quick {
		plan = experiment.QuickPlan()
	}
	if *out == "" {
		*out = filepath.Join("results", "experiment-"+plan.Name)
	}
	resultsPath := filepath.Join(*out, "results.json")
	if *merge != "" {
		var all []experiment.Results
		for _, d := range expList(*merge) {
			r, err := experiment.ReadResults(filepath.Join(d, "results.json"))
			if err != nil {
				return err
			}
			all = append(all, r)
		}
		m, err := experiment.Merge(all...)
		if err != nil {
			return err
		}
		m.Date = time.Now().UTC().Format(time.RFC3339)
		return experiment.WriteAll(*out, m)
	}
	if *replot {
		r, err := experiment.ReadResults(resultsPath)
		if err != nil {
			return err
		}
		return experiment.WriteAll(*out, r)
	}
	if plan, err = plan.Filter(expList(*settings), expList(*arms)); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *seeds != "" {
		plan.Seeds = nil
		for _, s := range expList(*seeds) {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: --seeds %q: %v", errUsage, *seeds, err)
			}
			plan.Seeds = append(plan.Seeds, v)
		}
	}
	if *budget > 0 {
		plan.Budget = *budget
	}
	if *lr > 0 {
		plan.LR = *lr
	}
	if *evalEvery > 0 {
		plan.EvalEvery = *evalEvery
	}
	if *hardN > 0 {
		for i := range plan.Settings {
			if plan.Settings[i].Name == "hard" {
				plan.Settings[i] = experiment.HardSetting(*hardN, plan.Settings[i].Arms...)
			}
		}
	}
	if *baseSteps > 0 {
		for i := range plan.Settings {
			if plan.Settings[i].Name != "weak" {
				plan.Settings[i].Pretrain.Steps = *baseSteps
			}
		}
	}
	if err := plan.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *cacheDir == "" {
		*cacheDir = filepath.Join(*out, "base-models")
	}
	fmt.Fprintf(os.Stderr, "exgrpo experiment %s: %d run(s) of %d fresh rollouts (K = %d, B = %d, lr %g), seeds %v\n",
		plan.Name, plan.Runs(), plan.Budget, plan.K, plan.B, plan.LR, plan.Seeds)
	for _, s := range plan.Settings {
		var names []string
		for _, a := range s.Arms {
			names = append(names, a.Name)
		}
		fmt.Fprintf(os.Stderr, "  %-5s %s\n        arms: %s\n", s.Name, s.About, strings.Join(names, ", "))
	}
	if *listOnly {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(*out, "checkpoints"), 0o755); err != nil {
		return err
	}

	res := experiment.Results{Plan: plan, Command: "exgrpo experiment " + strings.Join(args, " "), Commit: buildCommit(),
		Date: time.Now().UTC().Format(time.RFC3339)}
	done := map[string]bool{}
	key := func(setting, arm string, seed uint64) string { return fmt.Sprintf("%s/%s/%d", setting, arm, seed) }
	if *resume {
		if old, err := experiment.ReadResults(resultsPath); err == nil {
			for _, r := range old.Runs {
				res.Runs = append(res.Runs, r)
				done[key(r.Setting, r.Arm, r.Seed)] = true
			}
			fmt.Fprintf(os.Stderr, "resuming: %d run(s) already done\n", len(res.Runs))
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}

	total := int64(plan.Runs()) * int64(plan.Budget)
	bar := progress.New(os.Stderr, "experiment (rollouts)", total, 25)
	var spent int64
	i := 0
	for _, s := range plan.Settings {
		env, err := experiment.NewEnv(ctx, plan, s, *cacheDir, func(p task.PretrainProgress) {
			bar.Set(spent, fmt.Sprintf("%s: warm-up of the base model %d/%d", s.Name, p.Step, p.Steps))
		})
		if err != nil {
			return err
		}
		for _, a := range s.Arms {
			for _, seed := range plan.Seeds {
				i++
				if done[key(s.Name, a.Name, seed)] {
					spent += int64(plan.Budget)
					bar.Set(spent, "resumed")
					continue
				}
				desc := fmt.Sprintf("run %d/%d %s/%s seed %d", i, plan.Runs(), s.Name, a.Name, seed)
				bar.Set(spent, desc)
				r, m, err := experiment.Run(ctx, plan, env, a, seed, func(n int) {
					bar.Set(spent+int64(min(n, plan.Budget)), desc)
				})
				if err != nil {
					return fmt.Errorf("%s: %w", desc, err)
				}
				spent += int64(plan.Budget)
				bar.Set(spent, desc)
				name := fmt.Sprintf("%s-%s-s%d.safetensors", s.Name, a.Name, seed)
				ck := policy.Checkpoint{Model: m, Tokenizer: env.Base.Tokenizer, Meta: map[string]string{
					"experiment.setting": s.Name, "experiment.arm": a.Name, "experiment.seed": strconv.FormatUint(seed, 10)}}
				if err := policy.SaveFile(filepath.Join(*out, "checkpoints", name), ck); err != nil {
					return err
				}
				r.Checkpoint = filepath.Join("checkpoints", name)
				res.Runs = append(res.Runs, r)
				// Written after every run, so an interrupted experiment keeps
				// what it finished (--resume continues it).
				if err := experiment.WriteAll(*out, res); err != nil {
					return err
				}
				bar.Clear()
				fmt.Fprintf(os.Stderr, "%s: held-out %.3f -> %.3f, OOD %.3f -> %.3f, %d steps, %.0f s; %d replays over %d questions (top-10 %.0f%%), retired pass@1 %.3f (n = %d)\n",
					desc, r.BaseID, r.FinalID, r.BaseOODM, r.OOD, len(r.Steps), r.WallSeconds, r.Replays.Replays, r.Replays.Questions, 100*r.Replays.Top10Share, r.RetiredPass1, r.RetiredN)
			}
		}
	}
	bar.Finish()
	if err := experiment.WriteAll(*out, res); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(*out, "table.md")); err == nil {
		os.Stdout.Write(b)
	}
	fmt.Fprintf(os.Stderr, "results in %s (results.json, table.md, *.png, checkpoints/)\n", *out)
	return nil
}
