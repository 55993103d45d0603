// Package worker is the verifier role: it pulls trajectories from ROLLOUTS
// (shared durable consumer "verifiers"), grades each from its head fields
// with the pure checker of its kind (verifier.Lookup) under a per-item time
// bound, and publishes the verdicts (the reward, and the trajectory's
// ROLLOUTS sequence; the trajectory stays where it is, stored once) to
// SCORED in group commits: the rollouts graded while the previous
// wire.Verdicts message waits for its publish ack go out together in the
// next (one when the worker is idle, up to Config.VerdictBatch under load).
// Each rollout is acked only after the message holding its verdict is acked.
// Undecodable input goes to DEAD with its reason; the worker carries on. Any
// number of workers may run.
package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	"github.com/exgrpo/exgrpo/internal/groupcommit"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Role is the role name in dead letters and metrics.
const Role = "verifier"

// Config tunes one worker.
type Config struct {
	// Concurrency is the number of trajectories graded at once; default one
	// per CPU core.
	Concurrency int
	// MaxInFlight bounds the trajectories held at once (pulled, being graded,
	// or waiting for their verdict's publish ack); default 256. Publishing is
	// I/O, so many more items wait on acks than are graded.
	MaxInFlight int
	// ItemTimeout bounds one grading; past it the trajectory scores 0 with
	// reason "timeout". Default 2s.
	ItemTimeout time.Duration
	// RetryDelay is the NAK delay after a transient failure (verdict publish
	// refused); default 1s.
	RetryDelay time.Duration
	// LagEvery is how often the consumer backlog gauges refresh; default 5s.
	LagEvery time.Duration
	// VerdictBatch bounds the verdicts of one SCORED message; default 64.
	// 1 publishes every verdict on its own.
	VerdictBatch int
	// WatchDead also runs the max-deliveries dead-letter watcher
	// (bus.WatchMaxDeliveries). Off by default: one privileged role per run
	// (the learner) runs it, since per-role credentials keep verifiers away
	// from advisories and the TASKS stream.
	WatchDead bool
}

// DefaultConfig returns the defaults above.
func DefaultConfig() Config {
	return Config{Concurrency: runtime.NumCPU(), MaxInFlight: 256, ItemTimeout: 2 * time.Second,
		RetryDelay: time.Second, LagEvery: 5 * time.Second, VerdictBatch: 64}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("worker: Concurrency %d must be >= 1", c.Concurrency)
	case c.MaxInFlight < c.Concurrency:
		return fmt.Errorf("worker: MaxInFlight %d must be >= Concurrency %d", c.MaxInFlight, c.Concurrency)
	case c.VerdictBatch < 1:
		return fmt.Errorf("worker: VerdictBatch %d must be >= 1", c.VerdictBatch)
	case c.ItemTimeout <= 0 || c.RetryDelay <= 0 || c.LagEvery <= 0:
		return fmt.Errorf("worker: durations must be positive (start from DefaultConfig)")
	}
	return nil
}

// Worker is one verifier role instance. Run it once.
type Worker struct {
	b      *bus.Bus
	cfg    Config
	log    *zap.Logger
	m      *metrics.Consumer
	lookup func(kind string) (verifier.Checker, error)

	mu       sync.Mutex
	checkers map[string]verifier.Checker
	grading  chan struct{} // Concurrency slots

}

// New makes a worker; reg may be nil (a private registry is used).
func New(b *bus.Bus, cfg Config, log *zap.Logger, reg *metrics.Registry) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if reg == nil {
		reg = metrics.New(Role, b.Names.Run, false)
	}
	return &Worker{b: b, cfg: cfg, log: log, m: reg.NewConsumer(), lookup: verifier.Lookup,
		checkers: map[string]verifier.Checker{}}, nil
}

// SetLookup replaces the checker lookup (tests, custom verifiers). Call
// before Run.
func (w *Worker) SetLookup(f func(kind string) (verifier.Checker, error)) { w.lookup = f }

func (w *Worker) checker(kind string) (verifier.Checker, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.checkers[kind]; ok {
		return c, nil
	}
	c, err := w.lookup(kind)
	if err != nil {
		return nil, err
	}
	w.checkers[kind] = c
	return c, nil
}

