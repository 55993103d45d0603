// Package service is the replay role: it drives the pure experience pool
// (package replay) from JetStream.
//
// It reads the learner's step reports from CONTROL (one durable consumer,
// named Config.Durable), fetches from ROLLOUTS, by the sequences the report
// names, only the trajectories the pool can store (a mixed-mode step's
// correct fresh rollouts), folds each report into the pool in stream order,
// writes newly stored trajectories to EXPERIENCE (one subject per question),
// purges a retired question's subject, and answers the learner's sample
// requests on exgrpo.<run>.replay.sample once the fold has reached the step
// the request names (ALGORITHM.md E1-E7).
//
// Durability: the pool is a deterministic fold of the reports and of the
// trajectories ROLLOUTS stores once, so after each report the service writes
// a snapshot (the pool and its lineage) to its own Object Store bucket, and
// only then acknowledges the report. A restarted service restores the
// snapshot and continues with the unacknowledged report; a redelivered
// report the snapshot already holds is skipped (replay.ErrStaleReport). The
// state after a restart is therefore the state of the uninterrupted fold. A
// trajectory ROLLOUTS no longer holds when its report is folded (discarded
// by the stream's byte limit, see bus.Config.RolloutsMaxBytes) is left out,
// counted (missing_trajectories_total) and logged.
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
	// Durable names the service's consumer on CONTROL. Default "replay".
	Durable string
	// AckWait of that consumer; it must exceed a fold. After a crash, the
	// report the old process held unacknowledged comes back after it.
	// Default 30s.
	AckWait time.Duration
	// ReportWait bounds how long a report waits for a trajectory it names
	// that ROLLOUTS cannot serve yet (a replica behind its leader, a leader
	// election); after it the report is folded without the missing ones
	// (counted in the metrics and logged). One ROLLOUTS no longer holds is
	// left out at once. Default 3m.
	ReportWait time.Duration
	// SampleTimeout drops a sample request still waiting for its step after
	// this long (the learner has given up and retried). Default 2m.
	SampleTimeout time.Duration
	// Snapshots turns the per-report snapshot on (default true through
	// DefaultConfig). Without it a restart folds CONTROL from its start.
	Snapshots bool
	// MaxTrajectoryTokens caps prompt + response tokens of a trajectory the
	// service stores; a report naming a larger one is folded without it (the
	// learner, which knows the model, refuses such rollouts). Default 65536.
	MaxTrajectoryTokens int
}

// DefaultConfig returns the defaults above with the paper's pool.
func DefaultConfig() Config {
	return Config{Pool: replay.DefaultConfig(), Durable: "replay", AckWait: 30 * time.Second,
		ReportWait: 3 * time.Minute, SampleTimeout: 2 * time.Minute, Snapshots: true, MaxTrajectoryTokens: 1 << 16}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Pool.Validate(); err != nil {
		return fmt.Errorf("replay service: %w", err)
	}
	switch {
	case c.Durable == "" || strings.ContainsAny(c.Durable, ". *>"):
		return fmt.Errorf("%w: Durable %q must be a non-empty name without dots, spaces or wildcards", ErrConfig, c.Durable)
	case c.AckWait <= 0 || c.ReportWait <= 0 || c.SampleTimeout <= 0:
		return fmt.Errorf("%w: AckWait, ReportWait and SampleTimeout must be positive (start from DefaultConfig)", ErrConfig)
	case c.MaxTrajectoryTokens < 1:
		return fmt.Errorf("%w: MaxTrajectoryTokens %d must be >= 1 (start from DefaultConfig)", ErrConfig, c.MaxTrajectoryTokens)
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

// durableState is what a snapshot holds: the pool, the lineage, and what a
// rewind would have to undo.
type durableState struct {
	V    uint16 `msgpack:"v"`
	Pool []byte `msgpack:"pool"`
	// Pending were the scored trajectories held for reports not yet folded,
	// when SCORED carried them (versions 1 and 2); read and ignored: the
	// reports fetch their trajectories from ROLLOUTS.
	Pending []wire.Scored  `msgpack:"pending,omitempty"`
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

// durableStateVersion 2 added the lineage; version 3 dropped the pending
// trajectories. Versions 1 (one learner epoch, no records) and 2 are still
// read.
const durableStateVersion = 3

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
	reports    []*pendingReport // CONTROL messages in stream order, not yet handled
	samples    []pendingSample
	queries    chan query
	lastStep   int64     // last folded step, -1 before any
	waitLogged time.Time // when a waiting report was last logged
}

// waitLogEvery is how often a report waiting for its trajectories says so.
const waitLogEvery = 15 * time.Second

// pendingReport is one CONTROL message: a step report, or a lineage record
// (rec set). A report's trajectories are fetched from ROLLOUTS when it is
// next to fold.
type pendingReport struct {
	msg     jetstream.Msg
	rep     wire.StepReport
	rec     *wire.Lineage
	arrived time.Time
	trajs   map[uint64]*wire.Trajectory // fetched, by ROLLOUTS sequence
	gone    map[uint64]string           // never to be found, with the reason
	later   error                       // why the last fetch left some for later
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
		queries: make(chan query), lastStep: -1, lin: replay.NewLineage()}, nil
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
	s.log.Info("replay service starting", zap.Int64("last_step", s.lastStep), zap.Int("pool", s.pool.Len()))
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

	ctrlCh := make(chan jetstream.Msg, 64)
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

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.release(cc)
			return nil
		case m := <-ctrlCh:
			s.onReport(ctx, m)
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
				s.release(cc)
				return nil
			}
			return err
		}
	}
}

