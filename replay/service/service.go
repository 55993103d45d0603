// Package service is the replay role: it drives the pure experience pool
// (package replay) from JetStream.
//
// It reads the learner's step reports from CONTROL and the scored
// trajectories they name from SCORED (one durable consumer on each, both
// named Config.Durable), folds each report into the pool in stream order,
// writes newly stored trajectories to EXPERIENCE (one subject per question),
// purges a retired question's subject, and answers the learner's sample
// requests on exgrpo.<run>.replay.sample once the fold has reached the step
// the request names (ALGORITHM.md E1-E7).
//
// Durability: the pool is a deterministic fold of the reports, so after each
// report the service writes a snapshot (the pool plus the scored trajectories
// it holds for later reports) to its own Object Store bucket, and only then
// acknowledges the messages folded into it. A restarted service restores the
// snapshot and continues with the unacknowledged messages; a redelivered
// report the snapshot already holds is skipped (replay.ErrStaleReport). The
// state after a restart is therefore the state of the uninterrupted fold.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"
)

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("replay service: invalid config")

// Config configures the replay role.
type Config struct {
	// Pool is the experience pool's configuration (K, mu, sigma, selection,
	// candidates per question). K must equal the learner's K.
	Pool replay.Config
	// Durable names the service's consumers on CONTROL and SCORED. Default "replay".
	Durable string
	// AckWait of those consumers; it must exceed FlushInterval plus a fold.
	// After a crash, what the old process held unacknowledged comes back
	// after it. Default 30s.
	AckWait time.Duration
	// FlushInterval: scored trajectories waiting for their report are made
	// durable (snapshot) and acknowledged at least this often. Default 5s.
	FlushInterval time.Duration
	// MaxBuffered bounds the scored trajectories held for reports not yet
	// folded; beyond it the SCORED consumer waits (back-pressure). Default 65536.
	MaxBuffered int
	// ReportWait bounds how long a report waits for a trajectory it names;
	// after it the report is folded without the missing ones (counted in
	// the metrics and logged). It must exceed AckWait, so that a restarted
	// service gets its predecessor's unacknowledged trajectories back first.
	// Default 3m.
	ReportWait time.Duration
	// SampleTimeout drops a sample request still waiting for its step after
	// this long (the learner has given up and retried). Default 2m.
	SampleTimeout time.Duration
	// Snapshots turns the per-report snapshot on (default true through
	// DefaultConfig). Without it a restart folds CONTROL from its start.
	Snapshots bool
	// MaxTrajectoryTokens caps prompt + response tokens of a scored
	// trajectory the service buffers; larger ones are discarded (the learner,
	// which knows the model, dead-letters them). Default 65536.
	MaxTrajectoryTokens int
	// MaxAhead: scored trajectories for steps more than this far beyond the
	// last folded step are not in flight and are discarded, so that a
	// rollout for a step that never comes cannot sit in the buffer (and in
	// every snapshot) for ever. It must exceed the learner's staleness S + 1.
	// Default 16.
	MaxAhead int
}

// DefaultConfig returns the defaults above with the paper's pool.
func DefaultConfig() Config {
	return Config{Pool: replay.DefaultConfig(), Durable: "replay", AckWait: 30 * time.Second,
		FlushInterval: 5 * time.Second, MaxBuffered: 1 << 16, ReportWait: 3 * time.Minute,
		SampleTimeout: 2 * time.Minute, Snapshots: true, MaxTrajectoryTokens: 1 << 16, MaxAhead: 16}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Pool.Validate(); err != nil {
		return fmt.Errorf("replay service: %w", err)
	}
	switch {
	case c.Durable == "" || strings.ContainsAny(c.Durable, ". *>"):
		return fmt.Errorf("%w: Durable %q must be a non-empty name without dots, spaces or wildcards", ErrConfig, c.Durable)
	case c.AckWait <= 0 || c.FlushInterval <= 0 || c.ReportWait <= 0 || c.SampleTimeout <= 0:
		return fmt.Errorf("%w: AckWait, FlushInterval, ReportWait and SampleTimeout must be positive (start from DefaultConfig)", ErrConfig)
	case c.FlushInterval >= c.AckWait:
		return fmt.Errorf("%w: FlushInterval %v must be below AckWait %v, or buffered messages are redelivered before they are acknowledged", ErrConfig, c.FlushInterval, c.AckWait)
	case c.ReportWait <= c.AckWait:
		return fmt.Errorf("%w: ReportWait %v must exceed AckWait %v, or a restarted service folds reports before their trajectories are redelivered", ErrConfig, c.ReportWait, c.AckWait)
	case c.MaxBuffered < 1:
		return fmt.Errorf("%w: MaxBuffered %d must be >= 1", ErrConfig, c.MaxBuffered)
	case c.MaxTrajectoryTokens < 1 || c.MaxAhead < 1:
		return fmt.Errorf("%w: MaxTrajectoryTokens %d and MaxAhead %d must be >= 1 (start from DefaultConfig)", ErrConfig, c.MaxTrajectoryTokens, c.MaxAhead)
	}
	return nil
}

