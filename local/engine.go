package local

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/engine/server"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/rundir"
	"go.uber.org/zap"
)

// engineActor starts actor i on an engine backend: a built-in engine server
// in cfg.Engine's API serving the base model (its own role, added with
// addRole), and the actor role (returned) pointed at it. The server's
// listener is bound here, so the actor's first requests wait for it to
// serve rather than fail.
func engineActor(ctx context.Context, cfg Config, base policy.Checkpoint, dir *rundir.Dir, i int, b *bus.Bus,
	acfg actor.Config, log *zap.Logger, reg *metrics.Registry, addRole func(string, func(context.Context) error)) (func(context.Context) error, error) {
	edir := filepath.Join(dir.Path, "engines", fmt.Sprintf("actor-%d", i))
	if err := os.MkdirAll(edir, 0o755); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	basePath := filepath.Join(edir, "base.safetensors")
	if err := policy.SaveFile(basePath, policy.Checkpoint{Model: base.Model, Tokenizer: base.Tokenizer}); err != nil {
		return nil, fmt.Errorf("local: engine base checkpoint: %w", err)
	}
	scfg := server.DefaultConfig(cfg.Engine, basePath)
	scfg.Workers = 2
	srv, err := server.New(scfg)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local: engine server: %w", err)
	}
	addRole(fmt.Sprintf("engine-%d", i), func(ctx context.Context) error { return srv.Serve(ctx, ln) })
	ecfg := actor.DefaultEngineConfig(cfg.Engine, "http://"+ln.Addr().String())
	ecfg.WeightsDir = filepath.Join(edir, "weights")
	return func(ctx context.Context) error {
		e, err := actor.NewEngine(ctx, ecfg, log)
		if err != nil {
			return err
		}
		a, err := actor.New(b, e, acfg, log, reg)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	}, nil
}
