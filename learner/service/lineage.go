package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// startEpoch makes this process the run's next learner epoch (wire.Lineage):
// one above the newest epoch record on CONTROL, announced with the step it
// starts at before any of its tasks. Tasks the previous epoch left in TASKS
// are purged: their rollouts could never be trained on.
func (s *Service) startEpoch(ctx context.Context) error {
	last, err := s.lastEpoch(ctx)
	if err != nil {
		return err
	}
	s.epoch = last + 1
	if last > 0 {
		st, err := s.d.Bus.Stream(ctx, bus.Tasks)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = st.Purge(pctx)
			cancel()
		}
		if err != nil {
			// Not fatal: the actors sample them, the learner ignores them.
			s.log.Warn("could not purge the previous epoch's tasks", zap.Error(err))
		}
	}
	return s.publishLineage(ctx, wire.Lineage{Kind: wire.LineageEpoch, Epoch: s.epoch, Step: s.step})
}

// lastEpoch reads the newest lineage record's epoch (0 when there is none).
func (s *Service) lastEpoch(ctx context.Context) (int64, error) {
	st, err := s.d.Bus.Stream(ctx, bus.Control)
	if err != nil {
		return 0, fmt.Errorf("learner service: %w", err)
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := st.GetLastMsgForSubject(gctx, s.d.Bus.Names.LineageSubject())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("learner service: read the last lineage record: %w", err)
	}
	var rec wire.Lineage
	if err := wire.Decode(m.Data, &rec); err != nil {
		return 0, fmt.Errorf("learner service: the last lineage record on CONTROL: %w", err)
	}
	return rec.Epoch, nil
}

// publishLineage publishes a lineage record of this epoch and waits for it.
func (s *Service) publishLineage(ctx context.Context, rec wire.Lineage) error {
	rec.RunID, rec.UnixMs = s.d.Bus.Names.Run, time.Now().UnixMilli()
	data, err := wire.Encode(&rec)
	if err != nil {
		return fmt.Errorf("learner service: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if _, err := s.pub.Publish(pctx, s.d.Bus.Names.LineageSubject(), rec.MsgID(), data); err != nil {
		return fmt.Errorf("learner service: publish %s record of epoch %d: %w", rec.Kind, rec.Epoch, err)
	}
	return nil
}
