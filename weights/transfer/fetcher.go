package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// FetcherConfig is the actor side of the transports; the transport itself
// comes with each version's announcement.
type FetcherConfig struct {
	// Actor names this actor's lease (TransportFS).
	Actor string
	// Dir is where TransportObjects versions are rebuilt (default: a
	// directory under the system's temporary directory, per actor).
	Dir string
	// KeepLocal is how many rebuilt versions stay in Dir (the newest ones;
	// they are the bases of the next deltas); default 2.
	KeepLocal int
	// Check is how a TransportFS version is checked before use: sizes, or
	// digests too (reads every byte once more); default CheckDigests.
	Check weights.Check
	// Workers bounds the delta decoder's goroutines (0: GOMAXPROCS).
	Workers int
}

// DefaultFetcherConfig returns the defaults above for an actor.
func DefaultFetcherConfig(actor string) FetcherConfig {
	return FetcherConfig{Actor: actor, KeepLocal: 2, Check: weights.CheckDigests}
}

// Local is a version an actor can read: a directory holding the
// manifest's files. Release it once loaded (the engine or the built-in
// policy holds the weights then); for TransportFS that ends the lease.
type Local struct {
	Version  int64
	Dir      string
	Manifest weights.Manifest
	// How it came: "fs", "local" (already rebuilt), "full" or
	// "delta from vK" / "full vF + N deltas"; and the bytes fetched.
	Via     string
	Fetched int64
	release func()
	once    sync.Once
}

// Release ends the hold on the version; safe to call more than once.
func (l *Local) Release() {
	l.once.Do(func() {
		if l.release != nil {
			l.release()
		}
	})
}

// Path is a manifest file's path on disk.
func (l *Local) Path(file string) string { return filepath.Join(l.Dir, filepath.FromSlash(file)) }

// Fetcher materialises announced versions for one actor. Safe for use by
// one goroutine at a time.
type Fetcher struct {
	b   *bus.Bus
	cfg FetcherConfig
	log *zap.Logger
	now func() time.Time
	// beforeCheck, when set (tests), runs before a TransportFS version is
	// checked: the moment a concurrent prune would bite.
	beforeCheck func(dir string)
}

// NewFetcher makes the local directory.
func NewFetcher(b *bus.Bus, cfg FetcherConfig, log *zap.Logger) (*Fetcher, error) {
	if cfg.Actor == "" {
		return nil, fmt.Errorf("%w: fetcher without an actor id", ErrConfig)
	}
	if cfg.KeepLocal < 1 {
		cfg.KeepLocal = 2
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(os.TempDir(), "exgrpo-weights-"+strings.TrimPrefix(leaseKey(cfg.Actor), leasePrefix))
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Fetcher{b: b, cfg: cfg, log: log, now: time.Now}, nil
}

// Materialise makes version v readable and returns it. ErrNotAnnounced when
// v has no announcement (a built-in single-object version: use
// bus.FetchWeights); ErrVersionGone when its files vanished meanwhile (it
// was pruned: ask for the latest version).
func (f *Fetcher) Materialise(ctx context.Context, v int64) (*Local, error) {
	a, err := Lookup(ctx, f.b, v)
	if err != nil {
		return nil, err
	}
	if a.Transport == TransportFS {
		return f.fromFS(ctx, a)
	}
	return f.fromObjects(ctx, a)
}

// fromFS leases the version, then checks its directory.
func (f *Fetcher) fromFS(ctx context.Context, a Announcement) (*Local, error) {
	stop, err := f.lease(ctx, a)
	if err != nil {
		return nil, err
	}
	if f.beforeCheck != nil {
		f.beforeCheck(a.Path)
	}
	m, err := weights.OpenVersion(a.Path, f.cfg.Check)
	if err != nil {
		stop()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: v%d at %s: %w", ErrVersionGone, a.Version, a.Path, err)
		}
		return nil, fmt.Errorf("transfer: v%d at %s: %w", a.Version, a.Path, err)
	}
	if m.Version != a.Version || len(m.Files) != len(a.Manifest.Files) {
		stop()
		return nil, fmt.Errorf("transfer: v%d at %s holds the manifest of v%d (%d files), announced %d files", a.Version, a.Path, m.Version, len(m.Files), len(a.Manifest.Files))
	}
	for i := range m.Files {
		if m.Files[i] != a.Manifest.Files[i] {
			stop()
			return nil, fmt.Errorf("%w: v%d at %s: %s differs from the announced manifest", weights.ErrDigest, a.Version, a.Path, m.Files[i].Name)
		}
	}
	return &Local{Version: a.Version, Dir: a.Path, Manifest: m, Via: TransportFS, release: stop}, nil
}

