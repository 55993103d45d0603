package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Config is the learner side of a transport.
type Config struct {
	// Transport is TransportFS or TransportObjects.
	Transport string
	// Dir: for TransportFS the shared directory every actor mounts at the
	// same path (versions are DIR/v<N>); for TransportObjects the learner's
	// local staging directory (it keeps the previous version there to
	// encode the next delta).
	Dir string
	// FullEvery: TransportObjects stores a full version every FullEvery
	// versions (and the first one it publishes); 1 = never deltas.
	// Default 10.
	FullEvery int
	// Keep is how many of the newest versions stay besides those a kept
	// version's delta chain needs (TransportObjects) or an actor's lease
	// holds (TransportFS); default 3.
	Keep int
	// LeaseTTL (TransportFS): an actor's lease on a version lasts this long
	// without renewal; actors renew at a third of it. A version no live
	// lease names, older than the Keep newest, is removed. Default 2m.
	LeaseTTL time.Duration
	// Delta tunes the delta codec (TransportObjects).
	Delta weights.DeltaOptions
}

// DefaultConfig returns the defaults above for a transport and directory.
func DefaultConfig(transport, dir string) Config {
	return Config{Transport: transport, Dir: dir, FullEvery: 10, Keep: 3, LeaseTTL: 2 * time.Minute, Delta: weights.DefaultDeltaOptions()}
}

// Validate reports impossible settings.
func (c Config) Validate() error {
	switch {
	case c.Transport != TransportFS && c.Transport != TransportObjects:
		return fmt.Errorf("%w: transport %q (want %s or %s)", ErrConfig, c.Transport, TransportFS, TransportObjects)
	case c.Dir == "":
		return fmt.Errorf("%w: transport %s needs a directory", ErrConfig, c.Transport)
	case c.FullEvery < 1:
		return fmt.Errorf("%w: FullEvery %d must be >= 1", ErrConfig, c.FullEvery)
	case c.Keep < 1:
		return fmt.Errorf("%w: Keep %d must be >= 1", ErrConfig, c.Keep)
	case c.LeaseTTL <= 0:
		return fmt.Errorf("%w: LeaseTTL must be positive", ErrConfig)
	}
	return nil
}

// Publisher publishes versions for one learner. Not safe for concurrent
// use; versions must increase.
type Publisher struct {
	b    *bus.Bus
	cfg  Config
	log  *zap.Logger
	last *Announcement // the previous version this publisher stored (TransportObjects)
	now  func() time.Time
}

// NewPublisher checks cfg and makes the directory.
func NewPublisher(b *bus.Bus, cfg Config, log *zap.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	return &Publisher{b: b, cfg: cfg, log: log, now: time.Now}, nil
}

// Stage returns a fresh directory to write version v's files into; pass
// it to Publish.
func (p *Publisher) Stage(v int64) (string, error) { return weights.Stage(p.cfg.Dir, v) }

// PublishModel publishes the built-in policy as a FormatBuiltin version:
// its checkpoint (model and tokenizer, no optimiser state) as
// weights.CheckpointFile. It has the signature of the learner's
// Deps.PublishWeights.
func (p *Publisher) PublishModel(ctx context.Context, version int64, m *policy.Model, tok *policy.Tokenizer) error {
	meta := map[string]string{"exgrpo.version": strconv.FormatInt(version, 10)}
	return p.PublishFiles(ctx, version, weights.FormatBuiltin, func(_ context.Context, dir string) error {
		return policy.SaveFile(filepath.Join(dir, weights.CheckpointFile), policy.Checkpoint{Model: m, Tokenizer: tok, Meta: meta})
	})
}

// PublishFiles publishes version v from files that write puts into a
// fresh staging directory (a trainer's SaveWeights, which writes the model
// in its own format): the files are checked against format (CheckFormat),
// then committed and announced as Publish does. The manifest's Format is
// format, so that every reader knows what the files are without opening
// them. On any failure the staging directory is removed and nothing is
// announced.
func (p *Publisher) PublishFiles(ctx context.Context, v int64, format string, write func(ctx context.Context, dir string) error) error {
	dir, err := p.Stage(v)
	if err != nil {
		return err
	}
	if err := write(ctx, dir); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("transfer: write v%d: %w", v, err)
	}
	if err := CheckFormat(dir, format); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("transfer: v%d: %w", v, err)
	}
	return p.Publish(ctx, v, dir, format)
}

