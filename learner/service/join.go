package service

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The learner's join. A trajectory is stored once, on ROLLOUTS; the
// verifier publishes only its verdict on SCORED, naming the trajectory's
// ROLLOUTS sequence. The learner follows ROLLOUTS and SCORED from its
// epoch's start (ordered consumers: no acks, the streams keep the messages;
// a restarted learner is a new epoch, whose rollouts and verdicts come after
// it follows); a rollout is received when both are in,
// matched by that sequence (so that two copies of one id, sampled twice
// after a redelivery, are never mixed up). Held on either side:
//
//   - trajectories of this epoch's steps in flight, waiting for their
//     verdict (a trajectory the verifiers never grade goes to DEAD through
//     their consumer's max deliveries; it is dropped with its step);
//   - verdicts waiting for their trajectory. One whose trajectory has not
//     come through the learner's own reader after joinWait (a reader reset
//     after a server restart, say) is fetched by sequence; when ROLLOUTS no
//     longer holds it (its byte limit discarded it), the rollout is asked
//     for again, as the fence does, and counted (rollouts_gone_total).
//
// Both are dropped when their step is trained; nothing waits beyond the
// gather deadline.

// joinWait is how long a verdict waits for its trajectory on the learner's
// own ROLLOUTS reader before it is fetched by sequence.
const joinWait = 3 * time.Second

// heldRollout is one ROLLOUTS message of this epoch, decoded. Its bytes
// are dropped once decoded (a held rollout would otherwise weigh twice);
// a dead letter gets them again by sequence.
type heldRollout struct {
	seq  uint64
	subj string
	data []byte // until decoded
	tr   *wire.Trajectory
}

// heldVerdict is a verdict waiting for its trajectory.
type heldVerdict struct {
	v     *wire.Verdict
	step  int64
	since time.Time
}

// onRollout handles one message of the learner's ROLLOUTS reader.
func (s *Service) onRollout(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	r := &heldRollout{seq: md.Sequence.Stream, subj: m.Subject(), data: m.Data()}
	s.hold(ctx, r)
}

// hold files a ROLLOUTS message: joined at once when its verdict is here,
// kept while its step is in flight, dropped otherwise.
func (s *Service) hold(ctx context.Context, r *heldRollout) {
	if _, dup := s.rolls[r.seq]; dup {
		return // a reader reset delivers again what it had delivered
	}
	if _, done := s.joined[r.seq]; done {
		return // the same, joined already
	}
	tr := new(wire.Trajectory)
	if err := wire.Decode(r.data, tr); err != nil {
		// The verifiers' consumer dead-letters it with the reason; a
		// verdict naming it cannot exist.
		s.met.Ignored.Inc()
		return
	}
	r.tr, r.data = tr, nil
	if hv, ok := s.verdicts[r.seq]; ok {
		delete(s.verdicts, r.seq)
		s.join(ctx, r, hv.v)
		return
	}
	e, _ := wire.TaskEpoch(tr.TaskID)
	if horizon := s.step + int64(s.cfg.Learner.Staleness); e == s.epoch && tr.Step > horizon {
		// No task of this epoch asked for it: forged, or a broken actor.
		// Refused now, not held (its verdict, if one comes, is fetched and
		// refused again; DEAD keeps one letter per sequence).
		s.deadRollout(ctx, r, fmt.Errorf("%w: trajectory %s: step %d is not in flight (the learner has asked for steps up to %d)",
			wire.ErrInvalid, tr.ID, tr.Step, horizon))
		return
	}
	if e != s.epoch || tr.Step < s.step {
		// Another epoch's, or a late copy of a trained step's.
		s.met.Ignored.Inc()
		return
	}
	s.rolls[r.seq] = r
}

// onVerdict handles one SCORED message: a verifier's batch of verdicts.
func (s *Service) onVerdict(ctx context.Context, m jetstream.Msg) {
	vs, err := wire.DecodeVerdicts(m.Data())
	if err != nil {
		s.met.Dead.Inc()
		s.log.Warn("message to DEAD", zap.String("stream", string(bus.Scored)), zap.Error(err))
		dl := wire.DeadLetter{Subject: m.Subject(), Role: "learner", Reason: err.Error(), Data: m.Data()}
		if md, err := m.Metadata(); err == nil {
			dl.Stream, dl.Sequence = md.Stream, md.Sequence.Stream
		}
		if err := s.d.Bus.PublishDead(ctx, dl); err != nil {
			s.log.Error("dead letter", zap.Error(err))
		}
		return
	}
	for i := range vs {
		s.verdict(ctx, &vs[i])
	}
}

// verdict files one verdict: joined at once when its trajectory is here,
// held otherwise (a second verdict of a rollout joined already is dropped:
// the first counts).
func (s *Service) verdict(ctx context.Context, v *wire.Verdict) {
	e, step, ok := wire.ParseTaskID(v.TaskID)
	if !ok || e != s.epoch || step < s.step {
		s.met.Ignored.Inc() // another epoch's, or of a step already trained (a regrade)
		return
	}
	if _, dup := s.joined[v.Seq]; dup {
		s.met.Ignored.Inc() // graded twice (a verifier died before its acks)
		return
	}
	if r, ok := s.rolls[v.Seq]; ok {
		delete(s.rolls, v.Seq)
		s.join(ctx, r, v)
		return
	}
	if _, dup := s.verdicts[v.Seq]; dup {
		s.met.Ignored.Inc() // a second verdict while the first waits: the first counts
		return
	}
	s.verdicts[v.Seq] = &heldVerdict{v: v, step: step, since: time.Now()}
}

