package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"go.uber.org/zap"
)

// TestRunNames: the names permissions add to bus.Names agree with the
// package that uses them, and a bad run id is auth's ErrConfig, worded as
// bus words it.
func TestRunNames(t *testing.T) {
	for _, run := range []string{"t1", "Run_2-x"} {
		n, err := newRunNames(run)
		if err != nil {
			t.Fatal(err)
		}
		if n.replayBucket() != rsvc.SnapshotBucket(n.Names) {
			t.Errorf("replay snapshot bucket: auth %s, replay/service %s", n.replayBucket(), rsvc.SnapshotBucket(n.Names))
		}
	}
	for run, want := range map[string]string{
		"":    `auth: invalid config: run id "" must have 1-64 characters`,
		"a.b": `auth: invalid config: run id "a.b" may only use letters, digits, '_' and '-'`,
	} {
		_, err := newRunNames(run)
		if !errors.Is(err, ErrConfig) || err.Error() != want {
			t.Errorf("run %q: error %v, want %s wrapping ErrConfig", run, err, want)
		}
	}
}

// TestBusOpenPerRole: every role opens the run's bus on its own credentials,
// whether it comes first (creating the topology) or later.
func TestBusOpenPerRole(t *testing.T) {
	for _, first := range []Role{Learner, Actor} {
		t.Run("first="+string(first), func(t *testing.T) {
			s, dir := startServer(t)
			order := []Role{first}
			for _, r := range []Role{Learner, Actor, Verifier, Replay, Inspect} {
				if r != first {
					order = append(order, r)
				}
			}
			for _, r := range order {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				nc, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), CredsFile: CredsFile(dir, r), Name: string(r)}, zap.NewNop())
				if err != nil {
					cancel()
					t.Fatalf("%s connect: %v", r, err)
				}
				cfg := bus.DefaultConfig(testRun)
				cfg.OpTimeout = 2 * time.Second
				b, err := bus.Open(ctx, nc, cfg, zap.NewNop())
				if err != nil {
					cancel()
					t.Fatalf("%s opens the bus: %v", r, Explain(nc, "", err))
				}
				if r == Learner { // the learner dead-letters poison messages
					w, err := b.NewDeadWatcher(ctx, "learner")
					if err != nil {
						t.Fatal(err)
					}
					_ = w
					if err := nc.FlushTimeout(5 * time.Second); err != nil {
						t.Fatal(err)
					}
					if err := nc.LastError(); err != nil {
						t.Fatalf("learner's dead watcher: %v", err)
					}
				}
				cancel()
				nc.Close()
			}
		})
	}
}