// SnapshotBucket is the Object Store bucket of a run's replay snapshots.
func SnapshotBucket(n bus.Names) string { return n.ReplayBucket() }

const snapshotObject = "replay.snapshot"

// checkpointObject names the pool as it was right after step n, kept while
// step n is one of the lineage's last two learner checkpoints (the steps a
// restarted learner can resume after).
func checkpointObject(n int64) string { return fmt.Sprintf("replay.at.%d", n) }

// durableState is what a snapshot holds: the pool, the trajectories it
// holds for reports not yet folded (their messages are acknowledged once the
// snapshot is written), the lineage, and what a rewind would have to undo.
type durableState struct {
	V       uint16         `msgpack:"v"`
	Pool    []byte         `msgpack:"pool"`
	Pending []wire.Scored  `msgpack:"pending"`
	Lineage replay.Lineage `msgpack:"lineage"`
	// Deferred are purges of retired questions' experience not yet safe to
	// carry out (a resumed learner could return to before the retirement).
	Deferred []deferredPurge `msgpack:"deferred"`
	// Touched lists, per folded step after the lineage's floor, the
	// questions whose experience the step changed: what a rewind repairs.
	Touched []touchedStep `msgpack:"touched"`
}

type deferredPurge struct {
	Question string `msgpack:"q"`
	Step     int64  `msgpack:"step"`
}

type touchedStep struct {
	Step      int64    `msgpack:"step"`
	Questions []string `msgpack:"qs"`
}

// durableStateVersion 2 added the lineage; version 1 snapshots (one learner
// epoch, no records) are still read.
const durableStateVersion = 2

// Service is the replay role. Build with New, run with Run (once).
type Service struct {
	cfg  Config
	bus  *bus.Bus
	log  *zap.Logger
	met  *Metrics
	pub  *bus.Publisher
	snap jetstream.ObjectStore

	pool       *replay.Pool
	lin        replay.Lineage
	deferred   []deferredPurge
	touched    []touchedStep
	buffer     map[string]*wire.Scored // scored trajectories awaiting their report, by id
	unacked    []jetstream.Msg         // SCORED messages buffered but not yet in a snapshot
	reports    []pendingReport         // CONTROL messages in stream order, not yet handled
	samples    []pendingSample
	queries    chan query
	dirtyAt    time.Time // when the first unacked message arrived
	lastStep   int64     // last folded step, -1 before any
	waitLogged time.Time // when a waiting report was last logged
}

// waitLogEvery is how often a report waiting for its trajectories says so.
const waitLogEvery = 15 * time.Second

// pendingReport is one CONTROL message: a step report, or a lineage record
// (rec set).
type pendingReport struct {
	msg     jetstream.Msg
	rep     wire.StepReport
	rec     *wire.Lineage
	arrived time.Time
}

type pendingSample struct {
	req     wire.SampleRequest
	msg     *nats.Msg
	arrived time.Time
}

// query runs fn inside the service loop (for tests and inspection).
type query struct {
	fn   func(*replay.Pool, int64)
	done chan struct{}
}

