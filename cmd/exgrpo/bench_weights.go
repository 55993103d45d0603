package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

func init() {
	registerBench("weights", "time for N actors to hold a new ~100 MB policy version vs one Object Store get", runBenchWeights)
}

// runBenchWeights: a learner-side client publishes a policy checkpoint as a
// new version (Object Store put + KV announce); N actor-side clients, each
// on its own connection, watch the version key, fetch the object (streamed
// Get, SHA-256 checked) and load it into a model. The anchor is one plain
// streamed Object Store Get of the same object, measured in the same run.
func runBenchWeights(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench weights", flag.ContinueOnError)
	width := fs.Int("width", 512, "model width C (with --layers 8: ~25M parameters, ~100 MB)")
	layers := fs.Int("layers", 8, "model layers L")
	actorsFlag := fs.String("actors", "1,4,8", "actor counts N to measure")
	reps := fs.Int("reps", 2, "repetitions per N (best reported)")
	load := fs.Bool("load", true, "actors also parse the checkpoint into a model (actor.Builtin.Load), not only hold the bytes")
	quick := fs.Bool("quick", false, "small model (width 256, 4 layers) and one repetition")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		*width, *layers, *reps = 256, 4, 1
	}
	var ns []int
	for _, f := range strings.Split(*actorsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("%w: --actors %q", errUsage, *actorsFlag)
		}
		ns = append(ns, n)
	}
	cfg := task.ModelConfig()
	cfg.Width, cfg.Layers, cfg.Heads = *width, *layers, 8
	m, err := policy.New(cfg, rand.New(rand.NewPCG(1, 2)))
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
	fmt.Printf("weights: checkpoint of %d parameters, %.1f MB, file storage, load into model: %v\n",
		params, float64(len(blob))/1e6, *load)

	version := int64(0)
	// Anchor: one streamed Object Store Get of the object.
	version++
	if err := learner.PublishWeights(ctx, version, blob); err != nil {
		return err
	}
	var anchor time.Duration
	for range max(*reps, 3) {
		t0 := time.Now()
		if err := plainGet(ctx, learner, bus.WeightsObject(version)); err != nil {
			return err
		}
		if d := time.Since(t0); anchor == 0 || d < anchor {
			anchor = d
		}
	}
	fmt.Printf("anchor: one Object Store get: %.3fs (%.0f MB/s)\n", anchor.Seconds(), float64(len(blob))/1e6/anchor.Seconds())

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
		for range *reps {
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
					if *load {
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
		fmt.Printf("N=%d actors: all hold v%d %.3fs after the announce (%.2fx one get); publish %.3fs; publish to all holding %.3fs\n",
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