// Run grades until ctx ends; then it stops pulling, lets the items in hand
// finish (unacked ones are redelivered to another worker) and returns nil.
// It returns an error only when the bus cannot be used at all.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.b.Shared(ctx, bus.Rollouts)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	pub, err := w.b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer pub.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	if w.cfg.WatchDead {
		dw, err := w.b.NewDeadWatcher(ctx, Role)
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		wg.Go(func() { _ = dw.Run(ctx) })
	}
	wg.Go(func() { w.pollLag(ctx) })

	// A continuous pull keeps up to MaxInFlight trajectories in hand (until
	// their rollout is acked or given back); the grading itself is bounded
	// by Concurrency. The verdicts go out in group commits: the rollouts
	// graded while earlier SCORED messages wait for their acks go together.
	w.grading = make(chan struct{}, w.cfg.Concurrency)
	slots := make(chan struct{}, w.cfg.MaxInFlight)
	release := func() { <-slots; w.m.InFlight.Dec() }
	done := make(chan graded, w.cfg.MaxInFlight) // never blocks: at most MaxInFlight in hand
	var committed sync.WaitGroup
	committed.Go(func() {
		groupcommit.Run(done, w.cfg.VerdictBatch, verdictBatchesInFlight, func(b []graded) { w.commit(ctx, pub, b, release) })
	})
	var handlers sync.WaitGroup
	defer func() {
		handlers.Wait()
		close(done)
		committed.Wait()
	}()
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(w.cfg.MaxInFlight))
		if err != nil {
			w.log.Warn("pull rollouts", zap.Error(err))
			w.m.Errors.Inc()
			sleep(ctx, w.cfg.RetryDelay)
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			msg, err := it.Next()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					w.log.Warn("pull rollouts", zap.Error(err))
					w.m.Errors.Inc()
					sleep(ctx, w.cfg.RetryDelay)
				}
				break
			}
			slots <- struct{}{}
			w.m.InFlight.Inc()
			handlers.Go(func() {
				if g, ok := w.handle(ctx, msg); ok {
					done <- g // its commit releases its slot
					return
				}
				release()
			})
		}
		it.Stop()
		stop()
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (w *Worker) pollLag(ctx context.Context) {
	t := time.NewTicker(w.cfg.LagEvery)
	defer t.Stop()
	for {
		if lag, err := w.b.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer); err == nil {
			w.m.Pending.Set(float64(lag.Pending))
			w.m.AckPending.Set(float64(lag.AckPending))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// graded is one rollout graded, its verdict waiting for its SCORED message.
type graded struct {
	msg   jetstream.Msg
	v     wire.Verdict
	start time.Time
}

// handle grades one message. A graded rollout is returned for publishing;
// otherwise (ok false) it was dead-lettered.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) (g graded, ok bool) {
	start := time.Now()
	md, err := msg.Metadata()
	if err != nil {
		w.dead(ctx, msg, fmt.Sprintf("rollout without stream metadata: %v", err))
		return g, false
	}
	if md.NumDelivered > 1 {
		w.m.Redelivered.Inc()
	}
	// The trajectory is graded from its head fields: its blobs are checked,
	// never decoded.
	var traj wire.RawTrajectory
	if err := wire.DecodeRawTrajectory(msg.Data(), &traj); err != nil {
		w.dead(ctx, msg, err.Error())
		return g, false
	}
	id := traj.Head.ID
	if id == "" {
		w.dead(ctx, msg, "trajectory without id")
		return g, false
	}
	chk, err := w.checker(traj.Head.Kind)
	if err != nil {
		w.dead(ctx, msg, fmt.Sprintf("trajectory %s: %v", id, err))
		return g, false
	}
	if _, step, ok := wire.ParseTaskID(traj.Head.TaskID); ok {
		faultpoint.Hit("verifier.grade", step) // crash tests: holding an ungraded rollout
	}
	v, us := w.grade(chk, traj.Head.Answer, traj.Head.Text)
	g = graded{msg: msg, start: start, v: wire.Verdict{V: wire.VerdictSchema, RunID: traj.Head.RunID, ID: id, TaskID: traj.Head.TaskID,
		Seq: md.Sequence.Stream, Size: len(msg.Data()), Reason: v.Reason, Extracted: v.Extracted, VerifyMicros: us}}
	if v.Correct {
		g.v.Reward = 1
	}
	return g, true
}

// verdictBatchesInFlight bounds the SCORED messages waiting for their
// publish ack at once; what is graded meanwhile waits for the next one.
const verdictBatchesInFlight = 2

// commit publishes the verdicts of batch in one SCORED message and acks
// their rollouts once it is stored; when the publish fails, the rollouts
// are given back (NAK) to be graded again. Its message id names the batch
// (the first trajectory id, the count and a hash of all ids), so the
// publisher's own retries are deduplicated; a rollout graded again after a
// failure lands in another batch, and readers keep the first verdict per
// ROLLOUTS sequence.
func (w *Worker) commit(ctx context.Context, pub *bus.Publisher, batch []graded, release func()) {
	defer func() {
		for range batch {
			release()
		}
	}()
	vs := wire.Verdicts{RunID: w.b.Names.Run, Verdicts: make([]wire.Verdict, len(batch))}
	h := fnv.New64a()
	for i, g := range batch {
		vs.Verdicts[i] = g.v
		h.Write([]byte(g.v.ID))
		h.Write([]byte{0})
	}
	data, err := wire.Encode(&vs)
	if err != nil {
		if len(batch) > 1 { // too large together (huge extracted answers): each alone
			for i := range batch {
				w.commit(ctx, pub, batch[i:i+1], func() {})
			}
			return
		}
		w.dead(ctx, batch[0].msg, fmt.Sprintf("verdict of %s does not encode: %v", batch[0].v.ID, err))
		return
	}
	id := fmt.Sprintf("%s+%d/%016x", batch[0].v.ID, len(batch)-1, h.Sum64())
	b := pub.Batch()
	err = b.Add(ctx, w.b.Names.Subject(bus.Scored), id, data)
	if err == nil {
		err = b.Wait(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("publish verdicts", zap.String("first", batch[0].v.ID), zap.Int("verdicts", len(batch)), zap.Error(err))
			w.m.Errors.Inc()
			for _, g := range batch {
				_ = g.msg.NakWithDelay(w.cfg.RetryDelay)
			}
		}
		return
	}
	w.m.Published.Inc()
	for _, g := range batch {
		if err := g.msg.Ack(); err != nil {
			// Redelivered later, graded again; readers keep the first verdict.
			w.log.Debug("ack rollout", zap.String("id", g.v.ID), zap.Error(err))
		}
		w.m.Processed.Inc()
		w.m.Latency.Observe(time.Since(g.start).Seconds())
	}
}

// grade runs the checker under ItemTimeout. A checker past its bound keeps
// running on its own goroutine until it returns (checkers are time-bounded
// themselves; this is the role's second line of defence).
func (w *Worker) grade(chk verifier.Checker, gold, text string) (verifier.Verdict, int64) {
	w.grading <- struct{}{}
	defer func() { <-w.grading }()
	start := time.Now()
	res := make(chan verifier.Verdict, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				res <- verifier.Verdict{Reason: "checker_panic"}
			}
		}()
		res <- chk.Check(gold, text)
	}()
	t := time.NewTimer(w.cfg.ItemTimeout)
	defer t.Stop()
	select {
	case v := <-res:
		return v, time.Since(start).Microseconds()
	case <-t.C:
		return verifier.Verdict{Reason: verifier.ReasonTimeout}, time.Since(start).Microseconds()
	}
}

func (w *Worker) dead(ctx context.Context, msg jetstream.Msg, reason string) {
	if err := w.b.DeadLetter(ctx, Role, msg, reason); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("dead-letter failed; message left for redelivery", zap.String("reason", reason), zap.Error(err))
			w.m.Errors.Inc()
			_ = msg.NakWithDelay(w.cfg.RetryDelay)
		}
		return
	}
	w.log.Info("rollout dead-lettered", zap.String("reason", reason))
	w.m.Dead.Inc()
}