// lease claims version a for this actor and renews the claim until the
// returned stop runs (which deletes it).
func (f *Fetcher) lease(ctx context.Context, a Announcement) (stop func(), err error) {
	key := leaseKey(f.cfg.Actor)
	put := func(c context.Context) error {
		js, _ := json.Marshal(Lease{Actor: f.cfg.Actor, Version: a.Version, UnixMs: f.now().UnixMilli()})
		octx, cancel := context.WithTimeout(c, f.b.Config.OpTimeout)
		defer cancel()
		_, err := f.b.State.Put(octx, key, js)
		return err
	}
	if err := put(ctx); err != nil {
		return nil, fmt.Errorf("transfer: lease v%d: %w", a.Version, err)
	}
	ttl := time.Duration(a.LeaseTTLms) * time.Millisecond
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { // owned by stop, which waits for it
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				if err := put(lctx); err != nil && lctx.Err() == nil {
					f.log.Warn("renew weights lease", zap.Int64("version", a.Version), zap.Error(err))
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		octx, c := context.WithTimeout(context.Background(), f.b.Config.OpTimeout)
		defer c()
		if err := f.b.State.Delete(octx, key); err != nil {
			f.log.Warn("end weights lease", zap.Int64("version", a.Version), zap.Error(err))
		}
	}, nil
}

// fromObjects rebuilds version a in the local directory: from a local copy
// of a version in its chain when there is one, else from the chain's full
// version; a reconstruction that fails its digest is retried once from the
// full version.
func (f *Fetcher) fromObjects(ctx context.Context, a Announcement) (*Local, error) {
	dir := filepath.Join(f.cfg.Dir, weights.VersionDir(a.Version))
	if m, err := weights.OpenVersion(dir, weights.CheckSizes); err == nil && m.Version == a.Version && sameFiles(m, a.Manifest) {
		return &Local{Version: a.Version, Dir: dir, Manifest: m, Via: "local"}, nil
	}
	chain, start, err := f.chain(ctx, a, true)
	if err != nil {
		return nil, err
	}
	loc, err := f.rebuild(ctx, a, chain, start)
	if err != nil && start >= 0 && (errors.Is(err, weights.ErrDigest) || errors.Is(err, weights.ErrDelta) || errors.Is(err, fs.ErrNotExist)) {
		f.log.Warn("rebuilding from the local copy failed; fetching the full version", zap.Int64("version", a.Version),
			zap.Int64("local", start), zap.Error(err))
		os.RemoveAll(filepath.Join(f.cfg.Dir, weights.VersionDir(start)))
		if chain, start, err = f.chain(ctx, a, false); err != nil {
			return nil, err
		}
		loc, err = f.rebuild(ctx, a, chain, start)
	}
	if err != nil {
		return nil, err
	}
	f.pruneLocal(a.Version)
	return loc, nil
}

func sameFiles(a, b weights.Manifest) bool {
	if len(a.Files) != len(b.Files) {
		return false
	}
	for i := range a.Files {
		if a.Files[i] != b.Files[i] {
			return false
		}
	}
	return true
}

// chain returns the announcements to apply, oldest first, ending with a:
// back to (excluding) a version held locally when useLocal finds one, else
// from the chain's full version (start = -1).
func (f *Fetcher) chain(ctx context.Context, a Announcement, useLocal bool) ([]Announcement, int64, error) {
	chain := []Announcement{a}
	for cur := a; cur.Base >= 0; {
		if useLocal && f.haveLocal(cur.Base) {
			slicesReverse(chain)
			return chain, cur.Base, nil
		}
		prev, err := Lookup(ctx, f.b, cur.Base)
		if err != nil {
			return nil, 0, fmt.Errorf("transfer: v%d: delta chain back to v%d: %w", a.Version, a.Full, err)
		}
		chain = append(chain, prev)
		cur = prev
	}
	slicesReverse(chain)
	return chain, -1, nil
}

func slicesReverse(s []Announcement) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

func (f *Fetcher) haveLocal(v int64) bool {
	_, err := weights.OpenVersion(filepath.Join(f.cfg.Dir, weights.VersionDir(v)), weights.CheckSizes)
	return err == nil
}

// rebuild writes every file of the chain's last version into a staging
// directory, file by file (one file in memory at a time): from the local
// copy of version start (or nothing when start < 0), each version's object
// applied in turn; then checks the file's digest and commits the directory.
func (f *Fetcher) rebuild(ctx context.Context, a Announcement, chain []Announcement, start int64) (*Local, error) {
	staged, err := weights.Stage(f.cfg.Dir, a.Version)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staged) // a no-op once committed
	var fetched int64
	for _, file := range a.Manifest.Files {
		var buf []byte
		loaded := false
		for _, c := range chain {
			o, ok := objectFor(c, file.Name)
			if !ok {
				return nil, fmt.Errorf("%w: v%d has no %s, needed to rebuild v%d", weights.ErrDelta, c.Version, file.Name, a.Version)
			}
			switch o.Kind {
			case KindFull:
				if buf, err = f.get(ctx, o.Name); err != nil {
					return nil, err
				}
				fetched += int64(len(buf))
				loaded = true
			case KindSame, KindDelta:
				if !loaded {
					if start < 0 {
						return nil, fmt.Errorf("%w: v%d stores %s as %s with no full copy before it", weights.ErrDelta, c.Version, file.Name, o.Kind)
					}
					p := filepath.Join(f.cfg.Dir, weights.VersionDir(start), filepath.FromSlash(file.Name))
					if buf, err = os.ReadFile(p); err != nil {
						return nil, fmt.Errorf("transfer: base of %s: %w", file.Name, err)
					}
					loaded = true
				}
				if o.Kind == KindDelta {
					d, err := f.get(ctx, o.Name)
					if err != nil {
						return nil, err
					}
					fetched += int64(len(d))
					if err := weights.ApplyDeltaUnchecked(buf, d, f.cfg.Workers); err != nil {
						return nil, fmt.Errorf("transfer: v%d %s: %w", c.Version, file.Name, err)
					}
				}
			}
		}
		if got := weights.Digest(buf); got != file.SHA256 || int64(len(buf)) != file.Size {
			return nil, fmt.Errorf("%w: v%d %s rebuilt to %d bytes sha256 %s, the manifest says %d bytes %s", weights.ErrDigest, a.Version,
				file.Name, len(buf), got, file.Size, file.SHA256)
		}
		p := filepath.Join(staged, filepath.FromSlash(file.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("transfer: %w", err)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return nil, fmt.Errorf("transfer: write %s: %w", file.Name, err)
		}
	}
	dir, m, err := weights.CommitManifest(f.cfg.Dir, staged, a.Manifest) // every file's digest was checked above
	if err != nil {
		return nil, err
	}
	via := "full"
	switch {
	case start >= 0:
		via = fmt.Sprintf("%d deltas from local v%d", len(chain), start)
	case len(chain) > 1:
		via = fmt.Sprintf("full v%d + %d deltas", chain[0].Version, len(chain)-1)
	}
	return &Local{Version: a.Version, Dir: dir, Manifest: m, Via: via, Fetched: fetched}, nil
}

func objectFor(a Announcement, file string) (Object, bool) {
	for _, o := range a.Objects {
		if o.File == file {
			return o, true
		}
	}
	return Object{}, false
}

// get reads one object: Info sizes the buffer and the deadline, a
// streamed Get fills it (ARCHITECTURE.md: GetBytes is an order of magnitude
// slower), and reading to EOF makes the client check the object's digest.
func (f *Fetcher) get(ctx context.Context, name string) ([]byte, error) {
	octx, cancel := context.WithTimeout(ctx, f.b.Config.OpTimeout)
	info, err := f.b.Weights.GetInfo(octx, name)
	cancel()
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: object %s: %w", ErrVersionGone, name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("transfer: info %s: %w", name, err)
	}
	gctx, cancel := context.WithTimeout(ctx, transferDeadline(int64(info.Size)))
	defer cancel()
	res, err := f.b.Weights.Get(gctx, name)
	if err != nil {
		return nil, fmt.Errorf("transfer: get %s: %w", name, err)
	}
	defer res.Close()
	buf := make([]byte, info.Size)
	if _, err := io.ReadFull(res, buf); err != nil {
		return nil, fmt.Errorf("transfer: read %s (%d bytes): %w", name, info.Size, err)
	}
	var one [1]byte
	if n, err := res.Read(one[:]); n != 0 || (err != nil && err != io.EOF) {
		return nil, fmt.Errorf("transfer: read %s: %w (or size differs from its info)", name, err)
	}
	return buf, nil
}

// pruneLocal keeps the KeepLocal newest rebuilt versions.
func (f *Fetcher) pruneLocal(latest int64) {
	ents, err := os.ReadDir(f.cfg.Dir)
	if err != nil {
		return
	}
	var vs []int64
	for _, e := range ents {
		if v, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), "v"), 10, 64); err == nil && strings.HasPrefix(e.Name(), "v") && v <= latest {
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] > vs[j] })
	for i, v := range vs {
		if i >= f.cfg.KeepLocal {
			os.RemoveAll(filepath.Join(f.cfg.Dir, weights.VersionDir(v)))
		}
	}
}
