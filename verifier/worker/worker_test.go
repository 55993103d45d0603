package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// drain reads n messages of kind k with a fresh reader and decodes them.
func drain[T any, PT interface {
	*T
	wire.Message
}](t *testing.T, ctx context.Context, b *bus.Bus, k bus.Kind, reader string, n int) []T {
	t.Helper()
	cons, err := b.Reader(ctx, k, reader, bus.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		msg, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var m T
		if err := wire.Decode(msg.Data(), PT(&m)); err != nil {
			t.Fatal(err)
		}
		_ = msg.Ack()
		out = append(out, m)
	}
	if len(out) < n {
		t.Fatalf("%s: got %d messages, want %d", k, len(out), n)
	}
	return out
}

func startWorker(t *testing.T, b *bus.Bus, cfg Config, lookup func(string) (verifier.Checker, error)) context.CancelFunc {
	w, err := New(b, cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lookup != nil {
		w.SetLookup(lookup)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return cancel
}

func TestGradesAndDeadLettersMalformed(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("w1"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	subj := b.Names.Subject(bus.Rollouts)
	const n = 20
	want := map[string]float32{}
	for i := range n {
		id := fmt.Sprintf("0/q%d/%d", i/4, i%4)
		ans := i%2 == 0
		text := fmt.Sprintf("2+%d=\\boxed{%d}", i, 2+i)
		if !ans {
			text = "\\boxed{-1}"
		}
		data, _ := wire.Encode(&wire.Trajectory{ID: id, Kind: "arith", Answer: fmt.Sprint(2 + i), Text: text})
		if _, err := pub.Publish(ctx, subj, id, data); err != nil {
			t.Fatal(err)
		}
		want[id] = map[bool]float32{true: 1, false: 0}[ans]
		if i == n/2 { // a malformed message in the middle of the stream
			if _, err := pub.Publish(ctx, subj, "garbage", []byte("\x93not a trajectory")); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := DefaultConfig()
	cfg.Concurrency = 3
	startWorker(t, b, cfg, nil)
	got := drain[wire.Scored](t, ctx, b, bus.Scored, "check", n)
	for _, sc := range got {
		r, ok := want[sc.Traj.ID]
		if !ok {
			t.Fatalf("unexpected or duplicate scored %s", sc.Traj.ID)
		}
		if sc.Reward != r {
			t.Errorf("%s: reward %v (%s), want %v", sc.Traj.ID, sc.Reward, sc.Reason, r)
		}
		delete(want, sc.Traj.ID)
	}
	dl := drain[wire.DeadLetter](t, ctx, b, bus.Dead, "check", 1)[0]
	if !strings.Contains(dl.Reason, "malformed") || dl.Role != Role {
		t.Fatalf("dead letter %+v", dl)
	}
	bustest.Eventually(t, 10*time.Second, "ROLLOUTS drained", func() bool {
		st, err := b.Stream(ctx, bus.Rollouts)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

type slowChecker struct{ release chan struct{} }

func (s slowChecker) Check(gold, resp string) verifier.Verdict {
	<-s.release
	return verifier.Verdict{Correct: true, Reason: verifier.ReasonCorrect}
}

func TestTimeoutScoresZero(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("w2"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	cfg := DefaultConfig()
	cfg.ItemTimeout = 50 * time.Millisecond
	startWorker(t, b, cfg, func(string) (verifier.Checker, error) { return slowChecker{release}, nil })
	data, _ := wire.Encode(&wire.Trajectory{ID: "slow", Kind: "arith", Answer: "1", Text: "\\boxed{1}"})
	if _, err := b.JS.Publish(ctx, b.Names.Subject(bus.Rollouts), data); err != nil {
		t.Fatal(err)
	}
	sc := drain[wire.Scored](t, ctx, b, bus.Scored, "check", 1)[0]
	if sc.Reward != 0 || sc.Reason != verifier.ReasonTimeout {
		t.Fatalf("slow checker: reward %v reason %q, want 0 %q", sc.Reward, sc.Reason, verifier.ReasonTimeout)
	}
}
