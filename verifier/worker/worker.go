// Package worker is the verifier role: it pulls trajectories from ROLLOUTS
// (shared durable consumer "verifiers"), grades each with the pure checker of
// its kind (verifier.Lookup) under a per-item time bound, publishes a
// wire.Verdict to SCORED (the reward, and the trajectory's ROLLOUTS sequence;
// the trajectory stays where it is, stored once) with the trajectory id as
// message id, and acks only after that publish is acked. Undecodable input goes to DEAD with
// its reason; the worker carries on. Any number of workers may run.
package worker

import (
	"context"
	"errors"
	"fmt"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	"runtime"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/bus"
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
	// WatchDead also runs the max-deliveries dead-letter watcher
	// (bus.WatchMaxDeliveries). Off by default: one privileged role per run
	// (the learner) runs it, since per-role credentials keep verifiers away
	// from advisories and the TASKS stream.
	WatchDead bool
}

// DefaultConfig returns the defaults above.
func DefaultConfig() Config {
	return Config{Concurrency: runtime.NumCPU(), MaxInFlight: 256, ItemTimeout: 2 * time.Second,
		RetryDelay: time.Second, LagEvery: 5 * time.Second}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("worker: Concurrency %d must be >= 1", c.Concurrency)
	case c.MaxInFlight < c.Concurrency:
		return fmt.Errorf("worker: MaxInFlight %d must be >= Concurrency %d", c.MaxInFlight, c.Concurrency)
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

	// A continuous pull keeps up to MaxInFlight trajectories in hand; the
	// grading itself is bounded by Concurrency.
	w.grading = make(chan struct{}, w.cfg.Concurrency)
	slots := make(chan struct{}, w.cfg.MaxInFlight)
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
			wg.Go(func() {
				defer func() { <-slots; w.m.InFlight.Dec() }()
				w.handle(ctx, pub, msg)
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

// handle grades one message. It never returns an error: every outcome is an
// ack (scored or dead-lettered) or a NAK (redelivered later).
func (w *Worker) handle(ctx context.Context, pub *bus.Publisher, msg jetstream.Msg) {
	start := time.Now()
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		w.m.Redelivered.Inc()
	}
	// The trajectory is graded from its head fields: its blobs are checked,
	// never decoded.
	var traj wire.RawTrajectory
	if err := wire.DecodeRawTrajectory(msg.Data(), &traj); err != nil {
		w.dead(ctx, msg, err.Error())
		return
	}
	id := traj.Head.ID
	if id == "" {
		w.dead(ctx, msg, "trajectory without id")
		return
	}
	md, err := msg.Metadata()
	if err != nil {
		w.dead(ctx, msg, fmt.Sprintf("trajectory %s: no stream sequence: %v", id, err))
		return
	}
	chk, err := w.checker(traj.Head.Kind)
	if err != nil {
		w.dead(ctx, msg, fmt.Sprintf("trajectory %s: %v", id, err))
		return
	}
	if _, step, ok := wire.ParseTaskID(traj.Head.TaskID); ok {
		faultpoint.Hit("verifier.grade", step) // crash tests: holding an ungraded rollout
	}
	v, us := w.grade(chk, traj.Head.Answer, traj.Head.Text)
	verdict := wire.Verdict{RunID: traj.Head.RunID, ID: id, TaskID: traj.Head.TaskID, Seq: md.Sequence.Stream,
		Size: len(msg.Data()), Reason: v.Reason, Extracted: v.Extracted, VerifyMicros: us}
	if v.Correct {
		verdict.Reward = 1
	}
	data, err := wire.Encode(&verdict)
	if err != nil {
		w.dead(ctx, msg, fmt.Sprintf("verdict of %s does not encode: %v", id, err))
		return
	}
	batch := pub.Batch()
	err = batch.Add(ctx, w.b.Names.Subject(bus.Scored), id, data)
	if err == nil {
		err = batch.Wait(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("publish verdict", zap.String("id", id), zap.Error(err))
			w.m.Errors.Inc()
			_ = msg.NakWithDelay(w.cfg.RetryDelay)
		}
		return
	}
	w.m.Published.Inc()
	if err := msg.Ack(); err != nil {
		// Redelivered later and deduplicated on SCORED by its id.
		w.log.Debug("ack rollout", zap.String("id", id), zap.Error(err))
	}
	w.m.Processed.Inc()
	w.m.Latency.Observe(time.Since(start).Seconds())
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
