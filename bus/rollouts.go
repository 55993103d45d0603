package bus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

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
// (any replica answers), up to 64 in flight. It fails only when the stream
// cannot be looked up at all; per-sequence outcomes are in Got.
func (b *Bus) GetRollouts(ctx context.Context, seqs []uint64) (Got, error) {
	got := Got{Msgs: make(map[uint64]*jetstream.RawStreamMsg, len(seqs))}
	if len(seqs) == 0 {
		return got, nil
	}
	s, err := b.Stream(ctx, Rollouts)
	if err != nil {
		return got, err
	}
	var mu sync.Mutex
	var notFound []uint64
	slots := make(chan struct{}, getConcurrency)
	var wg sync.WaitGroup
	for _, seq := range seqs {
		if seq == 0 {
			got.Gone = append(got.Gone, seq)
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			octx, cancel := b.opCtx(ctx)
			m, err := s.GetMsg(octx, seq)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				got.Msgs[seq] = m
			case errors.Is(err, jetstream.ErrMsgNotFound):
				notFound = append(notFound, seq)
			default:
				got.Later = append(got.Later, seq)
				if got.Err == nil {
					got.Err = err
				}
			}
		})
	}
	wg.Wait()
	if len(notFound) > 0 {
		// The leader says which of them are gone for good: below the first
		// sequence, or deleted at or below the last one. A direct get
		// served by a replica that is behind answers "not found" for a
		// message the leader holds; those are asked for again.
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