// release hands back, on the way out, what this process holds but has not
// made durable: the waiting reports are negatively acknowledged, so a
// restarted service gets them at once instead of after AckWait. The readers
// stop first, so that nothing is redelivered to them on the way out.
func (s *Service) release(readers ...jetstream.ConsumeContext) {
	for _, r := range readers {
		r.Stop()
	}
	for _, pr := range s.reports {
		_ = pr.msg.Nak()
	}
	s.reports = nil
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
		s.reports = append(s.reports, &pendingReport{msg: m, rec: rec, arrived: time.Now()})
		return
	}
	var rep wire.StepReport
	if err := wire.Decode(m.Data(), &rep); err != nil {
		s.dead(ctx, bus.Control, m, err)
		return
	}
	s.reports = append(s.reports, &pendingReport{msg: m, rep: rep, arrived: time.Now()})
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

// advance folds every report whose trajectories are all here (fetched from
// ROLLOUTS, or gone from it for good), and answers the sample requests that
// became answerable.
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
		if err := s.fetch(ctx, pr); err != nil {
			return err
		}
		r, missing := s.assemble(pr)
		if len(missing) > 0 {
			waiting := 0
			for _, n := range missing {
				if _, gone := pr.gone[n.Seq]; !gone {
					waiting++
				}
			}
			if waiting > 0 && time.Since(pr.arrived) < s.cfg.ReportWait {
				if time.Since(s.waitLogged) >= waitLogEvery {
					s.waitLogged = time.Now()
					s.log.Info("step report waiting for trajectories it names", zap.Int64("step", pr.rep.Step),
						zap.Int("missing", waiting), zap.String("first", missing[0].ID), zap.NamedError("last_error", pr.later),
						zap.Duration("waited", time.Since(pr.arrived).Round(time.Second)), zap.Duration("deadline", s.cfg.ReportWait))
				}
				break
			}
			s.met.MissingTrajectories.Add(float64(len(missing)))
			why := make([]string, 0, len(missing))
			for _, n := range missing {
				reason, ok := pr.gone[n.Seq]
				if !ok {
					reason = fmt.Sprintf("not served within %v: %v", s.cfg.ReportWait, pr.later)
				}
				why = append(why, fmt.Sprintf("%s (ROLLOUTS seq %d): %s", n.ID, n.Seq, reason))
			}
			s.log.Warn("folding a step report without trajectories it names",
				zap.Int64("step", pr.rep.Step), zap.Strings("missing", why))
		}
		s.lin = next
		if err := s.fold(ctx, pr, r); err != nil {
			return err
		}
		s.reports = s.reports[1:]
	}
	s.answer()
	return nil
}

// fetch gets from ROLLOUTS the trajectories of pr that the pool can store
// and that are neither fetched nor gone yet. A trajectory that is not the
// one named (another id at that sequence) or that no pool could hold is
// gone, with the reason.
func (s *Service) fetch(ctx context.Context, pr *pendingReport) error {
	if pr.trajs == nil {
		pr.trajs, pr.gone = map[uint64]*wire.Trajectory{}, map[uint64]string{}
	}
	var seqs []uint64
	names := map[uint64]string{}
	for _, n := range Named(&pr.rep) {
		if _, ok := pr.trajs[n.Seq]; ok {
			continue
		}
		if _, ok := pr.gone[n.Seq]; ok {
			continue
		}
		if n.Seq == 0 {
			pr.gone[0] = "the report names no ROLLOUTS sequence for it (a report written before trajectories were stored once)"
			continue
		}
		seqs = append(seqs, n.Seq)
		names[n.Seq] = n.ID
	}
	if len(seqs) == 0 {
		return nil
	}
	got, err := s.bus.GetRollouts(ctx, seqs)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pr.later = err // the stream could not be looked up: ask again at the next tick
		return nil
	}
	pr.later = got.Err
	s.met.Fetched.Add(float64(len(got.Msgs)))
	for seq, m := range got.Msgs {
		t := new(wire.Trajectory)
		if err := wire.Decode(m.Data, t); err != nil {
			pr.gone[seq] = fmt.Sprintf("ROLLOUTS seq %d does not decode: %v", seq, err)
			continue
		}
		if t.ID != names[seq] {
			pr.gone[seq] = fmt.Sprintf("ROLLOUTS seq %d holds trajectory %s", seq, t.ID)
			continue
		}
		if err := t.Check(wire.Limits{MaxTokens: s.cfg.MaxTrajectoryTokens}); err != nil {
			pr.gone[seq] = err.Error()
			continue
		}
		pr.trajs[seq] = t
	}
	for _, seq := range got.Gone {
		pr.gone[seq] = fmt.Sprintf("no longer on ROLLOUTS: discarded by its byte limit (%d bytes) or deleted",
			s.bus.StreamConfig(bus.Rollouts).MaxBytes)
	}
	return nil
}

