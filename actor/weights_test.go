package actor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
	"math/rand/v2"
)

func smallModel(t *testing.T, seed uint64) *policy.Model {
	cfg := task.ModelConfig()
	cfg.Width, cfg.Layers, cfg.Heads = 32, 1, 2
	m, err := policy.New(cfg, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestActorServesTransferredVersions: with either transport, the actor
// loads the version a task needs from what the learner published and
// samples with exactly those weights.
func TestActorServesTransferredVersions(t *testing.T) {
	for _, transport := range []string{transfer.TransportFS, transfer.TransportObjects} {
		t.Run(transport, func(t *testing.T) {
			srv := bustest.Server(t)
			lb := bustest.Open(t, srv, bus.DefaultConfig("aw"))
			ab := bustest.Open(t, srv, bus.DefaultConfig("aw"))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			pub, err := transfer.NewPublisher(lb, transfer.DefaultConfig(transport, t.TempDir()), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			tok := task.BuiltinTokenizer()
			m := smallModel(t, 1)
			for v := int64(1); v <= 2; v++ {
				if v == 2 {
					m = smallModel(t, 2)
				}
				if err := pub.PublishModel(ctx, v, m, tok); err != nil {
					t.Fatal(err)
				}
			}
			pol := NewBuiltin()
			runActor(t, ab, pol, "a1")
			publishTasks(t, ctx, lb, wire.Task{TaskID: "0/q1", Step: 0, QuestionID: "q1", Prompt: "1+1", Answer: "2", Kind: "arith",
				Samples: 2, MinVersion: 2, Seed: 5, MaxNew: 4})
			bustest.Eventually(t, 30*time.Second, "the task's trajectories are stored", func() bool {
				ids, _ := rolloutIDs(t, ctx, lb)
				return len(ids) == 2
			})
			st, _ := lb.Stream(ctx, bus.Rollouts)
			msg, err := st.GetMsg(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			var tr wire.Trajectory
			if err := wire.Decode(msg.Data, &tr); err != nil {
				t.Fatal(err)
			}
			if tr.PolicyVersion != 2 {
				t.Errorf("trajectory of policy version %d, want 2", tr.PolicyVersion)
			}
			if !reflect.DeepEqual(pol.model.Params, m.Params) {
				t.Errorf("the actor's weights differ from the published v2")
			}
		})
	}
}

// TestActorRetriesWhenVersionVanishes: a shared-filesystem version pruned
// before the actor reads it is a clear error, and the actor loads the
// newest version instead.
func TestActorRetriesWhenVersionVanishes(t *testing.T) {
	srv := bustest.Server(t)
	lb := bustest.Open(t, srv, bus.DefaultConfig("av"))
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := transfer.NewPublisher(lb, transfer.DefaultConfig(transfer.TransportFS, root), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 2; v++ {
		if err := pub.PublishModel(ctx, v, smallModel(t, uint64(v)), task.BuiltinTokenizer()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(root, "v1")); err != nil {
		t.Fatal(err)
	}
	pol := NewBuiltin()
	cfg := DefaultConfig()
	cfg.ID = "a1"
	a, err := New(bustest.Open(t, srv, bus.DefaultConfig("av")), pol, cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.loadVersion(ctx, 1); err == nil || !errors.Is(err, transfer.ErrVersionGone) {
		t.Fatalf("loading the removed v1: err %v, want ErrVersionGone", err)
	}
	if !a.load(ctx, 1) || pol.Version() != 2 {
		t.Fatalf("load(1) with v1 gone: version %d, want the retry to load v2", pol.Version())
	}
}
