package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/policy"
)

func init() {
	register("actor", "an actor: samples TASKS with the current policy into ROLLOUTS (run any number)", runActorRole)
}

func runActorRole(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("actor", flag.ContinueOnError)
	bf := addBusFlags(fs)
	cfg := actor.DefaultConfig()
	fs.StringVar(&cfg.ID, "id", cfg.ID, "actor id recorded in its trajectories")
	fs.DurationVar(&cfg.WeightsWait, "weights-wait", cfg.WeightsWait, "how long a task waits for the policy version it needs before going back to the queue")
	fs.StringVar(&cfg.WeightsDir, "weights-dir", cfg.WeightsDir, "where versions from the Object Store are rebuilt (default a per-actor directory under the temp dir)")
	fs.BoolVar(&cfg.WeightsCheckSizes, "weights-check-sizes", cfg.WeightsCheckSizes, "shared-filesystem versions: check file sizes only, not digests")
	ckpt := fs.String("checkpoint", "", "start from this policy checkpoint as version 0 instead of waiting for the learner's weights")
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
	pol := actor.NewBuiltin()
	if *ckpt != "" {
		c, err := policy.LoadFile(*ckpt)
		if err != nil {
			return fmt.Errorf("actor: %w", err)
		}
		if pol, err = actor.NewBuiltinFrom(0, c); err != nil {
			return err
		}
	}
	nc, b, err := bf.open(ctx, "actor-"+cfg.ID, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := metrics.New(actor.Role, bf.run, true)
	a, err := actor.New(b, pol, cfg, log, reg)
	if err != nil {
		return err
	}
	return bf.serve(ctx, nc, log, reg, a.Run)
}
