package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/exgrpo/exgrpo/inspect"
	"go.uber.org/zap"
)

func init() {
	register("inspect", "read-only views of a run's streams and replay pool: buckets, question, step, streams, serve (web page)", runInspect)
}

func runInspect(ctx context.Context, args []string) error {
	log, err := newRoleLogger("warn")
	if err != nil {
		return err
	}
	defer log.Sync()
	err = inspect.Main(ctx, args, os.Stdout, os.Stderr, log.Named("inspect").WithOptions(zap.AddStacktrace(zap.FatalLevel)))
	if errors.Is(err, inspect.ErrUsage) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}
