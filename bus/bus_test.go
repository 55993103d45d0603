package bus_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestNames(t *testing.T) {
	n, err := bus.NewNames("run-1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, got, want string }{
		{"stream", n.Stream(bus.Tasks), "EXGRPO_RUN-1_TASKS"},
		{"subject", n.Subject(bus.Rollouts), "exgrpo.run-1.rollouts"},
		{"experience safe", n.ExperienceSubject("arith:q-17"), "exgrpo.run-1.exp.arith:q-17"},
		{"experience escaped", n.ExperienceSubject("a.b *>"), "exgrpo.run-1.exp.~612e62202a3e"},
		{"dead", n.DeadSubject(bus.Rollouts), "exgrpo.run-1.dead.rollouts"},
		{"kv", n.StateBucket(), "EXGRPO_RUN-1_STATE"},
		{"replay", n.ReplayBucket(), "EXGRPO_RUN-1_REPLAY"},
	}
	// A run id holding "_state" keeps its own name in every bucket.
	if n2, err := bus.NewNames("a_state"); err != nil || n2.ReplayBucket() != "EXGRPO_A_STATE_REPLAY" {
		t.Errorf("replay bucket of run a_state: %q, %v", n2.ReplayBucket(), err)
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", strings.Repeat("x", 65)} {
		if _, err := bus.NewNames(bad); !errors.Is(err, bus.ErrConfig) {
			t.Errorf("NewNames(%q): got %v, want ErrConfig", bad, err)
		}
	}
	if bus.QuestionToken("~61") == bus.QuestionToken("a") {
		t.Error("QuestionToken is not injective")
	}
}

