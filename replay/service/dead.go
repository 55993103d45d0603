package service

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// deadLetter publishes m to DEAD with the reason (ARCHITECTURE.md: never
// silently dropped, never a crash). The caller then terminates m.
func deadLetter(ctx context.Context, b *bus.Bus, pub *bus.Publisher, role string, from bus.Kind, m jetstream.Msg, reason error) error {
	dl := wire.DeadLetter{RunID: b.Names.Run, Stream: b.Names.Stream(from), Subject: m.Subject(),
		Role: role, Reason: reason.Error(), UnixMs: time.Now().UnixMilli()}
	if md, err := m.Metadata(); err == nil {
		dl.Sequence, dl.Deliveries = md.Sequence.Stream, md.NumDelivered
	}
	data := m.Data()
	if len(data) > 64<<10 {
		data = data[:64<<10]
	}
	dl.Data = data
	enc, err := wire.Encode(&dl)
	if err != nil {
		return fmt.Errorf("replay service: encode dead letter: %w", err)
	}
	id := fmt.Sprintf("%s/%d", dl.Stream, dl.Sequence)
	if _, err := pub.Publish(ctx, b.Names.DeadSubject(from), id, enc); err != nil {
		return fmt.Errorf("replay service: dead letter: %w", err)
	}
	return nil
}

func sortScored(s []wire.Scored) {
	sort.Slice(s, func(i, j int) bool { return s[i].Traj.ID < s[j].Traj.ID })
}
