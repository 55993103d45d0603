package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
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

// read reads messages of kind k with a fresh reader, decoding each into
// zero or more items, until it has n items.
func read[T any](t *testing.T, ctx context.Context, b *bus.Bus, k bus.Kind, reader string, n int, decode func([]byte) ([]T, error)) []T {
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
		items, err := decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		_ = msg.Ack()
		out = append(out, items...)
	}
	if len(out) != n {
		t.Fatalf("%s: got %d items, want %d", k, len(out), n)
	}
	return out
}

// drain reads n messages of kind k with a fresh reader and decodes them.
func drain[T any, PT interface {
	*T
	wire.Message
}](t *testing.T, ctx context.Context, b *bus.Bus, k bus.Kind, reader string, n int) []T {
	t.Helper()
	return read(t, ctx, b, k, reader, n, func(data []byte) ([]T, error) {
		var m T
		err := wire.Decode(data, PT(&m))
		return []T{m}, err
	})
}

// drainVerdicts reads SCORED messages (verdict batches) with a fresh
// reader until it has n verdicts.
func drainVerdicts(t *testing.T, ctx context.Context, b *bus.Bus, n int) []wire.Verdict {
	t.Helper()
	return read(t, ctx, b, bus.Scored, "check-verdicts", n, wire.DecodeVerdicts)
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
	pub := bustest.Publisher(t, b)
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
	got := drainVerdicts(t, ctx, b, n)
	for _, v := range got {
		r, ok := want[v.ID]
		if !ok {
			t.Fatalf("unexpected or duplicate verdict %s", v.ID)
		}
		if v.Reward != r {
			t.Errorf("%s: reward %v (%s), want %v", v.ID, v.Reward, v.Reason, r)
		}
		delete(want, v.ID)
	}
	dl := drain[wire.DeadLetter](t, ctx, b, bus.Dead, "check", 1)[0]
	if !strings.Contains(dl.Reason, "malformed") || dl.Role != Role {
		t.Fatalf("dead letter %+v", dl)
	}
	bustest.Eventually(t, 10*time.Second, "every rollout acknowledged", func() bool {
		lag, err := b.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer)
		return err == nil && lag.Pending == 0 && lag.AckPending == 0
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
	v := drainVerdicts(t, ctx, b, 1)[0]
	if v.Reward != 0 || v.Reason != verifier.ReasonTimeout {
		t.Fatalf("slow checker: reward %v reason %q, want 0 %q", v.Reward, v.Reason, verifier.ReasonTimeout)
	}
}

// The verdict names the trajectory's ROLLOUTS sequence and size, the
// trajectory stays on ROLLOUTS as the actor sent it (stored once, never
// copied), and every kind of bad trajectory goes to DEAD with the decoder's
// reason instead of being graded.
func TestVerdictNamesTrajectoryAndDeadLettersBadBytes(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("w3"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subj := b.Names.Subject(bus.Rollouts)
	good := wire.Trajectory{RunID: "w3", ID: "4/q1/2", TaskID: "4/q1", Step: 4, QuestionID: "q1", Index: 2,
		PolicyVersion: 3, ActorID: "a", PromptTokens: wire.Int32s{7, 8}, Tokens: wire.Int32s{1, 2, 3},
		LogProbs: wire.Float32s{-0.5, -1, -2}, Entropies: wire.Float32s{0.1, 0.2, 0.3}, Text: "1+1=\\boxed{2}",
		Finish: "eos", Answer: "2", Kind: "arith", SampleMicros: 9, CreatedUnixMs: 1}
	data, err := wire.Encode(&good)
	if err != nil {
		t.Fatal(err)
	}
	// Bytes after an encoded trajectory are not part of it (the readers'
	// decoder stops at its end).
	sent := append(data, 0xc1, 0xc1)
	ack, err := b.JS.Publish(ctx, subj, sent)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{ // payload -> what the dead letter's reason must say
		"\x93not a trajectory":                       "malformed",
		"\x82\xa1v\x02\xa2id\xa1x":                   "unknown schema version",
		"\x83\xa1v\x01\xa2id\xa1x\xa3tok\xc4\x03abc": "not a multiple of 4",
		"\x83\xa1v\x01\xa2id\xa1x\xa4step\xa3two":    "malformed",
		string(data[:len(data)-5]):                   "malformed",
	}
	for payload := range bad {
		if _, err := b.JS.Publish(ctx, subj, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	startWorker(t, b, DefaultConfig(), nil)
	v := drainVerdicts(t, ctx, b, 1)[0]
	want := wire.Verdict{V: wire.VerdictSchema, RunID: "w3", ID: good.ID, TaskID: good.TaskID, Seq: ack.Sequence, Size: len(sent),
		Reward: 1, Reason: verifier.ReasonCorrect, Extracted: v.Extracted, VerifyMicros: v.VerifyMicros}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("verdict %+v\nwant %+v", v, want)
	}
	st, err := b.Stream(ctx, bus.Rollouts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, v.Seq)
	if err != nil {
		t.Fatalf("ROLLOUTS seq %d: %v", v.Seq, err)
	}
	if !bytes.Equal(m.Data, sent) {
		t.Fatalf("ROLLOUTS seq %d holds %d bytes, want the %d bytes sent", v.Seq, len(m.Data), len(sent))
	}
	for _, dl := range drain[wire.DeadLetter](t, ctx, b, bus.Dead, "check", len(bad)) {
		reason, ok := bad[string(dl.Data)]
		if !ok {
			t.Fatalf("unexpected dead letter %q: %s", dl.Data, dl.Reason)
		}
		if !strings.Contains(dl.Reason, reason) {
			t.Errorf("dead letter of %q: reason %q, want it to say %q", dl.Data, dl.Reason, reason)
		}
		delete(bad, string(dl.Data))
	}
}
