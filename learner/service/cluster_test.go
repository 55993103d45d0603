package service

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestNodeLossCluster: the learner, the replay service and a rollout
// stand-in run on a 3-node cluster at replication 3 (the compose cluster's
// shape); the node the learner is connected to is shut down mid-run. The
// learner must reconnect to another node and go on training within a
// bounded time (the compose test once saw it stall instead).
func TestNodeLossCluster(t *testing.T) {
	bustest.NodeLossRounds(t, nodeLoss)
}

func nodeLoss(t *testing.T) {
	nodes := bustest.Cluster(t, 3)
	bcfg := bus.DefaultConfig("lc")
	bcfg.Replicas = 3
	bcfg.TaskAckWait = 5 * time.Second // tasks held by a lost connection come back soon
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	core, logs := observer.New(zapcore.InfoLevel)
	llog := zap.New(core)
	lb := bustest.OpenCluster(ctx, t, nodes, "learner", bcfg, llog)
	others := bustest.OpenCluster(ctx, t, nodes, "others", bcfg, zap.NewNop())

	train, base := tinyTask(t)
	cfg := testConfig(0)
	cfg.GatherTimeout = 20 * time.Second
	steps := make(chan StepResult, 1024)
	svc, err := New(cfg, Deps{Bus: lb, Model: base, Tokenizer: task.BuiltinTokenizer(), Problems: train,
		Check: allCorrect, OnStep: func(r StepResult) { steps <- r }, Log: llog})
	if err != nil {
		t.Fatal(err)
	}

	bg, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The other roles restart on failure, as compose restarts them.
	again := func(name string, run func(ctx context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bg.Err() == nil {
				if err := run(bg); err != nil && bg.Err() == nil {
					t.Logf("%s: %v (restarting)", name, err)
					time.Sleep(time.Second)
				}
			}
		}()
	}
	tasks := make(chan wire.Task, 1)
	again("rollouts", func(ctx context.Context) error { return rollouts(ctx, t, others, tasks) })
	again("replay", func(ctx context.Context) error {
		rs, err := rsvc.New(testReplayConfig(), others, nil, zap.NewNop())
		if err != nil {
			return err
		}
		return rs.Run(ctx)
	})
	lerr := make(chan error, 1)
	go func() { lerr <- svc.Run(bg) }()
	defer func() {
		stop()
		wg.Wait()
		if err := <-lerr; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("learner: %v", err)
		}
	}()

	waitSteps := func(n int, within time.Duration, what string) {
		t.Helper()
		timer := time.NewTimer(within)
		defer timer.Stop()
		for i := 0; i < n; i++ {
			select {
			case <-steps:
			case err := <-lerr:
				lerr <- err
				t.Fatalf("%s: learner stopped: %v", what, err)
			case <-timer.C:
				t.Fatalf("%s: %d of %d steps within %s; learner log:\n%s", what, i, n, within, bustest.LogDump(logs))
			}
		}
	}
	waitSteps(3, 90*time.Second, "before the node loss")
	name := lb.NC.ConnectedServerName()
	var victim *bus.Server
	for _, s := range nodes {
		if s.NATS().Name() == name {
			victim = s
		}
	}
	if victim == nil {
		t.Fatalf("learner connected to %q, not one of the nodes", name)
	}
	victim.Shutdown()
	waitSteps(4, 2*time.Minute, "after the node "+name+" was shut down")
}

// TestConnectionLostIsFatal: a learner whose NATS connection stays down
// longer than ConnLoss stops with bus.ErrConnectionLost instead of waiting.
func TestConnectionLostIsFatal(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(0)
	cfg.ConnLoss = 500 * time.Millisecond
	svc, err := New(cfg, Deps{Bus: e.b, Model: e.base, Tokenizer: task.BuiltinTokenizer(), Problems: e.train, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	// No replay service and no actors: the learner waits on the bus when
	// the server goes.
	bustest.Eventually(t, 30*time.Second, "version 0 announced", func() bool {
		v, err := e.b.LatestVersion(ctx)
		return err == nil && v == 0
	})
	e.srv.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrConnectionLost) {
			t.Fatalf("Run returned %v, want an error wrapping bus.ErrConnectionLost", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after the connection was lost")
	}
}
