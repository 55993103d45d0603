package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The cost of each JetStream operation the data path is made of, one at a
// time, for trajectories of the measured size (`exgrpo bench dataplane
// --ops`): what the anchor's message flow and the pipeline's are sums of.
// Each is the process CPU (the embedded server and the client, getrusage)
// per message of one operation on n messages, nothing else running.

// opCosts is the CPU per message of each operation.
type opCosts struct {
	store, storeHdr, durable, ordered, headersOnly, get time.Duration
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
	per := func(d time.Duration) time.Duration { return d / time.Duration(n) }
	timedOp := func(f func() error) (time.Duration, error) {
		c0 := processCPU()
		err := f()
		return per(processCPU() - c0), err
	}

	// The anchor's operations on a plain stream: store (async publish,
	// every ack checked), a durable pull consumer acking each message.
	js := rs.b["actor"].JS
	name, subj := "OPS_"+run, "ops."+run
	storage := jetstream.FileStorage
	if benchMemory {
		storage = jetstream.MemoryStorage
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, MaxMsgSize: bus.MaxPayload,
		Storage: storage, MaxBytes: 256 << 20}); err != nil {
		return c, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	pub := rs.pub["actor"]
	if c.store, err = timedOp(func() error {
		return publishRollouts(ctx, pub, n, func(i int) (*nats.Msg, error) { return bus.NewMsg(subj, trajs[i].ID, payloads[i]), nil })
	}); err != nil {
		return c, err
	}
	cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return c, err
	}
	if c.durable, err = timedOp(func() error { return consumeN(ctx, cons, n, nil) }); err != nil {
		return c, err
	}

	// The pipeline's: the actor's messages on ROLLOUTS (with the grading
	// header), the learner's ordered consumer, the verifiers' headers-only
	// shared consumer acking each, the replay service's gets by sequence.
	ab, lb, vb, rb := rs.b["actor"], rs.b["learner"], rs.b["verifier"], rs.b["replay"]
	msgs := make([]*nats.Msg, n)
	for i := range trajs {
		if msgs[i], err = ab.RolloutMsg(&trajs[i]); err != nil {
			return c, err
		}
		msgs[i].Data = payloads[i]
	}
	st, err := ab.Stream(ctx, bus.Rollouts)
	if err != nil {
		return c, err
	}
	first := st.CachedInfo().State.LastSeq + 1
	if c.storeHdr, err = timedOp(func() error {
		return publishRollouts(ctx, pub, n, func(i int) (*nats.Msg, error) { return msgs[i], nil })
	}); err != nil {
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
	shared, err := vb.Shared(ctx, bus.Rollouts)
	if err != nil {
		return c, err
	}
	if c.headersOnly, err = timedOp(func() error { return consumeN(ctx, shared, n, nil) }); err != nil {
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
// flow (store, delivery and ack) and the pipeline's (store with the grading
// header, the verifiers' headers-only delivery and ack, the learner's
// delivery, the replay service's gets of the share it stores).
func printOps(w io.Writer, c opCosts, share float64) {
	us := func(d time.Duration) float64 { return d.Seconds() * 1e6 }
	fmt.Fprintf(w, "JetStream operations, CPU per message, one operation at a time (server and client): store %.1f us, store with the grading header %.1f us, "+
		"durable delivery + ack %.1f us, ordered delivery (no ack) %.1f us, headers-only delivery + ack %.1f us, get by sequence %.1f us\n",
		us(c.store), us(c.storeHdr), us(c.durable), us(c.ordered), us(c.headersOnly), us(c.get))
	anchor := us(c.store) + us(c.durable)
	pipe := us(c.storeHdr) + us(c.headersOnly) + us(c.ordered) + share*us(c.get)
	fmt.Fprintf(w, "their sums: anchor (store + delivery + ack) %.1f us, pipeline (store with header + headers-only delivery + ordered delivery + %.2f gets) %.1f us: "+
		"a ceiling of %.2f for any codec and grading\n", anchor, share, pipe, anchor/pipe)
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
		storeHdr:    med(func(c opCosts) time.Duration { return c.storeHdr }),
		durable:     med(func(c opCosts) time.Duration { return c.durable }),
		ordered:     med(func(c opCosts) time.Duration { return c.ordered }),
		headersOnly: med(func(c opCosts) time.Duration { return c.headersOnly }),
		get:         med(func(c opCosts) time.Duration { return c.get }),
	}
}
