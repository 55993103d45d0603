package actor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// scriptedPolicy answers deterministically from (task, i); it can be made to
// hang on one sample until its context ends, like an actor killed mid-task.
type scriptedPolicy struct {
	version int64
	hangOn  string // "<taskID>/<i>"
	hung    atomic.Bool
}

func (f *scriptedPolicy) Version() int64               { return f.version }
func (f *scriptedPolicy) Load(v int64, _ []byte) error { f.version = v; return nil }
func (f *scriptedPolicy) Sample(ctx context.Context, t wire.Task, i int) (Completion, error) {
	if fmt.Sprintf("%s/%d", t.TaskID, i) == f.hangOn {
		f.hung.Store(true)
		<-ctx.Done()
		return Completion{}, ctx.Err()
	}
	return Completion{Tokens: []int32{int32(t.Seed) + int32(i)}, LogProbs: []float32{-1}, Entropies: []float32{1},
		Text: fmt.Sprintf("\\boxed{%d}", t.Seed+int64(i)), Finish: "eos"}, nil
}

type running struct {
	cancel context.CancelFunc
	done   chan error
}

func runActor(t *testing.T, b *bus.Bus, pol Policy, id string) *running {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.FetchWait = 200 * time.Millisecond
	cfg.NakDelay = 100 * time.Millisecond
	lg := zap.NewNop()
	if os.Getenv("EXGRPO_ACTOR_TEST_LOG") != "" {
		lg, _ = zap.NewDevelopment()
	}
	a, err := New(b, pol, cfg, lg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	if err := <-r.done; err != nil {
		panic(err)
	}
	r.done <- nil // let a second stop return
}

func publishTasks(t *testing.T, ctx context.Context, b *bus.Bus, tasks ...wire.Task) {
	t.Helper()
	for _, tk := range tasks {
		data, err := wire.Encode(&tk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.JS.Publish(ctx, b.Names.Subject(bus.Tasks), data, jetstream.WithMsgID(tk.TaskID)); err != nil {
			t.Fatal(err)
		}
	}
}

// rolloutIDs lists the ids of every message stored on ROLLOUTS, by sequence.
func rolloutIDs(t *testing.T, ctx context.Context, b *bus.Bus) (ids []string, lastSeq uint64) {
	t.Helper()
	st, err := b.Stream(ctx, bus.Rollouts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var tr wire.Trajectory
		if err := wire.Decode(m.Data, &tr); err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) != tr.ID {
			t.Fatalf("message id %q for trajectory %q", m.Header.Get(jetstream.MsgIDHeader), tr.ID)
		}
		ids = append(ids, tr.ID)
	}
	return ids, info.State.LastSeq
}

func streamMsgs(t *testing.T, ctx context.Context, b *bus.Bus, k bus.Kind) uint64 {
	st, err := b.Stream(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestStoppedMidTaskIsRedelivered: an actor stopped in the middle of a task
// (two of its four trajectories already stored) leaves the task unacked; a
// second actor serves it after the ack wait, and ROLLOUTS ends up holding
// every trajectory exactly once.
func TestStoppedMidTaskIsRedelivered(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("a1")
	cfg.TaskAckWait = 500 * time.Millisecond
	b := bustest.Open(t, s, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	const nTasks, k = 3, 4
	var want []string
	var tasks []wire.Task
	for i := range nTasks {
		tk := wire.Task{TaskID: fmt.Sprintf("t%d", i), QuestionID: fmt.Sprintf("q%d", i), Samples: k, Seed: int64(100 * i), Kind: "arith"}
		tasks = append(tasks, tk)
		for j := range k {
			want = append(want, fmt.Sprintf("t%d/%d", i, j))
		}
	}
	doomed := &scriptedPolicy{hangOn: "t0/2"}
	a := runActor(t, b, doomed, "doomed")
	publishTasks(t, ctx, b, tasks[0])
	bustest.Eventually(t, 10*time.Second, "first actor hangs after storing t0/0 and t0/1", func() bool {
		return doomed.hung.Load() && streamMsgs(t, ctx, b, bus.Rollouts) == 2
	})
	a.stop()
	publishTasks(t, ctx, b, tasks[1:]...)
	runActor(t, b, &scriptedPolicy{}, "survivor")
	bustest.Eventually(t, 20*time.Second, "every task acked", func() bool {
		return streamMsgs(t, ctx, b, bus.Tasks) == 0
	})
	ids, lastSeq := rolloutIDs(t, ctx, b)
	sort.Strings(ids)
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("ROLLOUTS ids %v, want %v", ids, want)
	}
	if lastSeq != uint64(len(want)) {
		t.Fatalf("ROLLOUTS stored %d messages for %d trajectories: a republished one was not deduplicated", lastSeq, len(want))
	}
}

func TestMalformedTaskGoesToDead(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("a2"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runActor(t, b, &scriptedPolicy{}, "a")
	if _, err := b.JS.Publish(ctx, b.Names.Subject(bus.Tasks), []byte("not msgpack \xc1")); err != nil {
		t.Fatal(err)
	}
	publishTasks(t, ctx, b, wire.Task{TaskID: "ok", Samples: 2})
	bustest.Eventually(t, 10*time.Second, "both tasks leave TASKS", func() bool {
		return streamMsgs(t, ctx, b, bus.Tasks) == 0
	})
	if n := streamMsgs(t, ctx, b, bus.Dead); n != 1 {
		t.Fatalf("DEAD holds %d, want 1", n)
	}
	if n := streamMsgs(t, ctx, b, bus.Rollouts); n != 2 {
		t.Fatalf("ROLLOUTS holds %d, want 2 (the good task still served)", n)
	}
}

func tinyCheckpoint(t *testing.T, seed uint64) []byte {
	t.Helper()
	cfg := task.ModelConfig()
	m, err := policy.New(cfg, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := policy.WriteCheckpoint(&buf, policy.Checkpoint{Model: m, Tokenizer: task.BuiltinTokenizer()}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBuiltinWaitsForWeightsAndHotSwaps: an actor without weights waits for
// the announced version the task needs, loads it from the Object Store, and
// later swaps to a newer version between tasks.
func TestBuiltinWaitsForWeightsAndHotSwaps(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("a3"))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	runActor(t, b, NewBuiltin(), "builtin")
	tk := wire.Task{TaskID: "s1/q", QuestionID: "q", Prompt: "2+3", Answer: "5", Kind: task.KindArith,
		Samples: 3, MinVersion: 1, MaxNew: 8, Temp: 1, Seed: 7}
	publishTasks(t, ctx, b, tk)
	// The task waits for version 1, announced only now.
	if err := b.PublishWeights(ctx, 1, tinyCheckpoint(t, 1)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 20*time.Second, "3 rollouts", func() bool { return streamMsgs(t, ctx, b, bus.Rollouts) == 3 })
	if err := b.PublishWeights(ctx, 2, tinyCheckpoint(t, 2)); err != nil {
		t.Fatal(err)
	}
	tk2 := tk
	tk2.TaskID, tk2.MinVersion = "s2/q", 2
	publishTasks(t, ctx, b, tk2)
	bustest.Eventually(t, 20*time.Second, "6 rollouts", func() bool { return streamMsgs(t, ctx, b, bus.Rollouts) == 6 })
	st, _ := b.Stream(ctx, bus.Rollouts)
	versions := map[string]int64{}
	for seq := uint64(1); seq <= 6; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var tr wire.Trajectory
		if err := wire.Decode(m.Data, &tr); err != nil {
			t.Fatal(err)
		}
		if len(tr.Tokens) == 0 || len(tr.LogProbs) != len(tr.Tokens) || len(tr.Entropies) != len(tr.Tokens) || len(tr.PromptTokens) == 0 {
			t.Fatalf("%s: %d tokens, %d log-probs, %d entropies", tr.ID, len(tr.Tokens), len(tr.LogProbs), len(tr.Entropies))
		}
		versions[tr.TaskID] = tr.PolicyVersion
	}
	if versions["s1/q"] != 1 {
		t.Errorf("first task sampled with version %d, want 1", versions["s1/q"])
	}
	if versions["s2/q"] != 2 {
		t.Errorf("second task sampled with version %d, want 2", versions["s2/q"])
	}
}

// TestBuiltinReproducible: sample i depends only on the weights, the task
// and i, so a redelivered task reproduces its trajectories.
func TestBuiltinReproducible(t *testing.T) {
	p := NewBuiltin()
	if err := p.Load(1, tinyCheckpoint(t, 3)); err != nil {
		t.Fatal(err)
	}
	tk := wire.Task{TaskID: "x", Prompt: "12-4", Samples: 2, MaxNew: 16, Temp: 1, Seed: 42}
	ctx := context.Background()
	a0, err := p.Sample(ctx, tk, 0)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := p.Sample(ctx, tk, 1)
	b0, _ := p.Sample(ctx, tk, 0)
	if !reflect.DeepEqual(a0, b0) {
		t.Fatal("sample 0 differs between two draws")
	}
	if slices.Equal(a0.Tokens, a1.Tokens) && len(a0.Tokens) > 4 {
		t.Log("samples 0 and 1 coincide (possible but unlikely)")
	}
	if _, err := p.Sample(ctx, wire.Task{TaskID: "bad", Prompt: "\u2603"}, 0); !errors.Is(err, ErrBadTask) {
		t.Fatalf("unencodable prompt: %v, want ErrBadTask", err)
	}
}
