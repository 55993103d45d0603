package bus

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ROLLOUTS is the one store of the trajectories: the verifiers grade them
// through their shared consumer, the learner follows the stream (an ordered
// consumer, see Follow) and the replay service and inspection get the
// ones they need by sequence (GetRollouts). SCORED carries only the verdicts,
// each naming its trajectory's ROLLOUTS sequence.

// getConcurrency bounds the gets by sequence in flight at once; they share
// the connection, so this is pipelining, not parallel connections.
const getConcurrency = 64

// Got is what GetRollouts found.
type Got struct {
	// Msgs are the messages found, by sequence.
	Msgs map[uint64]*jetstream.RawStreamMsg
	// Gone are the sequences ROLLOUTS no longer holds: below its first
	// sequence (discarded by its byte limit) or deleted (a poison message
	// moved to DEAD). They will never be found.
	Gone []uint64
	// Later are the sequences not found yet for a reason that may pass (a
	// replica behind the leader, a timeout, a leader election): ask again.
	Later []uint64
	// Err is the first error behind Later, for the log.
	Err error
}

// GetRollouts fetches ROLLOUTS messages by stream sequence with direct gets
// (any replica answers), up to 64 in flight. It fails only when no request
// can be sent, or when the stream cannot be looked up to tell a message gone
// for good from one a replica does not hold yet; per-sequence outcomes are
// in Got.
//
// The gets are pipelined on one reply subscription, each request naming its
// sequence in its reply subject, rather than made one by one through the
// client's request API: the same requests and replies for the server, a
// third less CPU per get for the reader (`exgrpo bench dataplane --ops`).
func (b *Bus) GetRollouts(ctx context.Context, seqs []uint64) (Got, error) {
	got := Got{Msgs: make(map[uint64]*jetstream.RawStreamMsg, len(seqs))}
	if len(seqs) == 0 {
		return got, nil
	}
	var notFound []uint64
	later := func(seq uint64, err error) {
		got.Later = append(got.Later, seq)
		if got.Err == nil {
			got.Err = err
		}
	}
	inbox := b.NC.NewInbox()
	replies := make(chan *nats.Msg, getConcurrency)
	sub, err := b.NC.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		return got, fmt.Errorf("bus: get %s by sequence: %w", b.Names.Stream(Rollouts), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	api := "$JS.API.DIRECT.GET." + b.Names.Stream(Rollouts)
	pending := map[uint64]bool{}
	next := 0
	send := func() error { // the next sequence's request
		seq := seqs[next]
		next++
		if seq == 0 || pending[seq] {
			if seq == 0 {
				got.Gone = append(got.Gone, seq)
			}
			return nil
		}
		pending[seq] = true
		req := strconv.AppendUint([]byte(`{"seq":`), seq, 10)
		return b.NC.PublishRequest(api, inbox+"."+strconv.FormatUint(seq, 10), append(req, '}'))
	}
	timer := time.NewTimer(b.Config.OpTimeout)
	defer timer.Stop()
	for next < len(seqs) || len(pending) > 0 {
		for next < len(seqs) && len(pending) < getConcurrency {
			if err := send(); err != nil {
				return got, fmt.Errorf("bus: get %s by sequence: %w", b.Names.Stream(Rollouts), err)
			}
		}
		if len(pending) == 0 {
			continue
		}
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-timer.C:
			err = fmt.Errorf("bus: get %s by sequence: no reply within %v", b.Names.Stream(Rollouts), b.Config.OpTimeout)
		case <-ctx.Done():
			err = fmt.Errorf("bus: get %s by sequence: %w", b.Names.Stream(Rollouts), ctx.Err())
		}
		if m == nil { // what was not answered is asked for again later
			for seq := range pending {
				later(seq, err)
			}
			for _, seq := range seqs[next:] {
				later(seq, err)
			}
			pending, next = nil, len(seqs)
			break
		}
		seq, perr := strconv.ParseUint(m.Subject[len(inbox)+1:], 10, 64)
		if perr != nil || !pending[seq] {
			continue // not ours, or answered already
		}
		delete(pending, seq)
		timer.Reset(b.Config.OpTimeout)
		switch status := m.Header.Get("Status"); status {
		case "":
			got.Msgs[seq] = &jetstream.RawStreamMsg{Subject: m.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: m.Header, Data: m.Data}
		case "404":
			notFound = append(notFound, seq)
		default:
			later(seq, fmt.Errorf("bus: get %s sequence %d: status %s %s", b.Names.Stream(Rollouts), seq, status, m.Header.Get("Description")))
		}
	}
	if len(notFound) > 0 {
		// The leader says which of them are gone for good: below the first
		// sequence, or deleted at or below the last one. A direct get
		// served by a replica that is behind answers "not found" for a
		// message the leader holds; those are asked for again.
		s, err := b.Stream(ctx, Rollouts)
		if err != nil {
			return got, err
		}
		octx, cancel := b.opCtx(ctx)
		info, err := s.Info(octx, jetstream.WithDeletedDetails(true))
		cancel()
		if err != nil {
			got.Later = append(got.Later, notFound...)
			if got.Err == nil {
				got.Err = fmt.Errorf("bus: %s info: %w", b.Names.Stream(Rollouts), err)
			}
		} else {
			deleted := make(map[uint64]bool, len(info.State.Deleted))
			for _, d := range info.State.Deleted {
				deleted[d] = true
			}
			for _, seq := range notFound {
				if seq < info.State.FirstSeq || deleted[seq] {
					got.Gone = append(got.Gone, seq)
				} else {
					got.Later = append(got.Later, seq)
					if got.Err == nil {
						got.Err = fmt.Errorf("bus: %s seq %d not found on the replica asked (stream at %d..%d)",
							b.Names.Stream(Rollouts), seq, info.State.FirstSeq, info.State.LastSeq)
					}
				}
			}
		}
	}
	sort.Slice(got.Gone, func(i, j int) bool { return got.Gone[i] < got.Gone[j] })
	sort.Slice(got.Later, func(i, j int) bool { return got.Later[i] < got.Later[j] })
	return got, nil
}

// Follow delivers every message published to stream kind k from now on to
// fn, in stream order, with an ordered consumer (no acks: the stream keeps
// the messages, and a reader that restarts follows from its own start). The
// learner follows ROLLOUTS and SCORED this way: a restarted learner starts a
// new epoch, whose rollouts and verdicts are published after it follows.
// Stop the returned context when done.
func (b *Bus) Follow(ctx context.Context, k Kind, fn func(jetstream.Msg), errFn func(error)) (jetstream.ConsumeContext, error) {
	// "From now on" is a start sequence, not DeliverNew: an ordered
	// consumer that is recreated (a server restart, a leader change)
	// before it delivered anything would apply DeliverNew again and skip
	// what was stored meanwhile; a start sequence resumes where it was.
	st, err := b.Stream(ctx, k)
	if err != nil {
		return nil, err
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	cons, err := b.JS.OrderedConsumer(octx, b.Names.Stream(k), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: st.CachedInfo().State.LastSeq + 1,
		InactiveThreshold: readerInactive})
	if err != nil {
		return nil, fmt.Errorf("bus: follow %s: %w", b.Names.Stream(k), err)
	}
	opts := []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(1024)}
	if errFn != nil {
		opts = append(opts, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { errFn(err) }))
	}
	cc, err := cons.Consume(fn, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: follow %s: %w", b.Names.Stream(k), err)
	}
	return cc, nil
}
