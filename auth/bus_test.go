package auth

import (
	"context"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"go.uber.org/zap"
)

// TestNamesMatchBus: the permissions are written against the names package
// bus derives; a rename there must show up here.
func TestNamesMatchBus(t *testing.T) {
	for _, run := range []string{"t1", "Run_2-x"} {
		n, err := newRunNames(run)
		if err != nil {
			t.Fatal(err)
		}
		bn, err := bus.NewNames(run)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bus.Kind{kTasks: bus.Tasks, kRollouts: bus.Rollouts, kScored: bus.Scored, kExperience: bus.Experience, kControl: bus.Control, kDead: bus.Dead}
		if len(kinds) != len(bus.Kinds) {
			t.Fatalf("bus has %d stream kinds, auth knows %d", len(bus.Kinds), len(kinds))
		}
		for k, bk := range kinds {
			if n.stream(k) != bn.Stream(bk) || n.subject(k) != bn.Subject(bk) {
				t.Errorf("%s: auth %s %s, bus %s %s", k, n.stream(k), n.subject(k), bn.Stream(bk), bn.Subject(bk))
			}
		}
		if n.replayBucket() != rsvc.SnapshotBucket(bn) {
			t.Errorf("replay snapshot bucket: auth %s, replay/service %s", n.replayBucket(), rsvc.SnapshotBucket(bn))
		}
		if n.kvBucket() != bn.StateBucket() || n.objBucket() != bn.WeightsBucket() || n.sample() != bn.SampleSubject() {
			t.Errorf("buckets or sample subject differ: %s %s %s vs %s %s %s", n.kvBucket(), n.objBucket(), n.sample(), bn.StateBucket(), bn.WeightsBucket(), bn.SampleSubject())
		}
	}
	if versionKey != bus.VersionKey || actorsConsumer != bus.ActorsConsumer || verifiersConsumer != bus.VerifiersConsumer {
		t.Error("version key or shared consumer names differ from bus")
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
