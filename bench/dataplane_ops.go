package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// The cost of each JetStream operation the data path is made of, one at a
// time, for trajectories of the measured size (`exgrpo bench dataplane
// --ops`): what the anchor's message flow and the pipeline's are sums of.
// Each is the process CPU (the embedded server and the client, getrusage)
// per message of one operation on n messages, nothing else running.

// opCosts is the CPU per message of each operation.
type opCosts struct {
	store       time.Duration // async publish, every ack checked, to a plain stream
	durable     time.Duration // a durable pull consumer acking each message (the anchor's reader)
	storeRoll   time.Duration // the same publishes to ROLLOUTS (message ids deduplicated)
	shared      time.Duration // the verifiers' shared consumer on ROLLOUTS, acking each
	ordered     time.Duration // an ordered consumer on ROLLOUTS (the learner's reader, no acks)
	get         time.Duration // gets by sequence (the replay service's, 64 at a time)
	headersOnly time.Duration // a headers-only consumer acking each: the floor of any reader that needs a message's fields but not its body
}

// measureOps measures the operations on the trajectories of trajs (their
// encodings in payloads) on run's streams.
func measureOps(ctx context.Context, srv *bus.Server, run string, payloads [][]byte, trajs []wire.Trajectory) (opCosts, error) {
	var c opCosts
	rs, closeAll, err := dataplaneRoles(ctx, srv, run)
	if err != nil {
		return c, err
	}
	defer closeAll()
	defer dropStreams(rs.b["verifier"])
	n := len(payloads)
	timedOp := func(f func() error) (time.Duration, error) {
		c0 := processCPU()
		err := f()
		return (processCPU() - c0) / time.Duration(n), err
	}
	id := func(i int) string { return trajs[i].ID }
	payload := func(i int) ([]byte, error) { return payloads[i], nil }
	pub, js := rs.pub["actor"], rs.b["actor"].JS

	// The anchor's: a plain stream, a durable consumer.
	name, subj := "OPS_"+strings.ToUpper(run), "ops."+run
	storage := jetstream.FileStorage
	if benchMemory {
		storage = jetstream.MemoryStorage
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, MaxMsgSize: bus.MaxPayload,
		Storage: storage, MaxBytes: 256 << 20}); err != nil {
		return c, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	if c.store, err = timedOp(func() error { return publishRollouts(ctx, pub, subj, n, id, payload) }); err != nil {
		return c, err
	}
	consume := func(cc jetstream.ConsumerConfig) func() error {
		return func() error {
			cons, err := js.CreateConsumer(ctx, name, cc)
			if err != nil {
				return err
			}
			return consumeN(ctx, cons, n, nil)
		}
	}
	if c.durable, err = timedOp(consume(jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})); err != nil {
		return c, err
	}
	if c.headersOnly, err = timedOp(consume(jetstream.ConsumerConfig{Durable: "h", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096,
		HeadersOnly: true})); err != nil {
		return c, err
	}

	// The pipeline's, on ROLLOUTS.
	ab, lb, vb, rb := rs.b["actor"], rs.b["learner"], rs.b["verifier"], rs.b["replay"]
	st, err := ab.Stream(ctx, bus.Rollouts)
	if err != nil {
		return c, err
	}
	first := st.CachedInfo().State.LastSeq + 1
	if c.storeRoll, err = timedOp(func() error { return publishRollouts(ctx, pub, ab.Names.Subject(bus.Rollouts), n, id, payload) }); err != nil {
		return c, err
	}
	shared, err := vb.Shared(ctx, bus.Rollouts)
	if err != nil {
		return c, err
	}
	if c.shared, err = timedOp(func() error { return consumeN(ctx, shared, n, nil) }); err != nil {
		return c, err
	}
	if c.ordered, err = timedOp(func() error {
		oc, err := lb.JS.OrderedConsumer(ctx, lb.Names.Stream(bus.Rollouts), jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first})
		if err != nil {
			return err
		}
		it, err := oc.Messages(jetstream.PullMaxMessages(1024))
		if err != nil {
			return err
		}
		defer it.Stop()
		for range n {
			if _, err := it.Next(); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return c, err
	}
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = first + uint64(i)
	}
	c.get, err = timedOp(func() error {
		const part = 64 // reports of 64 trajectories, as the replay service reads them
		for i := 0; i < n; i += part {
			got, err := fetchAll(ctx, rb, seqs[i:min(i+part, n)], nil)
			if err != nil {
				return err
			}
			if want := min(part, n-i); got != want {
				return fmt.Errorf("got %d of %d trajectories by sequence", got, want)
			}
		}
		return nil
	})
	return c, err
}

// printOps writes the costs and what they add up to: the anchor's message
// flow (store, delivery and ack) and the pipeline's (store on ROLLOUTS, the
// verifiers' delivery and ack, the learner's delivery, the replay service's
// gets of the share it stores; the verdicts' own messages left out). The
// ratio of the sums is an estimate: run together, the operations share
// syscalls and wake-ups (the 8,192-token pipeline measured above it).
func printOps(w io.Writer, c opCosts, share float64) {
	us := func(d time.Duration) float64 { return d.Seconds() * 1e6 }
	fmt.Fprintf(w, "JetStream operations, CPU per message, one at a time (server and client): store %.1f us, durable delivery + ack %.1f us; "+
		"on ROLLOUTS: store %.1f us, the verifiers' delivery + ack %.1f us, ordered delivery %.1f us, get by sequence %.1f us; "+
		"a headers-only delivery + ack %.1f us\n",
		us(c.store), us(c.durable), us(c.storeRoll), us(c.shared), us(c.ordered), us(c.get), us(c.headersOnly))
	anchor := us(c.store) + us(c.durable)
	pipe := us(c.storeRoll) + us(c.shared) + us(c.ordered) + share*us(c.get)
	fmt.Fprintf(w, "their sums: anchor (store + delivery + ack) %.1f us; pipeline (store + the verifiers' delivery + the learner's + %.2f gets) %.1f us; "+
		"ratio of the sums %.2f (no codec, grading or verdict; operations run together share syscalls, so this estimates, not bounds, the CPU-bound ratio); "+
		"with the verifiers' delivery at the headers-only floor, %.2f\n",
		anchor, share, pipe, anchor/pipe, anchor/(pipe-us(c.shared)+us(c.headersOnly)))
}

// medianOps is the median of each cost over the repetitions.
func medianOps(cs []opCosts) opCosts {
	med := func(f func(opCosts) time.Duration) time.Duration {
		v := make([]time.Duration, len(cs))
		for i, c := range cs {
			v[i] = f(c)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return opCosts{
		store:       med(func(c opCosts) time.Duration { return c.store }),
		durable:     med(func(c opCosts) time.Duration { return c.durable }),
		storeRoll:   med(func(c opCosts) time.Duration { return c.storeRoll }),
		shared:      med(func(c opCosts) time.Duration { return c.shared }),
		ordered:     med(func(c opCosts) time.Duration { return c.ordered }),
		get:         med(func(c opCosts) time.Duration { return c.get }),
		headersOnly: med(func(c opCosts) time.Duration { return c.headersOnly }),
	}
}