func TestTopologyIdempotent(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("idem")
	b1 := bustest.Open(t, s, cfg)
	ctx := ctxT(t, 20*time.Second)
	// Put something in, then open again from another connection: nothing
	// is reset and the declarations are unchanged.
	pub, err := b1.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if _, err := pub.Publish(ctx, b1.Names.Subject(bus.Tasks), "t1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	b2 := bustest.Open(t, s, cfg)
	for _, k := range bus.Kinds {
		st, err := b2.Stream(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := b1.StreamConfig(k)
		if !reflect.DeepEqual(info.Config.Subjects, want.Subjects) || info.Config.Retention != want.Retention ||
			info.Config.AllowDirect != want.AllowDirect {
			t.Errorf("%s: config %+v, want %+v", k, info.Config, want)
		}
		if k == bus.Tasks && info.State.Msgs != 1 {
			t.Errorf("re-open changed TASKS: %d messages, want 1", info.State.Msgs)
		}
	}
	lag, err := b2.ConsumerLag(ctx, bus.Tasks, bus.ActorsConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if lag.Pending != 1 {
		t.Errorf("actors consumer pending %d, want 1", lag.Pending)
	}
	if _, err := b2.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer); err != nil {
		t.Fatal(err)
	}
	// Readers are idempotent too and keep their position.
	r1, err := b1.Reader(ctx, bus.Scored, "learner", bus.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b2.Reader(ctx, bus.Scored, "learner", bus.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r1.CachedInfo().Name != r2.CachedInfo().Name {
		t.Fatal("reader names differ")
	}
	if _, err := b1.Reader(ctx, bus.Tasks, "x", bus.ReaderOptions{}); !errors.Is(err, bus.ErrConfig) {
		t.Fatalf("Reader on a work queue: got %v, want ErrConfig", err)
	}
}

func TestPublishDedup(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("dedup"))
	ctx := ctxT(t, 20*time.Second)
	cfg := bus.DefaultPublisherConfig()
	cfg.MaxInflightBytes = 64 << 10 // force Add to wait on the budget
	pub, err := b.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	subj := b.Names.Subject(bus.Scored)
	payload := make([]byte, 8<<10)
	batch := pub.Batch()
	const n, distinct = 200, 50
	for i := range n {
		if err := batch.Add(ctx, subj, fmt.Sprintf("traj/%d", i%distinct), payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	ack, err := pub.Publish(ctx, subj, "traj/0", payload)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("sync republish of traj/0 not reported as duplicate")
	}
	st, _ := b.Stream(ctx, bus.Scored)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != distinct {
		t.Fatalf("stream holds %d messages, want %d distinct ids", info.State.Msgs, distinct)
	}
	stats := pub.Stats()
	if stats.Published != distinct || stats.Duplicates != n-distinct+1 || stats.Failed != 0 {
		t.Fatalf("stats %+v, want %d published, %d duplicates", stats, distinct, n-distinct+1)
	}
}

func TestDeadLetterUndecodable(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("dead"))
	ctx := ctxT(t, 20*time.Second)
	if _, err := b.JS.Publish(ctx, b.Names.Subject(bus.Rollouts), []byte{0xc1, 0x00}); err != nil {
		t.Fatal(err)
	}
	cons, err := b.Shared(ctx, bus.Rollouts)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var tr wire.Trajectory
	derr := wire.Decode(msg.Data(), &tr)
	if derr == nil {
		t.Fatal("garbage decoded")
	}
	if err := b.DeadLetter(ctx, "verifier", msg, derr.Error()); err != nil {
		t.Fatal(err)
	}
	dl := readDead(t, ctx, b, 1)[0]
	if dl.Reason != derr.Error() || dl.Role != "verifier" || dl.Stream != b.Names.Stream(bus.Rollouts) ||
		!bytes.Equal(dl.Data, []byte{0xc1, 0x00}) {
		t.Fatalf("dead letter %+v", dl)
	}
	bustest.Eventually(t, 5*time.Second, "terminated message leaves the verifiers' consumer", func() bool {
		lag, err := b.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer)
		return err == nil && lag.Pending == 0 && lag.AckPending == 0
	})
}

func TestMaxDeliveriesAdvisory(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("poison")
	cfg.TaskMaxDeliver = 2
	b := bustest.Open(t, s, cfg)
	ctx := ctxT(t, 30*time.Second)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	w, err := b.NewDeadWatcher(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()
	if _, err := b.JS.Publish(ctx, b.Names.Subject(bus.Tasks), []byte("poison"), jetstream.WithMsgID("task/poison")); err != nil {
		t.Fatal(err)
	}
	cons, err := b.Shared(ctx, bus.Tasks)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		if err := msg.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	// The server notices the exhausted message when a worker pulls again.
	if msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatalf("poison delivered a third time: %s", msg.Data())
	}
	dl := readDead(t, ctx, b, 1)[0]
	if !strings.Contains(dl.Reason, "max deliveries (2)") || string(dl.Data) != "poison" || dl.Deliveries != 2 {
		t.Fatalf("dead letter %+v", dl)
	}
	bustest.Eventually(t, 5*time.Second, "poison task removed from TASKS", func() bool {
		st, _ := b.Stream(ctx, bus.Tasks)
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// readDead waits for n dead letters and returns them.
func readDead(t *testing.T, ctx context.Context, b *bus.Bus, n int) []wire.DeadLetter {
	t.Helper()
	cons, err := b.Reader(ctx, bus.Dead, "test-dead", bus.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		msg, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var dl wire.DeadLetter
		if err := wire.Decode(msg.Data(), &dl); err != nil {
			t.Fatal(err)
		}
		_ = msg.Ack()
		out = append(out, dl)
	}
	if len(out) < n {
		t.Fatalf("got %d dead letters, want %d", len(out), n)
	}
	return out
}

func TestWeightsRoundTrip(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("weights")
	cfg.KeepWeights = 2
	b := bustest.Open(t, s, cfg)
	ctx := ctxT(t, 30*time.Second)
	if _, err := b.LatestVersion(ctx); !errors.Is(err, bus.ErrNoWeights) {
		t.Fatalf("LatestVersion before any: %v, want ErrNoWeights", err)
	}
	w, err := b.WatchVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	blobs := map[int64][]byte{}
	for v := int64(1); v <= 3; v++ {
		blob := make([]byte, 3<<20+int(v)) // several chunks, odd tail
		_, _ = rand.Read(blob)
		blobs[v] = blob
		if err := b.PublishWeights(ctx, v, blob); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := w.Wait(ctx, 3); err != nil || v != 3 {
		t.Fatalf("watch: %d, %v", v, err)
	}
	if v, err := b.LatestVersion(ctx); err != nil || v != 3 {
		t.Fatalf("LatestVersion: %d, %v", v, err)
	}
	for v, want := range map[int64]bool{1: false, 2: true, 3: true} {
		got, err := b.FetchWeights(ctx, v)
		switch {
		case want && err != nil:
			t.Fatalf("fetch v%d: %v", v, err)
		case want && !bytes.Equal(got, blobs[v]):
			t.Fatalf("fetch v%d: bytes differ", v)
		case !want && !errors.Is(err, bus.ErrNoWeights):
			t.Fatalf("fetch pruned v%d: %v, want ErrNoWeights", v, err)
		}
	}
	// An object whose recorded digest does not match is refused.
	_, err = b.Weights.Put(ctx, jetstream.ObjectMeta{Name: bus.WeightsObject(9),
		Metadata: map[string]string{"sha256": strings.Repeat("0", 64)}}, bytes.NewReader([]byte("tampered")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.FetchWeights(ctx, 9); !errors.Is(err, bus.ErrDigest) {
		t.Fatalf("tampered fetch: %v, want ErrDigest", err)
	}
}

// A refused declaration (here: more memory than the server has) fails Open
// at once instead of being retried until the context ends.
func TestOpenPermanentErrorFailsFast(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("toolarge")
	cfg.Memory = true
	cfg.ExperienceMaxBytes = 1 << 50
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := bus.Open(ctx, bustest.Conn(t, s, "test"), cfg, nil)
	if err == nil {
		t.Fatal("Open succeeded with a 1 PiB memory stream")
	}
	if ctx.Err() != nil {
		t.Fatalf("Open retried a permanent error until the deadline: %v", err)
	}
}

// A run whose ROLLOUTS an older version declared as a work queue is refused
// with a clear error, not run half-working.
func TestOldWorkQueueRolloutsRefused(t *testing.T) {
	s := bustest.Server(t)
	cfg := bus.DefaultConfig("old")
	n, _ := bus.NewNames("old")
	nc, err := bus.Connect(ctxT(t, 10*time.Second), bus.ConnConfig{URL: s.ClientURL(), Name: "old"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := ctxT(t, 20*time.Second)
	base := n.Subject(bus.Rollouts)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n.Stream(bus.Rollouts), Subjects: []string{base, base + ".>"},
		Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	_, err = bus.Open(ctx, nc, cfg, nil)
	if !errors.Is(err, bus.ErrConfig) || !strings.Contains(err.Error(), "work queue") {
		t.Fatalf("Open on a work-queue ROLLOUTS: %v, want ErrConfig naming the work queue", err)
	}
}
