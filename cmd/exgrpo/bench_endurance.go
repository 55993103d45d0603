package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/exgrpo/exgrpo/bench/endurance"
)

func benchEndurance(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("bench endurance", flag.ContinueOnError)
	dir := fs.String("dir", "", "working directory: logs, JetStream store, checkpoints, report (default a new temporary directory)")
	c := endurance.DefaultConfig("")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long faults are injected")
	fs.DurationVar(&c.FaultEvery, "fault-every", c.FaultEvery, "mean time between faults")
	fs.IntVar(&c.Actors, "actors", c.Actors, "actor processes")
	fs.IntVar(&c.Verifiers, "verifiers", c.Verifiers, "verifier processes")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "fault schedule seed")
	fs.Float64Var(&c.MaxGrowth, "max-growth", c.MaxGrowth, "memory growth after warm-up allowed for long-lived actors, verifiers and the learner")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "exgrpo-endurance-")
		if err != nil {
			return err
		}
		*dir = d
	}
	c.Dir, c.Log = *dir, os.Stderr
	start := time.Now()
	rep, err := endurance.Run(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprint(w, rep.Text())
	png, err := rep.PlotMemory(*dir)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	js := filepath.Join(*dir, "endurance.json")
	if err := os.WriteFile(js, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "wall %v; report %s, memory curve %s, logs in %s\n", time.Since(start).Round(time.Second), js, png, *dir)
	if f := rep.Failures(); len(f) > 0 {
		return fmt.Errorf("endurance: %d promises broken", len(f))
	}
	return nil
}
