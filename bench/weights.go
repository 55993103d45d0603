package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// WeightsConfig is `exgrpo bench weights`.
type WeightsConfig struct {
	Width, Layers int   // model width C and layers L (512 x 8: ~25M parameters, ~100 MB)
	Actors        []int // actor counts N to measure
	Reps          int   // repetitions per N (best reported)
	Load          bool  // actors also parse the checkpoint into a model, not only hold the bytes
	Quick         bool  // small model (width 256, 4 layers) and one repetition
}

// DefaultWeights is the configuration BENCHMARKS.md reports.
func DefaultWeights() WeightsConfig {
	return WeightsConfig{Width: 512, Layers: 8, Actors: []int{1, 4, 8}, Reps: 2, Load: true}
}

// Weights: a learner-side client publishes a policy checkpoint as a
// new version (Object Store put + KV announce); N actor-side clients, each
// on its own connection, watch the version key, fetch the object (streamed
// Get, SHA-256 checked) and load it into a model. The anchor is one plain
// streamed Object Store Get of the same object, measured in the same run.
func Weights(ctx context.Context, w io.Writer, cfg WeightsConfig) error {
	if cfg.Quick {
		cfg.Width, cfg.Layers, cfg.Reps = 256, 4, 1
	}
	ns := cfg.Actors
	for _, n := range ns {
		if n < 1 {
			return fmt.Errorf("%w: actor count %d < 1", ErrConfig, n)
		}
	}
	mcfg := task.ModelConfig()
	mcfg.Width, mcfg.Layers, mcfg.Heads = cfg.Width, cfg.Layers, 8
	m, err := policy.New(mcfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := policy.WriteCheckpoint(&buf, policy.Checkpoint{Model: m, Tokenizer: task.BuiltinTokenizer()}); err != nil {
		return err
	}
	blob, params := buf.Bytes(), m.NumParams()
	m = nil // only the bytes travel

	dir, err := os.MkdirTemp("", "exgrpo-bench-weights-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scfg := bus.DefaultServerConfig(dir)
	scfg.Port = -1
	srv, err := bus.StartServer(scfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	open := func(name string) (*nats.Conn, *bus.Bus, error) {
		nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: name}, zap.NewNop())
		if err != nil {
			return nil, nil, err
		}
		c := bus.DefaultConfig("wbench")
		c.KeepWeights = 2
		b, err := bus.Open(ctx, nc, c, zap.NewNop())
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return nc, b, nil
	}
	lnc, learner, err := open("learner")
	if err != nil {
		return err
	}
	defer lnc.Close()
	fmt.Fprintf(w, "weights: checkpoint of %d parameters, %.1f MB, file storage, load into model: %v\n",
		params, float64(len(blob))/1e6, cfg.Load)

	version := int64(0)
	// Anchor: one streamed Object Store Get of the object.
	version++
	if err := learner.PublishWeights(ctx, version, blob); err != nil {
		return err
	}
	var anchor time.Duration
	for range max(cfg.Reps, 3) {
		t0 := time.Now()
		if err := plainGet(ctx, learner, bus.WeightsObject(version)); err != nil {
			return err
		}
		if d := time.Since(t0); anchor == 0 || d < anchor {
			anchor = d
		}
	}
	fmt.Fprintf(w, "anchor: one Object Store get: %.3fs (%.0f MB/s)\n", anchor.Seconds(), float64(len(blob))/1e6/anchor.Seconds())

	for _, n := range ns {
		type actorConn struct {
			nc *nats.Conn
			b  *bus.Bus
			w  *bus.VersionWatch
		}
		acts := make([]actorConn, n)
		for i := range acts {
			nc, b, err := open(fmt.Sprintf("actor-%d", i))
			if err != nil {
				return err
			}
			w, err := b.WatchVersion(ctx)
			if err != nil {
				return err
			}
			acts[i] = actorConn{nc, b, w}
		}
		var bestHold, bestTotal, put time.Duration
		for range cfg.Reps {
			version++
			g, gctx := errgroup.WithContext(ctx)
			done := make([]time.Time, n)
			for i, a := range acts {
				g.Go(func() error {
					v, err := a.w.Wait(gctx, version)
					if err != nil {
						return err
					}
					data, err := a.b.FetchWeights(gctx, v)
					if err != nil {
						return err
					}
					if cfg.Load {
						if err := actor.NewBuiltin().Load(v, data); err != nil {
							return err
						}
					}
					done[i] = time.Now()
					return nil
				})
			}
			t0 := time.Now()
			if err := learner.PublishWeights(ctx, version, blob); err != nil {
				return err
			}
			announced := time.Now()
			if err := g.Wait(); err != nil {
				return err
			}
			sort.Slice(done, func(i, j int) bool { return done[i].Before(done[j]) })
			hold, total := done[n-1].Sub(announced), done[n-1].Sub(t0)
			if bestHold == 0 || hold < bestHold {
				bestHold, bestTotal, put = hold, total, announced.Sub(t0)
			}
		}
		fmt.Fprintf(w, "N=%d actors: all hold v%d %.3fs after the announce (%.2fx one get); publish %.3fs; publish to all holding %.3fs\n",
			n, version, bestHold.Seconds(), bestHold.Seconds()/anchor.Seconds(), put.Seconds(), bestTotal.Seconds())
		for _, a := range acts {
			a.w.Stop()
			a.nc.Close()
		}
	}
	return nil
}

// plainGet is the anchor: Info, then a streamed Get into a buffer of that size.
func plainGet(ctx context.Context, b *bus.Bus, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	info, err := b.Weights.GetInfo(ctx, name)
	if err != nil {
		return err
	}
	res, err := b.Weights.Get(ctx, name)
	if err != nil {
		return err
	}
	defer res.Close()
	buf := make([]byte, info.Size)
	_, err = io.ReadFull(res, buf)
	return err
}
