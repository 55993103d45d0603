package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// ErrNoRewind means an epoch record asks the pool to return to a step the
// service kept no state for: the learner resumed from a checkpoint older than
// the last two it announced.
var ErrNoRewind = errors.New("replay service: cannot return the pool to the learner's checkpoint")

// onLineage handles one lineage record at the head of the CONTROL queue
// (every report before it is folded): an epoch record may rewind the pool,
// a checkpoint record keeps the pool as of that step and carries out the
// purges that no resume can undo any more.
func (s *Service) onLineage(ctx context.Context, pr *pendingReport) error {
	rec := pr.rec
	d := s.lin.Record(rec)
	switch {
	case d.Rewind:
		s.log.Info("learner restarted: returning the pool to its checkpoint", zap.Int64("epoch", rec.Epoch),
			zap.Int64("resume_step", rec.Step), zap.Int64("from_step", s.lastStep))
		if err := s.rewind(ctx, d.To, rec.Epoch); err != nil {
			return err
		}
		s.met.Rewinds.Inc()
	case d.Why != "":
		s.met.Skipped.Inc()
		s.log.Info("lineage record left out", zap.String("why", d.Why))
	case rec.Kind == wire.LineageEpoch:
		s.log.Info("learner epoch", zap.Int64("epoch", rec.Epoch), zap.Int64("start_step", rec.Step))
	case rec.Kind == wire.LineageCheckpoint:
		if err := s.keepCheckpoint(ctx, rec.Step); err != nil {
			return err
		}
	}
	if err := s.persist(ctx); err != nil {
		return err
	}
	if err := pr.msg.Ack(); err != nil {
		s.log.Debug("ack lineage record", zap.Error(err))
	}
	s.observe()
	return nil
}

// keepCheckpoint stores the pool as of checkpoint step c, drops the stored
// pools of steps no longer in the lineage's last two checkpoints, and runs
// the deferred purges at or before the new floor.
func (s *Service) keepCheckpoint(ctx context.Context, c int64) error {
	obs, err := s.snapshotStore(ctx)
	if err != nil {
		return err
	}
	data := s.pool.Snapshot()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(data)>>20)*time.Second)
	_, err = obs.Put(octx, jetstream.ObjectMeta{Name: checkpointObject(c)}, bytes.NewReader(data))
	cancel()
	if err != nil {
		return fmt.Errorf("replay service: keep the pool of checkpoint %d: %w", c, err)
	}
	if err := s.pruneCheckpoints(ctx, obs); err != nil {
		return err
	}
	floor := s.lin.Floor()
	keep := s.deferred[:0]
	for _, p := range s.deferred {
		if p.Step > floor {
			keep = append(keep, p)
			continue
		}
		if err := s.bus.PurgeExperience(ctx, p.Question); err != nil {
			return fmt.Errorf("replay service: %w", err)
		}
	}
	s.deferred = keep
	s.touched = slices.DeleteFunc(s.touched, func(t touchedStep) bool { return t.Step <= floor })
	return nil
}

// pruneCheckpoints deletes kept pools of steps that are not among the
// lineage's checkpoints any more.
func (s *Service) pruneCheckpoints(ctx context.Context, obs jetstream.ObjectStore) error {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	infos, err := obs.List(lctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay service: list kept pools: %w", err)
	}
	want := map[string]bool{}
	for _, c := range s.lin.Checkpoints {
		want[checkpointObject(c)] = true
	}
	for _, in := range infos {
		if in.Name == snapshotObject || want[in.Name] || !strings.HasPrefix(in.Name, "replay.at.") {
			continue
		}
		if err := obs.Delete(lctx, in.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("replay service: delete kept pool %s: %w", in.Name, err)
		}
	}
	return nil
}

