package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoProbe: no probe was published for a version.
var ErrNoProbe = errors.New("bus: no probe for this version")

// ProbeKey is the KV key of version v's probe.
func ProbeKey(v int64) string { return "probe.v" + strconv.FormatInt(v, 10) }

// PublishProbe stores the probe of p.Version in KV (key ProbeKey), before
// the version's weights are announced, and deletes the probe of the
// version that falls out of KeepWeights.
func (b *Bus) PublishProbe(ctx context.Context, p wire.Probe) error {
	p.RunID = b.Names.Run
	data, err := wire.Encode(&p)
	if err != nil {
		return fmt.Errorf("bus: encode probe v%d: %w", p.Version, err)
	}
	err = b.retryWeights(ctx, "probe", p.Version, func() error {
		octx, cancel := b.opCtx(ctx)
		defer cancel()
		_, err := b.State.Put(octx, ProbeKey(p.Version), data)
		return err
	})
	if err != nil {
		return fmt.Errorf("bus: put probe v%d: %w", p.Version, err)
	}
	if old := p.Version - int64(b.Config.KeepWeights); old >= 0 {
		octx, cancel := b.opCtx(ctx)
		defer cancel()
		_ = b.State.Delete(octx, ProbeKey(old))
	}
	return nil
}

// FetchProbe reads version v's probe (ErrNoProbe when there is none).
func (b *Bus) FetchProbe(ctx context.Context, v int64) (*wire.Probe, error) {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	e, err := b.State.Get(octx, ProbeKey(v))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, fmt.Errorf("%w: v%d", ErrNoProbe, v)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: read probe v%d: %w", v, err)
	}
	var p wire.Probe
	if err := wire.Decode(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("bus: probe v%d: %w", v, err)
	}
	if p.Version != v {
		return nil, fmt.Errorf("bus: key %s holds the probe of v%d", ProbeKey(v), p.Version)
	}
	return &p, nil
}
