package bus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Weights errors; test with errors.Is.
var (
	ErrNoWeights = errors.New("bus: no such weights version")
	ErrDigest    = errors.New("bus: weights digest mismatch")
)

// weightsChunk is the Object Store chunk size: big enough that a 100 MB
// model is ~100 messages, far below max_payload.
const weightsChunk = 1 << 20

// transferDeadline sizes a deadline to an object: 15s plus 1s per 8 MiB (a
// floor of 8 MiB/s, far below loopback speeds). A context without deadline
// would be cut at the client's 5s default (ARCHITECTURE.md pitfalls).
func transferDeadline(size int64) time.Duration {
	return 15*time.Second + time.Duration(size/(8<<20))*time.Second
}

// PublishWeights stores one policy version (the policy's safetensors
// checkpoint bytes) as object "v<version>" with its SHA-256 in the metadata,
// then announces the version in KV, then deletes versions older than the
// newest KeepWeights. Versions must increase.
func (b *Bus) PublishWeights(ctx context.Context, version int64, data []byte) error {
	sum := sha256.Sum256(data)
	meta := jetstream.ObjectMeta{Name: WeightsObject(version),
		Description: "policy weights, safetensors",
		Metadata:    map[string]string{"sha256": hex.EncodeToString(sum[:]), "version": strconv.FormatInt(version, 10)},
		Opts:        &jetstream.ObjectMetaOptions{ChunkSize: weightsChunk}}
	// Both steps are retried: in a cluster, losing the node that leads the
	// Object Store's or the KV's stream leaves publishes unanswered until a
	// new leader is elected (seconds), and a put of the same name replaces
	// the partial object.
	err := b.retryWeights(ctx, "put", version, func() error {
		pctx, cancel := context.WithTimeout(ctx, transferDeadline(int64(len(data))))
		defer cancel()
		_, err := b.Weights.Put(pctx, meta, bytes.NewReader(data))
		return err
	})
	if err != nil {
		return fmt.Errorf("bus: put weights v%d (%d bytes): %w", version, len(data), err)
	}
	faultpoint.Hit("weights.put", version) // crash tests: stored, not yet announced
	err = b.retryWeights(ctx, "announce", version, func() error {
		octx, cancel := b.opCtx(ctx)
		defer cancel()
		_, err := b.State.Put(octx, VersionKey, []byte(strconv.FormatInt(version, 10)))
		return err
	})
	if err != nil {
		return fmt.Errorf("bus: announce weights v%d: %w", version, err)
	}
	b.pruneWeights(ctx, version)
	return nil
}

// weightsAttempts bounds PublishWeights' tries of each step.
const weightsAttempts = 4

