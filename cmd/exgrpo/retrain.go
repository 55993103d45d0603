package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/retrain"
)

func init() {
	register("retrain", "re-run the learner over a finished run's recorded experience (no actors) under other objective settings (beta, shaping, c-ent, lr, ...)", runRetrain)
}

func runRetrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("retrain", flag.ContinueOnError)
	var o retrain.Options
	fs.StringVar(&o.RunDir, "run-dir", "", "the finished run's directory (config.json and its JetStream store, opened read-only)")
	url := fs.String("nats", "", "read the record from this live server instead of the run directory's store")
	creds := fs.String("creds", "", "NATS credentials file for --nats (read-only inspect credentials suffice)")
	fs.StringVar(&o.Run, "run", "", "run id (default: config.json's)")
	fs.StringVar(&o.ConfigFile, "config", "", "the run's config.json (default <run-dir>/config.json)")
	fs.StringVar(&o.Out, "out", "", "output directory: final.safetensors and summary.json (default retrain/<run>-<time>)")
	fs.StringVar(&o.CacheDir, "cache-dir", "", "base-model cache (default the run's)")
	fs.IntVar(&o.HeldOut, "heldout", 0, "held-out questions evaluated (default the run's)")
	fs.IntVar(&o.EvalSamples, "eval-samples", 0, "samples per held-out question (default the run's)")
	// Objective settings (E10-E14); unset flags keep the run's values.
	beta := fs.Float64("beta", 0, "policy-shaping constant of f(w) = w/(w+beta) (E11)")
	noShaping := fs.Bool("no-shaping", false, "replayed tokens train with -A*w, no policy shaping (E11)")
	noIS := fs.Bool("no-is", false, "no importance-sampling correction for replayed tokens (E11)")
	cEnt := fs.Float64("c-ent", 0, "entropy bonus coefficient (E13)")
	lr := fs.Float64("lr", 0, "AdamW learning rate (E14)")
	eps := fs.Float64("eps", 0, "PPO clip range before the delayed start (E10)")
	mb := fs.Int("minibatches", 0, "optimiser steps per step (E14)")
	clip := fs.Float64("clip-norm", 0, "global gradient-norm clip (E14)")
	wd := fs.Float64("weight-decay", 0, "AdamW weight decay (E14)")
	trunc := fs.Float64("trunc-cap", 0, "truncate fresh tokens' importance weight at this value (0 = off)")
	compare := fs.String("compare", "", "only compare: comma-separated --out directories of retrains of different runs under one change; "+
		"prints each against its run and the paired t-test over them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *compare != "" {
		dirs := strings.Split(*compare, ",")
		sums, t, err := retrain.Compare(dirs)
		if errors.Is(err, retrain.ErrConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if err != nil {
			return err
		}
		retrain.WriteComparison(os.Stdout, dirs, sums, t)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if o.RunDir == "" && (*url == "" || o.ConfigFile == "") {
		return fmt.Errorf("%w: give --run-dir, or --nats with --run and --config", errUsage)
	}
	if *url != "" {
		o.Conn = &bus.ConnConfig{URL: *url, CredsFile: *creds, Name: "retrain"}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.Edit = func(c *learner.Config) {
		if set["beta"] {
			c.Beta = *beta
		}
		if set["no-shaping"] {
			c.NoPolicyShaping = *noShaping
		}
		if set["no-is"] {
			c.NoISCorrection = *noIS
		}
		if set["c-ent"] {
			c.CEnt = *cEnt
		}
		if set["lr"] {
			c.LR = *lr
		}
		if set["eps"] {
			c.Eps = *eps
		}
		if set["minibatches"] {
			c.MiniBatches = *mb
		}
		if set["clip-norm"] {
			c.ClipNorm = *clip
		}
		if set["weight-decay"] {
			c.WeightDecay = *wd
		}
		if set["trunc-cap"] {
			c.TruncCap = *trunc
		}
	}
	if o.Out == "" {
		name := o.Run
		if name == "" {
			name = filepath.Base(filepath.Clean(o.RunDir))
		}
		o.Out = filepath.Join("retrain", name+"-"+time.Now().UTC().Format("20060102-150405"))
	}
	start := time.Now()
	sum, err := retrain.Run(ctx, o)
	if errors.Is(err, retrain.ErrConfig) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	changed := strings.Join(sum.Changed, ", ")
	if changed == "" {
		changed = "none (the run's own settings)"
	}
	fmt.Printf("retrained %d steps (%d replayed groups) in %.0f s; changed: %s\n", sum.Steps, sum.Replayed, time.Since(start).Seconds(), changed)
	fmt.Printf("held-out pass@1 (%d questions x %d samples): base %.3f, retrained %.3f", sum.HeldOutN, sum.Samples, sum.BasePass1, sum.FinalPass1)
	if sum.RunPass1 > 0 {
		fmt.Printf(", the run's own %.3f", sum.RunPass1)
	}
	fmt.Println()
	if sum.SameWeights != nil {
		fmt.Printf("weights equal to the run's final checkpoint bit for bit: %v\n", *sum.SameWeights)
	}
	fmt.Fprintf(os.Stderr, "written: %s, %s\n", sum.Checkpoint, filepath.Join(o.Out, "summary.json"))
	return nil
}