// New builds the service on an open bus. metrics may be nil.
func New(cfg Config, b *bus.Bus, metrics *Metrics, log *zap.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	pool, err := replay.New(cfg.Pool)
	if err != nil {
		return nil, fmt.Errorf("replay service: %w", err)
	}
	return &Service{cfg: cfg, bus: b, log: log, met: metrics, pool: pool,
		buffer: map[string]*wire.Scored{}, queries: make(chan query), lastStep: -1, lin: replay.NewLineage()}, nil
}

// Inspect runs fn on the pool inside the service loop, with the last folded
// step (-1 before any), and returns when it has run. fn must not keep the
// pool. It fails when ctx ends or the service is not running.
func (s *Service) Inspect(ctx context.Context, fn func(p *replay.Pool, lastStep int64)) error {
	q := query{fn: fn, done: make(chan struct{})}
	select {
	case s.queries <- q:
	case <-ctx.Done():
		return fmt.Errorf("replay service: inspect: %w", ctx.Err())
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replay service: inspect: %w", ctx.Err())
	}
}

// Run serves until ctx ends (then it returns nil) or a fatal error.
func (s *Service) Run(ctx context.Context) error {
	var err error
	if s.pub, err = s.bus.NewPublisher(bus.DefaultPublisherConfig()); err != nil {
		return fmt.Errorf("replay service: %w", err)
	}
	defer s.pub.Close()
	if s.cfg.Snapshots {
		if err := s.restore(ctx); err != nil {
			return err
		}
	}
	s.log.Info("replay service starting", zap.Int64("last_step", s.lastStep), zap.Int("pool", s.pool.Len()),
		zap.Int("buffered", len(s.buffer)))
	s.observe()

	// Reports are folded strictly in stream order, so at most one is out
	// unacknowledged: JetStream redelivers a report before any later one
	// only then. With more in flight, a report delivered to a reader that
	// stopped (a restart) would come back after its successors, and folding
	// those first loses its trajectories (ALGORITHM.md E1: the pool is the
	// fold of the reports in step order).
	ctrlCons, err := s.bus.Reader(ctx, bus.Control, s.cfg.Durable, bus.ReaderOptions{AckWait: s.cfg.AckWait, MaxAckPending: 1})
	if err != nil {
		return fmt.Errorf("replay service: %w", err)
	}
	scoredCons, err := s.bus.Reader(ctx, bus.Scored, s.cfg.Durable, bus.ReaderOptions{AckWait: s.cfg.AckWait, MaxAckPending: s.cfg.MaxBuffered})
	if err != nil {
		return fmt.Errorf("replay service: %w", err)
	}

	ctrlCh := make(chan jetstream.Msg, 64)
	scoredCh := make(chan jetstream.Msg, 1024)
	sampleCh := make(chan *nats.Msg, 64)
	forward := func(ch chan jetstream.Msg) jetstream.MessageHandler {
		return func(m jetstream.Msg) {
			select {
			case ch <- m:
			case <-ctx.Done():
			}
		}
	}
	cc, err := ctrlCons.Consume(forward(ctrlCh), jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("replay service: consume control: %w", err)
	}
	defer cc.Stop()
	sc, err := scoredCons.Consume(forward(scoredCh), jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("replay service: consume scored: %w", err)
	}
	defer sc.Stop()
	sub, err := s.bus.NC.Subscribe(s.bus.Names.SampleSubject(), func(m *nats.Msg) {
		select {
		case sampleCh <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("replay service: subscribe %s: %w", s.bus.Names.SampleSubject(), err)
	}
	defer sub.Unsubscribe()

	tick := time.NewTicker(min(time.Second, s.cfg.FlushInterval/2))
	defer tick.Stop()
	for {
		// Stop reading SCORED while the buffer is full; reports still flow.
		in := scoredCh
		if len(s.buffer) >= s.cfg.MaxBuffered {
			in = nil
		}
		select {
		case <-ctx.Done():
			s.release(cc, sc)
			return nil
		case m := <-ctrlCh:
			s.onReport(ctx, m)
		case m := <-in:
			s.onScored(ctx, m)
		case m := <-sampleCh:
			s.onSample(m)
		case q := <-s.queries:
			q.fn(s.pool, s.lastStep)
			close(q.done)
			continue
		case <-tick.C:
		}
		if err := s.advance(ctx); err != nil {
			if ctx.Err() != nil {
				s.release(cc, sc)
				return nil
			}
			return err
		}
	}
}

// release hands back, on the way out, what this process holds but has not
// made durable: the waiting reports and the buffered trajectories not yet in a
// snapshot are negatively acknowledged, so a restarted service gets them at
// once instead of after AckWait. The readers stop first, so that nothing is
// redelivered to them on the way out.
func (s *Service) release(readers ...jetstream.ConsumeContext) {
	for _, r := range readers {
		r.Stop()
	}
	for _, pr := range s.reports {
		_ = pr.msg.Nak()
	}
	for _, m := range s.unacked {
		_ = m.Nak()
	}
	s.reports, s.unacked = nil, nil
}

// onReport queues a step report or a lineage record in stream order.
func (s *Service) onReport(ctx context.Context, m jetstream.Msg) {
	if m.Subject() == s.bus.Names.LineageSubject() {
		rec := new(wire.Lineage)
		err := wire.Decode(m.Data(), rec)
		if err == nil {
			err = rec.Validate()
		}
		if err != nil {
			s.dead(ctx, bus.Control, m, err)
			return
		}
		s.reports = append(s.reports, pendingReport{msg: m, rec: rec, arrived: time.Now()})
		return
	}
	var rep wire.StepReport
	if err := wire.Decode(m.Data(), &rep); err != nil {
		s.dead(ctx, bus.Control, m, err)
		return
	}
	s.reports = append(s.reports, pendingReport{msg: m, rep: rep, arrived: time.Now()})
}

// onScored buffers a scored trajectory until the report that names it.
func (s *Service) onScored(ctx context.Context, m jetstream.Msg) {
	var sc wire.Scored
	if err := wire.Decode(m.Data(), &sc); err != nil {
		s.dead(ctx, bus.Scored, m, err)
		return
	}
	if _, ok := s.buffer[sc.Traj.ID]; ok || s.folded(&sc) {
		// Already durable in the snapshot, or for a step already folded
		// (a stale or unused rollout): nothing to keep.
		_ = m.Ack()
		return
	}
	if why := s.unwanted(&sc); why != "" {
		// Not in flight or not possible: the pool can never store it (the
		// learner, which knows the model, dead-letters what is invalid).
		s.met.Discarded.Inc()
		s.log.Debug("scored trajectory not buffered", zap.String("id", sc.Traj.ID), zap.String("why", why))
		_ = m.Ack()
		return
	}
	s.buffer[sc.Traj.ID] = &sc
	if len(s.unacked) == 0 {
		s.dirtyAt = time.Now()
	}
	s.unacked = append(s.unacked, m)
	s.met.Buffered.Set(float64(len(s.buffer)))
}

// folded says a scored trajectory can no longer be named by a report to
// come: its step is folded in its own epoch, or its epoch is superseded.
// A trajectory of a newer epoch than the last record folded is kept: the
// new learner's rollouts can arrive on SCORED before its epoch record is
// read from CONTROL, and its steps restart below the last folded one.
func (s *Service) folded(sc *wire.Scored) bool {
	e, _ := wire.TaskEpoch(sc.Traj.TaskID)
	return e < s.lin.Epoch || (e == s.lin.Epoch && sc.Traj.Step <= s.lastStep)
}

// unwanted says why a scored trajectory is not buffered ("" to buffer it).
func (s *Service) unwanted(sc *wire.Scored) string {
	if err := sc.Traj.Check(wire.Limits{MaxTokens: s.cfg.MaxTrajectoryTokens}); err != nil {
		return err.Error()
	}
	if sc.Traj.Step > s.lastStep+int64(s.cfg.MaxAhead) {
		return fmt.Sprintf("step %d is more than %d steps beyond the last folded step %d", sc.Traj.Step, s.cfg.MaxAhead, s.lastStep)
	}
	if e, _ := wire.TaskEpoch(sc.Traj.TaskID); e < s.lin.Epoch {
		return fmt.Sprintf("task of learner epoch %d, superseded by epoch %d", e, s.lin.Epoch)
	}
	return ""
}

func (s *Service) onSample(m *nats.Msg) {
	var req wire.SampleRequest
	if err := wire.Decode(m.Data, &req); err != nil {
		s.reply(m, wire.SampleReply{Error: fmt.Sprintf("replay: bad sample request: %v", err)})
		return
	}
	s.met.SampleRequests.Inc()
	s.samples = append(s.samples, pendingSample{req: req, msg: m, arrived: time.Now()})
}

// advance folds every report whose trajectories are all here, answers the
// sample requests that became answerable, and flushes buffered acks.
func (s *Service) advance(ctx context.Context) error {
	for len(s.reports) > 0 {
		pr := s.reports[0]
		if pr.rec != nil {
			if err := s.onLineage(ctx, pr); err != nil {
				return err
			}
			s.reports = s.reports[1:]
			continue
		}
		next := s.lin
		if d := next.Report(&pr.rep); !d.Fold {
			s.met.Skipped.Inc()
			s.log.Info("step report left out of the ledger", zap.Int64("step", pr.rep.Step), zap.String("why", d.Why))
			_ = pr.msg.Ack()
			s.reports = s.reports[1:]
			continue
		}
		r, missing := s.assemble(&pr.rep)
		if len(missing) > 0 {
			if time.Since(pr.arrived) < s.cfg.ReportWait {
				if time.Since(s.waitLogged) >= waitLogEvery {
					s.waitLogged = time.Now()
					s.log.Info("step report waiting for trajectories it names", zap.Int64("step", pr.rep.Step),
						zap.Int("missing", len(missing)), zap.String("first", missing[0]),
						zap.Duration("waited", time.Since(pr.arrived).Round(time.Second)), zap.Duration("deadline", s.cfg.ReportWait))
				}
				break
			}
			s.met.MissingTrajectories.Add(float64(len(missing)))
			s.log.Warn("folding a step report without trajectories it names",
				zap.Int64("step", pr.rep.Step), zap.Strings("missing", missing))
		}
		s.lin = next
		if err := s.fold(ctx, pr, r); err != nil {
			return err
		}
		s.reports = s.reports[1:]
	}
	s.answer()
	if len(s.unacked) > 0 && time.Since(s.dirtyAt) >= s.cfg.FlushInterval {
		if err := s.persist(ctx); err != nil {
			return err
		}
	}
	return nil
}

// assemble builds the pool's view of a report from the buffered trajectories.
func (s *Service) assemble(rep *wire.StepReport) (replay.Report, []string) {
	return Assemble(rep, func(id string) (*wire.Scored, bool) {
		sc, ok := s.buffer[id]
		return sc, ok
	})
}

// Assemble builds the pool's view (replay.Report) of a step report, looking
// the trajectories it names up with scored; it returns the ids it could not
// find. Only a mixed-mode report's correct fresh rollouts can be stored
// (ALGORITHM.md E1, E2, E5), so only those are looked up; the replayed
// trajectory is already in the pool. The service and inspection share it, so
// that a fold outside the service gives the service's pool.
func Assemble(rep *wire.StepReport, scored func(id string) (*wire.Scored, bool)) (replay.Report, []string) {
	r := replay.Report{Step: rep.Step, Mixed: rep.Mixed, Groups: make([]replay.Group, 0, len(rep.Groups))}
	var missing []string
	for _, g := range rep.Groups {
		rg := replay.Group{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct, Replayed: g.Replayed}
		if rep.Mixed {
			for i, id := range g.TrajectoryIDs {
				if i >= len(g.Rewards) || g.Rewards[i] != 1 || (g.Replayed && id == g.ReplayedID) {
					continue
				}
				sc, ok := scored(id)
				if !ok {
					missing = append(missing, id)
					continue
				}
				t := &sc.Traj
				rg.Successes = append(rg.Successes, replay.Trajectory{ID: t.ID, PolicyVersion: t.PolicyVersion,
					Step: rep.Step, PromptTokens: t.PromptTokens, Tokens: t.Tokens, LogProbs: t.LogProbs})
			}
		}
		r.Groups = append(r.Groups, rg)
	}
	return r, missing
}

// fold applies one report, publishes its new experience, purges retired
// questions, persists, then acknowledges (ARCHITECTURE.md: ack only after
// the effect is durable).
func (s *Service) fold(ctx context.Context, pr pendingReport, r replay.Report) error {
	start := time.Now()
	wasRetired := make(map[string]bool, len(r.Groups))
	for _, g := range r.Groups {
		wasRetired[g.QuestionID] = s.pool.Retired(g.QuestionID)
	}
	if err := s.pool.Apply(r); err != nil {
		if errors.Is(err, replay.ErrStaleReport) {
			_ = pr.msg.Ack()
			return nil
		}
		s.dead(ctx, bus.Control, pr.msg, err)
		return nil
	}
	s.lastStep = r.Step
	batch := s.pub.Batch()
	added := 0
	for _, g := range r.Groups {
		if len(g.Successes) == 0 {
			continue
		}
		stored := map[string]bool{}
		for _, c := range s.pool.Candidates(g.QuestionID) {
			stored[c.ID] = true
		}
		for _, t := range g.Successes {
			if !stored[t.ID] {
				continue // a duplicate of a stored token sequence (E2)
			}
			sc := s.buffer[t.ID]
			exp := wire.Experience{RunID: s.bus.Names.Run, QuestionID: g.QuestionID, TrajectoryID: t.ID,
				Step: r.Step, PolicyVersion: t.PolicyVersion, PromptTokens: t.PromptTokens,
				Tokens: t.Tokens, LogProbs: t.LogProbs, Text: sc.Traj.Text}
			data, err := wire.Encode(&exp)
			if err != nil {
				return fmt.Errorf("replay service: %w", err)
			}
			if err := batch.Add(ctx, s.bus.Names.ExperienceSubject(g.QuestionID), t.ID, data); err != nil {
				return fmt.Errorf("replay service: %w", err)
			}
			added++
		}
	}
	if err := batch.Wait(ctx); err != nil {
		return fmt.Errorf("replay service: publish experience of step %d: %w", r.Step, err)
	}
	var touched []string
	for _, g := range r.Groups {
		retiredNow := !wasRetired[g.QuestionID] && s.pool.Retired(g.QuestionID)
		if len(g.Successes) > 0 || retiredNow {
			touched = append(touched, g.QuestionID)
		}
		if !retiredNow {
			continue
		}
		if r.Step > s.lin.Floor() {
			// A resumed learner could return to before this step: keep the
			// experience until no resume can (see wire.Lineage).
			s.deferred = append(s.deferred, deferredPurge{Question: g.QuestionID, Step: r.Step})
			continue
		}
		if err := s.bus.PurgeExperience(ctx, g.QuestionID); err != nil {
			return fmt.Errorf("replay service: %w", err)
		}
	}
	if len(touched) > 0 && r.Step > s.lin.Floor() {
		s.touched = append(s.touched, touchedStep{Step: r.Step, Questions: touched})
	}
	for id, sc := range s.buffer {
		if s.folded(sc) {
			delete(s.buffer, id)
		}
	}
	if err := s.persist(ctx); err != nil {
		return err
	}
	if err := pr.msg.Ack(); err != nil {
		s.log.Debug("ack step report", zap.Error(err))
	}
	s.met.Folded.Inc()
	s.met.Added.Add(float64(added))
	s.met.FoldSeconds.Observe(time.Since(start).Seconds())
	s.observe()
	s.log.Debug("folded step report", zap.Int64("step", r.Step), zap.Bool("mixed", r.Mixed),
		zap.Int("added", added), zap.Int("pool", s.pool.Len()))
	return nil
}

// persist writes the snapshot (when enabled) and acknowledges the buffered
// SCORED messages it now holds.
func (s *Service) persist(ctx context.Context) error {
	if s.cfg.Snapshots {
		st := durableState{V: durableStateVersion, Pool: s.pool.Snapshot(), Pending: make([]wire.Scored, 0, len(s.buffer)),
			Lineage: s.lin, Deferred: s.deferred, Touched: s.touched}
		for _, sc := range s.buffer {
			st.Pending = append(st.Pending, *sc)
		}
		// Deterministic bytes: pending trajectories in id order.
		sortScored(st.Pending)
		data, err := msgpack.Marshal(&st)
		if err != nil {
			return fmt.Errorf("replay service: encode snapshot: %w", err)
		}
		if err := s.putSnapshot(ctx, data); err != nil {
			return err
		}
		s.met.SnapshotBytes.Set(float64(len(data)))
	}
	for _, m := range s.unacked {
		_ = m.Ack()
	}
	s.unacked = s.unacked[:0]
	return nil
}

func (s *Service) snapshotStore(ctx context.Context) (jetstream.ObjectStore, error) {
	if s.snap != nil {
		return s.snap, nil
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	storage := jetstream.FileStorage
	if s.bus.Config.Memory {
		storage = jetstream.MemoryStorage
	}
	// Look, then create: never update a declaration another process made
	// (per-role credentials may allow reading it but not changing it).
	obs, err := s.bus.JS.ObjectStore(octx, SnapshotBucket(s.bus.Names))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = s.bus.JS.CreateObjectStore(octx, jetstream.ObjectStoreConfig{
			Bucket: SnapshotBucket(s.bus.Names), Description: "exgrpo replay pool snapshot",
			Storage: storage, Replicas: s.bus.Config.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = s.bus.JS.ObjectStore(octx, SnapshotBucket(s.bus.Names))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("replay service: snapshot bucket: %w", err)
	}
	s.snap = obs
	return obs, nil
}

func (s *Service) putSnapshot(ctx context.Context, data []byte) error {
	obs, err := s.snapshotStore(ctx)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(data)>>20)*time.Second)
	defer cancel()
	if _, err := obs.Put(octx, jetstream.ObjectMeta{Name: snapshotObject}, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("replay service: write snapshot: %w", err)
	}
	return nil
}

// ReadSnapshot returns the pool and pending trajectories of the last snapshot
// written for b's run (nil pool, nil error when there is none).
func ReadSnapshot(ctx context.Context, b *bus.Bus, cfg replay.Config) (*replay.Pool, []wire.Scored, error) {
	pool, st, err := readState(ctx, b, cfg)
	if err != nil || pool == nil {
		return nil, nil, err
	}
	return pool, st.Pending, nil
}

// readState reads the last snapshot: the pool and the rest of the state.
func readState(ctx context.Context, b *bus.Bus, cfg replay.Config) (*replay.Pool, *durableState, error) {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	obs, err := b.JS.ObjectStore(octx, SnapshotBucket(b.Names))
	cancel()
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("replay service: snapshot bucket: %w", err)
	}
	octx, cancel = context.WithTimeout(ctx, 10*time.Second)
	info, err := obs.GetInfo(octx, snapshotObject)
	cancel()
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("replay service: snapshot info: %w", err)
	}
	octx, cancel = context.WithTimeout(ctx, 30*time.Second+time.Duration(info.Size>>20)*time.Second)
	defer cancel()
	r, err := obs.Get(octx, snapshotObject)
	if err != nil {
		return nil, nil, fmt.Errorf("replay service: read snapshot: %w", err)
	}
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, info.Size))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, nil, fmt.Errorf("replay service: read snapshot: %w", err)
	}
	var st durableState
	if err := msgpack.Unmarshal(buf.Bytes(), &st); err != nil {
		return nil, nil, fmt.Errorf("replay service: decode snapshot: %w", err)
	}
	if st.V != 1 && st.V != durableStateVersion {
		return nil, nil, fmt.Errorf("replay service: snapshot version %d, this build reads 1 and %d", st.V, durableStateVersion)
	}
	pool, err := replay.Restore(cfg, st.Pool)
	if err != nil {
		return nil, nil, fmt.Errorf("replay service: %w", err)
	}
	if st.V == 1 { // before lineages: one epoch-0 ledger up to the pool's step
		st.Lineage = replay.NewLineage()
		if ps := pool.Stats(); ps.HasStep {
			st.Lineage.Last = ps.Step
		}
	}
	return pool, &st, nil
}