// CheckFormat checks that a version directory holds what its format says
// engines and actors will find there: for weights.FormatBuiltin the one
// checkpoint file; for weights.FormatHF a config.json and safetensors
// weights, and when a model.safetensors.index.json is there, every shard
// its weight_map names (what vLLM and SGLang read).
func CheckFormat(dir, format string) error {
	switch format {
	case weights.FormatBuiltin:
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(ents) != 1 || ents[0].Name() != weights.CheckpointFile || !ents[0].Type().IsRegular() {
			names := make([]string, len(ents))
			for i, e := range ents {
				names[i] = e.Name()
			}
			return fmt.Errorf("%w: a %s version is the one file %s; %s holds %v", weights.ErrManifest, format, weights.CheckpointFile, dir, names)
		}
		return nil
	case weights.FormatHF:
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
			return fmt.Errorf("%w: an %s version needs config.json: %w", weights.ErrManifest, format, err)
		}
		idx, err := os.ReadFile(filepath.Join(dir, hfIndexFile))
		if errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(filepath.Join(dir, weights.CheckpointFile)); err != nil {
				return fmt.Errorf("%w: an %s version needs %s or %s: %w", weights.ErrManifest, format, weights.CheckpointFile, hfIndexFile, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		var index struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(idx, &index); err != nil {
			return fmt.Errorf("%w: %s: %v", weights.ErrManifest, hfIndexFile, err)
		}
		if len(index.WeightMap) == 0 {
			return fmt.Errorf("%w: %s maps no tensor to a shard", weights.ErrManifest, hfIndexFile)
		}
		seen := map[string]bool{}
		for _, shard := range index.WeightMap {
			if seen[shard] {
				continue
			}
			seen[shard] = true
			if !weights.ValidName(shard) {
				return fmt.Errorf("%w: %s names the shard %q", weights.ErrManifest, hfIndexFile, shard)
			}
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(shard))); err != nil {
				return fmt.Errorf("%w: %s names the shard %s: %w", weights.ErrManifest, hfIndexFile, shard, err)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: format %q (want %s or %s)", weights.ErrManifest, format, weights.FormatBuiltin, weights.FormatHF)
}

// hfIndexFile is the index of a sharded HF safetensors checkpoint.
const hfIndexFile = "model.safetensors.index.json"

// Publish commits a staged directory as version v and announces it: for
// TransportFS the directory itself is the version; for TransportObjects
// its files (or their deltas against the previous version) go to the
// Object Store. Then old versions are pruned.
func (p *Publisher) Publish(ctx context.Context, v int64, staged, format string) error {
	final, m, err := weights.Commit(p.cfg.Dir, staged, v, format, nil)
	if err != nil {
		os.RemoveAll(staged)
		return fmt.Errorf("transfer: publish v%d: %w", v, err)
	}
	a := Announcement{Schema: AnnouncementSchema, Version: v, Transport: p.cfg.Transport, Manifest: m, UnixMs: p.now().UnixMilli(), Base: -1, Full: v}
	switch p.cfg.Transport {
	case TransportFS:
		a.Path, a.LeaseTTLms = final, p.cfg.LeaseTTL.Milliseconds()
	case TransportObjects:
		if err := p.store(ctx, &a, final); err != nil {
			return err
		}
	}
	if err := p.announce(ctx, a); err != nil {
		return err
	}
	if p.cfg.Transport == TransportObjects {
		p.last = &a
	}
	p.prune(ctx, v)
	return nil
}

// store puts version a's files: full when it is due (or nothing to delta
// against), else each file as a delta against the previous version's copy
// kept in Dir, or as "same" when identical.
func (p *Publisher) store(ctx context.Context, a *Announcement, dir string) error {
	prev := p.last
	full := prev == nil || prev.Version != a.Version-1 || a.Version-prev.Full >= int64(p.cfg.FullEvery)
	prevDir := ""
	if !full {
		prevDir = filepath.Join(p.cfg.Dir, weights.VersionDir(prev.Version))
		if _, err := weights.OpenVersion(prevDir, weights.CheckSizes); err != nil {
			p.log.Warn("previous version not kept locally; storing a full version", zap.Int64("version", a.Version), zap.Error(err))
			full = true
		}
	}
	if !full {
		a.Base, a.Full = prev.Version, prev.Full
	}
	for _, f := range a.Manifest.Files {
		o := Object{File: f.Name, Kind: KindFull, Name: objectName(a.Version, f.Name, KindFull)}
		var data []byte
		var err error
		if data, err = os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Name))); err != nil {
			return fmt.Errorf("transfer: v%d: %w", a.Version, err)
		}
		if !full {
			if pf, ok := prev.Manifest.File(f.Name); ok {
				if pf.SHA256 == f.SHA256 {
					o = Object{File: f.Name, Kind: KindSame}
					data = nil
				} else if pf.Size == f.Size {
					base, err := os.ReadFile(filepath.Join(prevDir, filepath.FromSlash(f.Name)))
					if err != nil {
						return fmt.Errorf("transfer: v%d: base of %s: %w", a.Version, f.Name, err)
					}
					d, err := weights.EncodeDelta(base, data, pf.SHA256, f.SHA256, p.cfg.Delta)
					if err != nil {
						return fmt.Errorf("transfer: v%d: delta of %s: %w", a.Version, f.Name, err)
					}
					o, data = Object{File: f.Name, Kind: KindDelta, Name: objectName(a.Version, f.Name, KindDelta)}, d
				}
			}
		}
		if data != nil {
			if err := p.put(ctx, o.Name, data, a.Version); err != nil {
				return err
			}
			o.Bytes = int64(len(data))
		}
		a.Objects = append(a.Objects, o)
	}
	return nil
}

