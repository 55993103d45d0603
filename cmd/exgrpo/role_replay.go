package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/metrics"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
)

func init() {
	register("replay", "the replay service: folds step reports into the experience pool, answers the learner (one per run)", runReplayRole)
}

func runReplayRole(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	bf := addBusFlags(fs)
	c := local.DefaultConfig()
	trainFlags(fs, &c)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.RunDir = "-" // no run directory in this role
	c.Normalize()
	if err := bf.check(); err != nil {
		return err
	}
	// The learner's settings matter here too: K and the replayed fraction
	// shape the pool (--rho 2 is refused before connecting).
	if err := c.Learner.Learner.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := c.Replay.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(bf.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	nc, b, err := bf.open(ctx, "replay", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := metrics.New("replay", bf.run, true)
	svc, err := rsvc.New(c.Replay, b, rsvc.NewMetrics(reg.Registerer()), log)
	if err != nil {
		return err
	}
	return bf.serve(ctx, nc, log, reg, svc.Run)
}
