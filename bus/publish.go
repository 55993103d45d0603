package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
)

// ErrClosed is returned by a Publisher after Close.
var ErrClosed = errors.New("bus: publisher closed")

// PublisherConfig bounds a Publisher's async publishes in flight.
type PublisherConfig struct {
	// MaxInflightBytes bounds the payload bytes awaiting their ack; Add
	// blocks beyond it. Default 32 MiB (the server's per-stream queue is
	// 128 MiB and refuses with 429 when full; ARCHITECTURE.md).
	MaxInflightBytes int64
	// MaxInflightMsgs bounds the number of messages awaiting an ack; default 2048.
	MaxInflightMsgs int
	// Retries: a refused or timed-out publish is retried this many times with
	// the same message id (so the server deduplicates); default 6.
	Retries int
	// RetryWait is the first backoff, doubled per retry up to 2s; default 50ms.
	RetryWait time.Duration
	// AckTimeout bounds the wait for one publish ack; default 30s.
	AckTimeout time.Duration
}

// DefaultPublisherConfig returns the defaults above.
func DefaultPublisherConfig() PublisherConfig {
	return PublisherConfig{MaxInflightBytes: 32 << 20, MaxInflightMsgs: 2048, Retries: 6,
		RetryWait: 50 * time.Millisecond, AckTimeout: 30 * time.Second}
}

func (c *PublisherConfig) fill() {
	d := DefaultPublisherConfig()
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = d.MaxInflightBytes
	}
	if c.MaxInflightMsgs <= 0 {
		c.MaxInflightMsgs = d.MaxInflightMsgs
	}
	if c.Retries < 0 {
		c.Retries = 0
	} else if c.Retries == 0 {
		c.Retries = d.Retries
	}
	if c.RetryWait <= 0 {
		c.RetryWait = d.RetryWait
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = d.AckTimeout
	}
}

// PublishStats counts a Publisher's outcomes (for metrics).
type PublishStats struct {
	Published  uint64 // acked as new
	Duplicates uint64 // acked as duplicates of an earlier message id
	Retries    uint64 // republished after an error
	Failed     uint64 // gave up after all retries
}

// Publisher publishes with message ids (Nats-Msg-Id), so a retried publish
// is deduplicated by the server, keeps a bounded number of bytes and
// messages in flight, and checks every ack, retrying refused ones. Safe for
// concurrent use; one owned goroutine collects acks until Close.
type Publisher struct {
	cfg    PublisherConfig
	js     jetstream.JetStream
	nc     *nats.Conn
	run    string
	bytes  *semaphore.Weighted
	queue  chan *pending
	ctx    context.Context // cancelled by Close, bounds retries
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool

	published, duplicates, retries, failed atomic.Uint64
}

type pending struct {
	msg  *nats.Msg
	fut  jetstream.PubAckFuture
	held int64
	res  chan error // buffered 1
}