// retryWeights runs op up to weightsAttempts times, a second apart, while
// ctx lasts; it returns the last error.
func (b *Bus) retryWeights(ctx context.Context, what string, version int64, op func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if err = op(); err == nil || ctx.Err() != nil || attempt == weightsAttempts {
			return err
		}
		b.log.Warn("weights "+what+" failed, retrying", zap.Int64("version", version), zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func (b *Bus) pruneWeights(ctx context.Context, latest int64) {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	list, err := b.Weights.List(octx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoObjectsFound) {
			b.log.Warn("list weights for pruning", zap.Error(err))
		}
		return
	}
	for _, info := range list {
		v, err := strconv.ParseInt(strings.TrimPrefix(info.Name, "v"), 10, 64)
		if err != nil || v > latest-int64(b.Config.KeepWeights) {
			continue
		}
		if err := b.Weights.Delete(octx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			b.log.Warn("prune weights", zap.String("object", info.Name), zap.Error(err))
		}
	}
}

// FetchWeights reads one version: Info() sizes the buffer and the deadline,
// a streamed Get fills it (GetBytes is an order of magnitude slower), and the
// SHA-256 is checked (the client also checks its own digest at EOF).
func (b *Bus) FetchWeights(ctx context.Context, version int64) ([]byte, error) {
	name := WeightsObject(version)
	octx, cancel := b.opCtx(ctx)
	info, err := b.Weights.GetInfo(octx, name)
	cancel()
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: v%d", ErrNoWeights, version)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: weights v%d info: %w", version, err)
	}
	gctx, cancel := context.WithTimeout(ctx, transferDeadline(int64(info.Size)))
	defer cancel()
	res, err := b.Weights.Get(gctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: v%d", ErrNoWeights, version)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: get weights v%d: %w", version, err)
	}
	defer res.Close()
	buf := make([]byte, info.Size)
	if _, err := io.ReadFull(res, buf); err != nil {
		return nil, fmt.Errorf("bus: read weights v%d (%d bytes): %w", version, info.Size, err)
	}
	// Reading to EOF makes the client verify its digest.
	var one [1]byte
	if n, err := res.Read(one[:]); n != 0 || (err != nil && err != io.EOF) {
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: v%d: %v", ErrDigest, version, err)
		}
		return nil, fmt.Errorf("bus: read weights v%d: size differs from info or %v", version, err)
	}
	if want := info.Metadata["sha256"]; want != "" {
		sum := sha256.Sum256(buf)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("%w: v%d sha256 %s, want %s", ErrDigest, version, got, want)
		}
	}
	return buf, nil
}

// LatestVersion reads the announced policy version; ErrNoWeights when none
// was published yet.
func (b *Bus) LatestVersion(ctx context.Context) (int64, error) {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	e, err := b.State.Get(octx, VersionKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%w: none announced", ErrNoWeights)
	}
	if err != nil {
		return 0, fmt.Errorf("bus: read %s: %w", VersionKey, err)
	}
	v, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bus: %s holds %q: %w", VersionKey, e.Value(), err)
	}
	return v, nil
}

// VersionWatch follows the announced policy version. Its goroutine drains
// the KV watcher promptly (whose channel blocks when 256 entries pile up)
// and keeps only the latest value. Safe for concurrent use.
type VersionWatch struct {
	mu      sync.Mutex
	latest  int64 // -1 until a version is announced
	changed chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

// WatchVersion starts following the version key until ctx ends or Stop.
func (b *Bus) WatchVersion(ctx context.Context) (*VersionWatch, error) {
	wctx, cancel := context.WithCancel(ctx)
	w, err := b.State.Watch(wctx, VersionKey)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bus: watch %s: %w", VersionKey, err)
	}
	vw := &VersionWatch{latest: -1, changed: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(vw.done)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				v, err := strconv.ParseInt(string(e.Value()), 10, 64)
				if err != nil {
					b.log.Warn("bad policy version in KV", zap.ByteString("value", e.Value()))
					continue
				}
				vw.set(v)
			}
		}
	}()
	return vw, nil
}

func (vw *VersionWatch) set(v int64) {
	vw.mu.Lock()
	if v > vw.latest {
		vw.latest = v
	}
	vw.mu.Unlock()
	select {
	case vw.changed <- struct{}{}:
	default:
	}
}

// Latest is the newest announced version, -1 when none yet.
func (vw *VersionWatch) Latest() int64 {
	vw.mu.Lock()
	defer vw.mu.Unlock()
	return vw.latest
}

// Changed receives (coalesced) after each new announcement.
func (vw *VersionWatch) Changed() <-chan struct{} { return vw.changed }

// Wait blocks until a version >= min is announced and returns it.
func (vw *VersionWatch) Wait(ctx context.Context, min int64) (int64, error) {
	for {
		if v := vw.Latest(); v >= min {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("bus: waiting for policy version %d: %w", min, ctx.Err())
		case <-vw.changed:
		case <-vw.done:
			return 0, fmt.Errorf("bus: version watch stopped before version %d", min)
		}
	}
}

// Stop ends the watch and waits for its goroutine.
func (vw *VersionWatch) Stop() {
	vw.stop()
	<-vw.done
}