// objectName is where one file of a version lives in the Object Store.
func objectName(v int64, file, kind string) string {
	n := weights.VersionDir(v) + "/" + file
	if kind == KindDelta {
		n += ".delta"
	}
	return n
}

// put stores one object, retried like bus.PublishWeights: in a cluster a
// leader change leaves publishes unanswered for seconds, and a put of the
// same name replaces a partial object.
func (p *Publisher) put(ctx context.Context, name string, data []byte, v int64) error {
	meta := jetstream.ObjectMeta{Name: name, Description: "policy version file",
		Metadata: map[string]string{"sha256": weights.Digest(data), "version": strconv.FormatInt(v, 10)},
		Opts:     &jetstream.ObjectMetaOptions{ChunkSize: 1 << 20}}
	return retry(ctx, p.log, "put "+name, func() error {
		pctx, cancel := context.WithTimeout(ctx, transferDeadline(int64(len(data))))
		defer cancel()
		_, err := p.b.Weights.Put(pctx, meta, bytes.NewReader(data))
		return err
	})
}

// announce writes the announcement, then moves the policy version key.
func (p *Publisher) announce(ctx context.Context, a Announcement) error {
	js, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("transfer: encode announcement of v%d: %w", a.Version, err)
	}
	for _, kv := range [][2]string{{AnnouncementKey(a.Version), string(js)}, {bus.VersionKey, strconv.FormatInt(a.Version, 10)}} {
		err := retry(ctx, p.log, "announce", func() error {
			octx, cancel := context.WithTimeout(ctx, p.b.Config.OpTimeout)
			defer cancel()
			_, err := p.b.State.Put(octx, kv[0], []byte(kv[1]))
			return err
		})
		if err != nil {
			return fmt.Errorf("transfer: announce v%d (%s): %w", a.Version, kv[0], err)
		}
	}
	return nil
}

// attempts bounds the tries of one store operation.
const attempts = 4

func retry(ctx context.Context, log *zap.Logger, what string, op func() error) error {
	var err error
	for i := 1; ; i++ {
		if err = op(); err == nil || ctx.Err() != nil || i == attempts {
			return err
		}
		log.Warn("weights "+what+" failed, retrying", zap.Int("attempt", i), zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// prune removes versions nobody needs. Kept: the Keep newest; for
// TransportObjects every version of a kept version's delta chain (from its
// full version on); for TransportFS any version a live lease names.
// Failures are logged: pruning is retried at the next publish.
func (p *Publisher) prune(ctx context.Context, latest int64) {
	anns, leases, err := List(ctx, p.b)
	if err != nil {
		p.log.Warn("list versions for pruning", zap.Error(err))
		return
	}
	keep := map[int64]bool{}
	byV := map[int64]Announcement{}
	for _, a := range anns {
		byV[a.Version] = a
	}
	for _, a := range anns {
		if a.Version > latest-int64(p.cfg.Keep) {
			keep[a.Version] = true
			if a.Transport == TransportObjects {
				for v := a.Full; v < a.Version; v++ {
					keep[v] = true
				}
			}
		}
	}
	now := p.now()
	for _, l := range leases {
		if now.Sub(time.UnixMilli(l.UnixMs)) < p.cfg.LeaseTTL {
			keep[l.Version] = true
		}
	}
	for _, a := range anns {
		if keep[a.Version] {
			continue
		}
		if err := p.remove(ctx, a); err != nil {
			p.log.Warn("prune version", zap.Int64("version", a.Version), zap.Error(err))
		}
	}
	// The learner's own copies (TransportObjects): only the last is needed.
	if p.cfg.Transport == TransportObjects {
		for v := range byV {
			if v < latest {
				os.RemoveAll(filepath.Join(p.cfg.Dir, weights.VersionDir(v)))
			}
		}
	}
}

// remove deletes a version: its announcement first (so no actor starts on
// it), then its objects or directory.
func (p *Publisher) remove(ctx context.Context, a Announcement) error {
	octx, cancel := context.WithTimeout(ctx, p.b.Config.OpTimeout)
	defer cancel()
	if err := p.b.State.Purge(octx, AnnouncementKey(a.Version)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	switch a.Transport {
	case TransportFS:
		if filepath.Dir(a.Path) != p.cfg.Dir { // never remove outside our directory
			return fmt.Errorf("transfer: v%d at %s is outside %s", a.Version, a.Path, p.cfg.Dir)
		}
		return os.RemoveAll(a.Path)
	case TransportObjects:
		for _, o := range a.Objects {
			if o.Name == "" {
				continue
			}
			if err := p.b.Weights.Delete(octx, o.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return err
			}
		}
	}
	return nil
}