func (s *Service) restore(ctx context.Context) error {
	pool, st, err := readState(ctx, s.bus, s.cfg.Pool)
	if err != nil || pool == nil {
		return err
	}
	s.pool, s.lin, s.deferred, s.touched = pool, st.Lineage, st.Deferred, st.Touched
	s.lastStep = -1
	if ps := pool.Stats(); ps.HasStep {
		s.lastStep = ps.Step
	}
	for i := range st.Pending {
		s.buffer[st.Pending[i].Traj.ID] = &st.Pending[i]
	}
	return nil
}

// answer replies to every sample request whose step the fold has reached,
// and drops requests that waited too long.
func (s *Service) answer() {
	keep := s.samples[:0]
	for _, ps := range s.samples {
		switch {
		case ps.req.Epoch < s.lin.Epoch:
			s.reply(ps.msg, wire.SampleReply{Step: ps.req.Step, Error: fmt.Sprintf(
				"replay: sample request of learner epoch %d, superseded by epoch %d", ps.req.Epoch, s.lin.Epoch)})
		case ps.req.Epoch == s.lin.Epoch && ps.req.AfterStep <= s.lastStep:
			s.reply(ps.msg, s.sample(ps.req))
		case time.Since(ps.arrived) > s.cfg.SampleTimeout:
			s.met.SampleExpired.Inc()
		default:
			keep = append(keep, ps)
		}
	}
	s.samples = keep
}