// rewind returns the pool, EXPERIENCE and the buffer to what they were right
// after step to (-1: the start) for learner epoch `epoch`.
func (s *Service) rewind(ctx context.Context, to, epoch int64) error {
	var pool *replay.Pool
	var err error
	if to < 0 {
		if pool, err = replay.New(s.cfg.Pool); err != nil {
			return fmt.Errorf("replay service: %w", err)
		}
		st, err := s.bus.Stream(ctx, bus.Experience)
		if err != nil {
			return fmt.Errorf("replay service: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = st.Purge(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("replay service: purge experience for a fresh start: %w", err)
		}
		s.deferred, s.touched = nil, nil
	} else {
		if pool, err = s.keptPool(ctx, to); err != nil {
			return err
		}
		var qs []string
		seen := map[string]bool{}
		for _, t := range s.touched {
			if t.Step <= to {
				continue
			}
			for _, q := range t.Questions {
				if !seen[q] {
					seen[q] = true
					qs = append(qs, q)
				}
			}
		}
		if err := s.repairExperience(ctx, pool, qs); err != nil {
			return err
		}
		s.deferred = slices.DeleteFunc(s.deferred, func(p deferredPurge) bool { return p.Step > to })
		s.touched = slices.DeleteFunc(s.touched, func(t touchedStep) bool { return t.Step > to })
	}
	s.pool, s.lastStep = pool, to
	return nil
}

// keptPool reads the pool kept for checkpoint step n.
func (s *Service) keptPool(ctx context.Context, n int64) (*replay.Pool, error) {
	obs, err := s.snapshotStore(ctx)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	data, err := getObject(octx, obs, checkpointObject(n))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: the learner resumed after step %d, but the service kept the pool only after steps %v",
			ErrNoRewind, n, s.lin.Checkpoints)
	}
	if err != nil {
		return nil, fmt.Errorf("replay service: read the pool of checkpoint %d: %w", n, err)
	}
	p, err := replay.Restore(s.cfg.Pool, data)
	if err != nil {
		return nil, fmt.Errorf("replay service: the pool of checkpoint %d: %w", n, err)
	}
	return p, nil
}

// getObject reads a whole object with a buffer sized from its info.
func getObject(ctx context.Context, obs jetstream.ObjectStore, name string) ([]byte, error) {
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	r, err := obs.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, info.Size))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// repairExperience makes the EXPERIENCE subjects of questions hold exactly
// what pool stores for them: messages of trajectories the pool does not hold
// (stored by the steps a rewind undid) are deleted. Nothing has to be
// added back: purges after the floor were deferred.
func (s *Service) repairExperience(ctx context.Context, pool *replay.Pool, questions []string) error {
	if len(questions) == 0 {
		return nil
	}
	st, err := s.bus.Stream(ctx, bus.Experience)
	if err != nil {
		return fmt.Errorf("replay service: %w", err)
	}
	const perRead = 256 // subjects per ordered consumer
	for len(questions) > 0 {
		n := min(perRead, len(questions))
		part := questions[:n]
		questions = questions[n:]
		keep := map[string]bool{}
		subjects := make([]string, len(part))
		for i, q := range part {
			subjects[i] = s.bus.Names.ExperienceSubject(q)
			for _, id := range pool.StoredIDs(q) {
				keep[id] = true
			}
		}
		var drop []uint64
		err := bus.ReadSubjects(ctx, s.bus, bus.Experience, subjects, func(m jetstream.Msg) {
			var e wire.Experience
			meta, merr := m.Metadata()
			if merr != nil {
				return
			}
			if wire.Decode(m.Data(), &e) != nil || !keep[e.TrajectoryID] {
				drop = append(drop, meta.Sequence.Stream)
			}
		})
		if err != nil {
			return fmt.Errorf("replay service: read experience to repair: %w", err)
		}
		for _, seq := range drop {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := st.DeleteMsg(dctx, seq)
			cancel()
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("replay service: delete experience message %d: %w", seq, err)
			}
		}
		if len(drop) > 0 {
			s.log.Info("experience of undone steps deleted", zap.Int("messages", len(drop)), zap.Int("questions", n))
		}
	}
	return nil
}
