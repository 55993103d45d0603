package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/verifier/worker"
)

func init() {
	register("verifier", "a verifier worker: grades ROLLOUTS, publishing verdicts to SCORED (run any number)", runVerifierRole)
}

func runVerifierRole(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verifier", flag.ContinueOnError)
	bf := addBusFlags(fs)
	cfg := worker.DefaultConfig()
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "trajectories graded at once (default one per core)")
	fs.IntVar(&cfg.VerdictBatch, "verdict-batch", cfg.VerdictBatch, "most verdicts in one SCORED message (those graded while earlier ones wait for their publish acks go together; 1 = one message per verdict)")
	fs.DurationVar(&cfg.ItemTimeout, "item-timeout", cfg.ItemTimeout, "time bound per trajectory; past it the reward is 0 with reason timeout")
	fs.BoolVar(&cfg.WatchDead, "watch-dead", false, "also move messages past their max deliveries to DEAD (needs advisory permissions; normally the learner does it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(bf.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	nc, b, err := bf.open(ctx, "verifier", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := metrics.New(worker.Role, bf.run, true)
	w, err := worker.New(b, cfg, log, reg)
	if err != nil {
		return err
	}
	return bf.serve(ctx, nc, log, reg, w.Run)
}