// sample draws n_exp questions (ALGORITHM.md E6) with the request's seed, so
// that a retried request gets the same answer, and lists each question's
// candidates, oldest first (E7).
func (s *Service) sample(req wire.SampleRequest) wire.SampleReply {
	rng := rand.New(rand.NewPCG(uint64(req.Seed), uint64(req.Step)))
	picks := s.pool.Sample(req.N, rng)
	out := wire.SampleReply{Step: req.Step, Questions: make([]wire.SampledQuestion, 0, len(picks))}
	for _, p := range picks {
		q := wire.SampledQuestion{QuestionID: p.QuestionID, Bucket: p.Bucket}
		for _, c := range s.pool.Candidates(p.QuestionID) {
			q.Candidates = append(q.Candidates, c.ID)
		}
		out.Questions = append(out.Questions, q)
	}
	return out
}

func (s *Service) reply(m *nats.Msg, r wire.SampleReply) {
	if m.Reply == "" {
		return
	}
	data, err := wire.Encode(&r)
	if err != nil {
		data, _ = wire.Encode(&wire.SampleReply{Step: r.Step, Error: err.Error()})
	}
	if err := m.Respond(data); err != nil {
		s.log.Debug("sample reply", zap.Error(err))
	}
}

// dead sends an unprocessable message to DEAD with the reason and
// terminates it, so it is never redelivered.
func (s *Service) dead(ctx context.Context, from bus.Kind, m jetstream.Msg, reason error) {
	s.met.Dead.Inc()
	s.log.Warn("message to DEAD", zap.String("stream", string(from)), zap.Error(reason))
	if err := s.bus.DeadLetter(ctx, "replay", m, reason.Error()); err != nil {
		s.log.Error("dead letter", zap.Error(err)) // not acknowledged: redelivered, and retried then
	}
}

func (s *Service) observe() {
	st := s.pool.Stats()
	s.met.PoolQuestions.Set(float64(st.Questions))
	s.met.PoolTrajectories.Set(float64(st.Trajectories))
	s.met.Retired.Set(float64(st.Retired))
	s.met.LastStep.Set(float64(s.lastStep))
	s.met.Buffered.Set(float64(len(s.buffer)))
	for k := 1; k < len(st.Buckets); k++ {
		s.met.Bucket.WithLabelValues(fmt.Sprint(k)).Set(float64(st.Buckets[k]))
	}
}
