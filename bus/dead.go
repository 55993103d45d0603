package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// deadDataCap truncates the original payload kept in a dead letter.
const deadDataCap = 64 << 10

// kindOfStream maps a stream name of this run back to its kind ("" if none).
func (b *Bus) kindOfStream(stream string) Kind {
	for _, k := range Kinds {
		if b.Names.Stream(k) == stream {
			return k
		}
	}
	return ""
}

// PublishDead stores a dead letter on DEAD (subject by the letter's stream
// kind) with message id "dead/<stream>/<seq>" so copies of the same poison
// message collapse into one.
func (b *Bus) PublishDead(ctx context.Context, dl wire.DeadLetter) error {
	dl.RunID = b.Names.Run
	if dl.UnixMs == 0 {
		dl.UnixMs = time.Now().UnixMilli()
	}
	if len(dl.Data) > deadDataCap {
		dl.Data = dl.Data[:deadDataCap]
	}
	data, err := wire.Encode(&dl)
	if err != nil {
		return fmt.Errorf("bus: encode dead letter: %w", err)
	}
	from := b.kindOfStream(dl.Stream)
	if from == "" {
		from = "other"
	}
	id := ""
	if dl.Sequence > 0 {
		id = fmt.Sprintf("dead/%s/%d", dl.Stream, dl.Sequence)
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	m := newMsg(b.Names.DeadSubject(from), id, data)
	if _, err := b.JS.PublishMsg(octx, m); err != nil {
		return fmt.Errorf("bus: publish dead letter (%s): %w", dl.Reason, err)
	}
	return nil
}

// DeadLetter sends a consumed message that cannot be processed (undecodable,
// too large, unknown schema) to DEAD with the reason, then terminates it so
// it is never redelivered. When storing the letter fails the message is
// left unacked (it will be redelivered) and the error returned.
func (b *Bus) DeadLetter(ctx context.Context, role string, msg jetstream.Msg, reason string) error {
	dl := wire.DeadLetter{Subject: msg.Subject(), Role: role, Reason: reason, Data: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		dl.Stream, dl.Sequence, dl.Deliveries = md.Stream, md.Sequence.Stream, md.NumDelivered
	}
	if err := b.PublishDead(ctx, dl); err != nil {
		return err
	}
	if err := msg.TermWithReason(truncate(reason, 200)); err != nil {
		return fmt.Errorf("bus: term dead message: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// maxDeliveriesAdvisory is the server's JSConsumerDeliveryExceededAdvisory.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// WatchMaxDeliveries copies every message of this run's streams that
// exhausted its consumer's MaxDeliver into DEAD (reason "max deliveries (N)
// on consumer C") and removes it from TASKS or ROLLOUTS (a work queue would
// otherwise keep it forever; no reader of ROLLOUTS needs a trajectory its
// verifiers could not grade). It blocks until ctx ends and returns nil then.
// Several roles may run it at once: the copies share a message id. The
// server notices an exhausted message when a worker pulls again.
func (b *Bus) WatchMaxDeliveries(ctx context.Context, role string) error {
	w, err := b.NewDeadWatcher(ctx, role)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// DeadWatcher is WatchMaxDeliveries split in two: NewDeadWatcher returns
// once the advisory subscriptions are registered with the server, so nothing
// published afterwards is missed; Run does the work.
type DeadWatcher struct {
	b    *Bus
	role string
	ch   chan *nats.Msg
	subs []*nats.Subscription
}

// NewDeadWatcher subscribes to the max-deliveries advisories of the run's
// streams ($JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.*).
func (b *Bus) NewDeadWatcher(ctx context.Context, role string) (*DeadWatcher, error) {
	w := &DeadWatcher{b: b, role: role, ch: make(chan *nats.Msg, 256)}
	for _, k := range Kinds {
		if k == Dead {
			continue
		}
		subj := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + b.Names.Stream(k) + ".*"
		sub, err := b.NC.ChanSubscribe(subj, w.ch)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("bus: subscribe %s: %w", subj, err)
		}
		w.subs = append(w.subs, sub)
	}
	fctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.NC.FlushWithContext(fctx); err != nil {
		w.close()
		return nil, fmt.Errorf("bus: subscribe max-deliveries advisories: %w", err)
	}
	return w, nil
}

func (w *DeadWatcher) close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}

// Run dead-letters advisories until ctx ends (then returns nil and
// unsubscribes).
func (w *DeadWatcher) Run(ctx context.Context) error {
	defer w.close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-w.ch:
			if err := w.b.deadFromAdvisory(ctx, w.role, m.Data); err != nil && ctx.Err() == nil {
				w.b.log.Warn("max-deliveries advisory not dead-lettered", zap.Error(err))
			}
		}
	}
}

func (b *Bus) deadFromAdvisory(ctx context.Context, role string, data []byte) error {
	var a maxDeliveriesAdvisory
	if err := json.Unmarshal(data, &a); err != nil {
		return fmt.Errorf("bus: decode advisory: %w", err)
	}
	k := b.kindOfStream(a.Stream)
	if k == "" || k == Dead {
		return nil
	}
	s, err := b.Stream(ctx, k)
	if err != nil {
		return err
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	raw, err := s.GetMsg(octx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // another watcher moved it already
	}
	if err != nil {
		return fmt.Errorf("bus: get %s seq %d: %w", a.Stream, a.StreamSeq, err)
	}
	reason := fmt.Sprintf("max deliveries (%d) on consumer %s", a.Deliveries, a.Consumer)
	if err := b.PublishDead(ctx, wire.DeadLetter{Stream: a.Stream, Subject: raw.Subject, Sequence: a.StreamSeq,
		Role: role, Reason: reason, Deliveries: a.Deliveries, Data: raw.Data}); err != nil {
		return err
	}
	if k == Tasks || k == Rollouts {
		if err := s.DeleteMsg(octx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) &&
			!strings.Contains(err.Error(), "not found") {
			return fmt.Errorf("bus: delete poison %s seq %d: %w", a.Stream, a.StreamSeq, err)
		}
	}
	b.log.Info("poison message dead-lettered", zap.String("stream", a.Stream), zap.Uint64("seq", a.StreamSeq),
		zap.Uint64("deliveries", a.Deliveries))
	return nil
}
