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
	fs.IntVar(&cfg.DeadAfter, "dead-after", cfg.DeadAfter, "a task whose sampling fails on this delivery goes to DEAD with the reason (0: never)")
	ef := addEngineFlags(fs)
	fs.StringVar(&cfg.WeightsDir, "weights-dir", cfg.WeightsDir, "where versions from the Object Store are rebuilt (default a per-actor directory under the temp dir); an engine reloads them from here, so it must see this path")
	fs.BoolVar(&cfg.WeightsCheckSizes, "weights-check-sizes", cfg.WeightsCheckSizes, "shared-filesystem versions: check file sizes only, not digests")
	ckpt := fs.String("checkpoint", "", "start from this policy checkpoint as version 0 instead of waiting for the learner's weights (built-in policy only)")
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
	var pol actor.Policy
	if ef.api != "" {
		if *ckpt != "" {
			return fmt.Errorf("%w: --checkpoint is for the built-in policy; an engine loads the learner's versions", errUsage)
		}
		ecfg, err := ef.config()
		if err != nil {
			return err
		}
		if pol, err = actor.NewEngine(ctx, ecfg, log); err != nil {
			return err
		}
	} else if pol, err = builtinPolicy(*ckpt); err != nil {
		return err
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

// builtinPolicy is the built-in backend, from a checkpoint as version 0
// when one is given.
func builtinPolicy(ckpt string) (actor.Policy, error) {
	if ckpt == "" {
		return actor.NewBuiltin(), nil
	}
	c, err := policy.LoadFile(ckpt)
	if err != nil {
		return nil, fmt.Errorf("actor: %w", err)
	}
	return actor.NewBuiltinFrom(0, c)
}