// NewPublisher starts a publisher on the bus connection.
func (b *Bus) NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	cfg.fill()
	js, err := jetstream.New(b.NC, jetstream.WithPublishAsyncMaxPending(cfg.MaxInflightMsgs+16),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("bus: publisher: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{cfg: cfg, js: js, nc: b.NC, run: b.Names.Run, bytes: semaphore.NewWeighted(cfg.MaxInflightBytes),
		queue: make(chan *pending, cfg.MaxInflightMsgs), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go p.collect()
	return p, nil
}

// Stats returns the counters so far.
func (p *Publisher) Stats() PublishStats {
	return PublishStats{Published: p.published.Load(), Duplicates: p.duplicates.Load(),
		Retries: p.retries.Load(), Failed: p.failed.Load()}
}

// Close waits for the acks in flight (bounded by AckTimeout each), stops the
// collector and releases the publisher's resources. Idempotent.
func (p *Publisher) Close() {
	if p.closed.Swap(true) {
		<-p.done
		return
	}
	close(p.queue)
	<-p.done
	p.cancel()
	p.js.CleanupPublisher()
}

func newMsg(subject, id string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	return m
}

// Publish publishes one message and waits for its ack, retrying with the
// same id on errors. A duplicate ack (the id was seen within the stream's
// dedup window) counts as success: ack.Duplicate tells.
func (p *Publisher) Publish(ctx context.Context, subject, id string, data []byte) (*jetstream.PubAck, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	return p.publishSync(ctx, newMsg(subject, id, data), 0)
}

func (p *Publisher) publishSync(ctx context.Context, m *nats.Msg, tries int) (*jetstream.PubAck, error) {
	wait := p.cfg.RetryWait
	var last error
	for ; tries <= p.cfg.Retries; tries++ {
		if tries > 0 {
			p.retries.Add(1)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("bus: publish %s: %w (last error: %v)", m.Subject, ctx.Err(), last)
			case <-time.After(wait):
			}
			if wait *= 2; wait > 2*time.Second {
				wait = 2 * time.Second
			}
		}
		if err := p.deniedFor(m.Subject); err != nil {
			p.failed.Add(1)
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
		_, dch := Denied(p.nc)
		go func() { // a refused publish gets no ack: stop waiting at the refusal
			select {
			case <-dch:
				cancel()
			case <-actx.Done():
			}
		}()
		ack, err := p.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			p.count(ack)
			return ack, nil
		}
		if err := p.deniedFor(m.Subject); err != nil {
			p.failed.Add(1)
			return nil, err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	p.failed.Add(1)
	return nil, fmt.Errorf("bus: publish %s id %q: %w", m.Subject, m.Header.Get(jetstream.MsgIDHeader), last)
}

// deniedFor returns an ErrDenied error when the server refused this
// connection publishing to subject.
func (p *Publisher) deniedFor(subject string) error {
	err, _ := Denied(p.nc)
	if err == nil || !strings.Contains(err.Error(), `"`+subject+`"`) {
		return nil
	}
	return fmt.Errorf("%w: connection %q may not publish to %s on run %s: %v; the credentials given (--creds) are not this role's",
		ErrDenied, p.nc.Opts.Name, subject, p.run, err)
}

func (p *Publisher) count(ack *jetstream.PubAck) {
	if ack != nil && ack.Duplicate {
		p.duplicates.Add(1)
	} else {
		p.published.Add(1)
	}
}

// collect resolves acks in publish order (they arrive nearly in order),
// retries failures synchronously and releases the in-flight budget.
func (p *Publisher) collect() {
	defer close(p.done)
	for pd := range p.queue {
		var err error
		select {
		case ack := <-pd.fut.Ok():
			p.count(ack)
		case e := <-pd.fut.Err():
			_, err = p.publishSync(p.ctx, pd.msg, 1)
			_ = e // the retry's error carries the latest cause
		}
		p.bytes.Release(pd.held)
		pd.res <- err
	}
}

// Batch groups async publishes whose acks are awaited together, e.g. the K
// trajectories of one task. Not safe for concurrent use; use one per task.
type Batch struct {
	p    *Publisher
	list []*pending
}

// Batch starts an empty batch.
func (p *Publisher) Batch() *Batch { return &Batch{p: p} }

// Add publishes asynchronously. It blocks while the publisher's in-flight
// budget is spent (until ctx ends). Errors of the publish itself surface in
// Wait.
func (bt *Batch) Add(ctx context.Context, subject, id string, data []byte) error {
	p := bt.p
	if p.closed.Load() {
		return ErrClosed
	}
	held := min(int64(len(data))+1, p.cfg.MaxInflightBytes)
	if err := p.bytes.Acquire(ctx, held); err != nil {
		return fmt.Errorf("bus: publish %s: waiting for in-flight budget: %w", subject, err)
	}
	m := newMsg(subject, id, data)
	pd := &pending{msg: m, held: held, res: make(chan error, 1)}
	fut, err := p.js.PublishMsgAsync(m)
	if err != nil {
		// The client refused to queue it (too many pending): publish it
		// synchronously instead.
		p.bytes.Release(held)
		_, err = p.publishSync(ctx, m, 1)
		pd.res <- err
		bt.list = append(bt.list, pd)
		return nil
	}
	pd.fut = fut
	bt.list = append(bt.list, pd)
	defer func() {
		if recover() != nil { // queue closed by a concurrent Close
			pd.res <- ErrClosed
		}
	}()
	select {
	case p.queue <- pd:
	case <-ctx.Done():
		// The message is on its way; the ack is not awaited any more.
		p.bytes.Release(held)
		pd.res <- ctx.Err()
	}
	return nil
}

// Len is the number of messages added.
func (bt *Batch) Len() int { return len(bt.list) }

// Wait waits for every ack of the batch and returns the errors joined (nil
// when all were stored or deduplicated). After Wait the batch is empty.
func (bt *Batch) Wait(ctx context.Context) error {
	var errs []error
	for i, pd := range bt.list {
		select {
		case err := <-pd.res:
			if err != nil {
				errs = append(errs, err)
			}
		case <-ctx.Done():
			bt.list = bt.list[i:]
			return fmt.Errorf("bus: waiting for %d publish acks: %w", len(bt.list), ctx.Err())
		}
	}
	bt.list = bt.list[:0]
	return errors.Join(errs...)
}