// join pairs a trajectory with its verdict and hands the rollout to the fence.
func (s *Service) join(ctx context.Context, r *heldRollout, v *wire.Verdict) {
	s.joined[r.seq] = r.tr.Step
	if r.tr.ID != v.ID {
		err := fmt.Errorf("%w: verdict for %s names ROLLOUTS sequence %d, which holds %s", wire.ErrInvalid, v.ID, v.Seq, r.tr.ID)
		s.deadVerdict(ctx, v, err)
		s.retry(ctx, &wire.Scored{Traj: verdictPlace(v)}, err)
		return
	}
	sc := v.Join(*r.tr)
	s.admit(ctx, sc, r)
}

// fetchWaiting fetches by sequence the trajectories of the verdicts that
// waited joinWait for them.
func (s *Service) fetchWaiting(ctx context.Context) {
	var seqs []uint64
	for seq, hv := range s.verdicts {
		if time.Since(hv.since) >= joinWait {
			seqs = append(seqs, seq)
		}
	}
	if len(seqs) == 0 {
		return
	}
	got, err := s.d.Bus.GetRollouts(ctx, seqs)
	if err != nil {
		s.log.Warn("fetching trajectories by sequence", zap.Int("verdicts", len(seqs)), zap.Error(err))
		return
	}
	for seq, m := range got.Msgs {
		hv := s.verdicts[seq]
		delete(s.verdicts, seq)
		r := &heldRollout{seq: seq, subj: m.Subject, data: m.Data}
		tr := new(wire.Trajectory)
		if err := wire.Decode(m.Data, tr); err != nil {
			err = fmt.Errorf("verdict for %s names ROLLOUTS sequence %d, which does not decode: %w", hv.v.ID, seq, err)
			s.deadVerdict(ctx, hv.v, err)
			s.retry(ctx, &wire.Scored{Traj: verdictPlace(hv.v)}, err)
			continue
		}
		r.tr, r.data = tr, nil
		s.join(ctx, r, hv.v)
	}
	for _, seq := range got.Gone {
		hv := s.verdicts[seq]
		delete(s.verdicts, seq)
		s.met.RolloutsGone.Inc()
		err := fmt.Errorf("trajectory %s (ROLLOUTS sequence %d) is no longer on ROLLOUTS: its byte limit (%d bytes) discarded it before the learner read it",
			hv.v.ID, seq, s.d.Bus.StreamConfig(bus.Rollouts).MaxBytes)
		s.log.Warn("verdict without its trajectory; asking for the rollout again", zap.Error(err))
		s.retry(ctx, &wire.Scored{Traj: verdictPlace(hv.v)}, err)
	}
	if len(got.Later) > 0 {
		s.log.Debug("trajectories not fetched yet", zap.Int("n", len(got.Later)), zap.Error(got.Err))
	}
}

// prune drops what is held for steps already trained.
func (s *Service) prune() {
	for seq, r := range s.rolls {
		if r.tr.Step < s.step {
			delete(s.rolls, seq)
		}
	}
	for seq, hv := range s.verdicts {
		if hv.step < s.step {
			delete(s.verdicts, seq)
		}
	}
	for seq, step := range s.joined {
		if step < s.step {
			delete(s.joined, seq)
		}
	}
}

// verdictPlace is the part of a trajectory a verdict tells: its id, task,
// step and index (what locate needs to find the rollout it stands for).
func verdictPlace(v *wire.Verdict) wire.Trajectory {
	tr := wire.Trajectory{ID: v.ID, TaskID: v.TaskID, Index: -1}
	_, tr.Step, _ = wire.ParseTaskID(v.TaskID)
	if i := strings.LastIndexByte(v.ID, '/'); i >= 0 && v.ID[:i] == v.TaskID {
		if n, err := strconv.Atoi(v.ID[i+1:]); err == nil {
			tr.Index = n
		}
	}
	return tr
}

// deadRollout sends a refused trajectory's ROLLOUTS message to DEAD with the
// reason (ROLLOUTS keeps it; nothing is acknowledged on the learner's reader).
func (s *Service) deadRollout(ctx context.Context, r *heldRollout, reason error) {
	s.met.Dead.Inc()
	s.log.Warn("message to DEAD", zap.String("stream", string(bus.Rollouts)), zap.Error(reason))
	data := r.data
	if data == nil {
		if got, err := s.d.Bus.GetRollouts(ctx, []uint64{r.seq}); err == nil && got.Msgs[r.seq] != nil {
			data = got.Msgs[r.seq].Data
		}
	}
	if err := s.d.Bus.PublishDead(ctx, wire.DeadLetter{Stream: s.d.Bus.Names.Stream(bus.Rollouts), Subject: r.subj,
		Sequence: r.seq, Role: "learner", Reason: reason.Error(), Data: data}); err != nil {
		s.log.Error("dead letter", zap.Error(err))
	}
}

// deadVerdict sends a verdict that cannot be joined to DEAD with the reason.
func (s *Service) deadVerdict(ctx context.Context, v *wire.Verdict, reason error) {
	s.met.Dead.Inc()
	s.log.Warn("message to DEAD", zap.String("stream", string(bus.Scored)), zap.Error(reason))
	data, _ := wire.Encode(v)
	if err := s.d.Bus.PublishDead(ctx, wire.DeadLetter{Stream: s.d.Bus.Names.Stream(bus.Scored), Subject: s.d.Bus.Names.Subject(bus.Scored),
		Role: "learner", Reason: reason.Error(), Data: data}); err != nil {
		s.log.Error("dead letter", zap.Error(err))
	}
}