// assemble builds the pool's view of a report from the fetched trajectories.
func (s *Service) assemble(pr *pendingReport) (replay.Report, []NamedTrajectory) {
	return Assemble(&pr.rep, func(id string, seq uint64) (*wire.Trajectory, bool) {
		t, ok := pr.trajs[seq]
		return t, ok
	})
}

// NamedTrajectory is a trajectory a step report names: its id and ROLLOUTS
// sequence (0 when the report gives none).
type NamedTrajectory struct {
	ID  string
	Seq uint64
}

// Named lists the trajectories of a report that the pool can store: only a
// mixed-mode report's correct fresh rollouts (ALGORITHM.md E1, E2, E5); the
// replayed trajectory is already in the pool. These, and no others, are what
// the replay service reads from ROLLOUTS.
func Named(rep *wire.StepReport) []NamedTrajectory {
	if !rep.Mixed {
		return nil
	}
	var out []NamedTrajectory
	for _, g := range rep.Groups {
		for i, id := range g.TrajectoryIDs {
			if i >= len(g.Rewards) || g.Rewards[i] != 1 || (g.Replayed && id == g.ReplayedID) {
				continue
			}
			n := NamedTrajectory{ID: id}
			if i < len(g.Seqs) {
				n.Seq = g.Seqs[i]
			}
			out = append(out, n)
		}
	}
	return out
}

// Assemble builds the pool's view (replay.Report) of a step report, looking
// up the trajectories Named lists with lookup (by id and ROLLOUTS sequence);
// it returns the ones it could not find. The service and inspection share
// it, so that a fold outside the service gives the service's pool.
func Assemble(rep *wire.StepReport, lookup func(id string, seq uint64) (*wire.Trajectory, bool)) (replay.Report, []NamedTrajectory) {
	r := replay.Report{Step: rep.Step, Mixed: rep.Mixed, Groups: make([]replay.Group, 0, len(rep.Groups))}
	var missing []NamedTrajectory
	for _, g := range rep.Groups {
		rg := replay.Group{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct, Replayed: g.Replayed}
		if rep.Mixed {
			for i, id := range g.TrajectoryIDs {
				if i >= len(g.Rewards) || g.Rewards[i] != 1 || (g.Replayed && id == g.ReplayedID) {
					continue
				}
				var seq uint64
				if i < len(g.Seqs) {
					seq = g.Seqs[i]
				}
				t, ok := lookup(id, seq)
				if !ok {
					missing = append(missing, NamedTrajectory{ID: id, Seq: seq})
					continue
				}
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
func (s *Service) fold(ctx context.Context, pr *pendingReport, r replay.Report) error {
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
	texts := make(map[string]string, len(pr.trajs))
	for _, t := range pr.trajs {
		texts[t.ID] = t.Text
	}
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
			exp := wire.Experience{RunID: s.bus.Names.Run, QuestionID: g.QuestionID, TrajectoryID: t.ID,
				Step: r.Step, PolicyVersion: t.PolicyVersion, PromptTokens: t.PromptTokens,
				Tokens: t.Tokens, LogProbs: t.LogProbs, Text: texts[t.ID]}
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

// persist writes the snapshot (when enabled).
func (s *Service) persist(ctx context.Context) error {
	if s.cfg.Snapshots {
		st := durableState{V: durableStateVersion, Pool: s.pool.Snapshot(),
			Lineage: s.lin, Deferred: s.deferred, Touched: s.touched}
		data, err := msgpack.Marshal(&st)
		if err != nil {
			return fmt.Errorf("replay service: encode snapshot: %w", err)
		}
		if err := s.putSnapshot(ctx, data); err != nil {
			return err
		}
		s.met.SnapshotBytes.Set(float64(len(data)))
	}
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

// ReadSnapshot returns the pool of the last snapshot written for b's run
// (nil pool, nil error when there is none).
func ReadSnapshot(ctx context.Context, b *bus.Bus, cfg replay.Config) (*replay.Pool, error) {
	pool, _, err := readState(ctx, b, cfg)
	return pool, err
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
	if st.V < 1 || st.V > durableStateVersion {
		return nil, nil, fmt.Errorf("replay service: snapshot version %d, this build reads 1 to %d", st.V, durableStateVersion)
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
	for k := 1; k < len(st.Buckets); k++ {
		s.met.Bucket.WithLabelValues(fmt.Sprint(k)).Set(float64(st.Buckets[k]))
	}
}
