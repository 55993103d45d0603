package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

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
		// One "usage:" in the message, not "usage: inspect: usage: ...".
		return fmt.Errorf("%w: %s", errUsage, strings.TrimPrefix(err.Error(), inspect.ErrUsage.Error()+": "))
	}
	return err
}
