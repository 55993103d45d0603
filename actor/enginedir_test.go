package actor

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/engine/enginetest"
	"github.com/exgrpo/exgrpo/engine/server"
	"github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"go.uber.org/zap"
)

// dirEngine is a built-in engine server behind a hook that runs on every
// reload request before the server sees it (with the directory asked for).
type dirEngine struct {
	srv *server.Server
	url string
	mu  sync.Mutex
	// onReload runs before the server handles a reload of dir.
	onReload func(dir string)
	dirs     []string
}

func startDirEngine(t *testing.T, api string) *dirEngine {
	t.Helper()
	path := filepath.Join(t.TempDir(), "launch.safetensors")
	if err := os.WriteFile(path, tinyCheckpoint(t, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig(api, path)
	cfg.Workers = 2
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &dirEngine{srv: s}
	h := s.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dir, ok := enginetest.ReloadDir(r); ok {
			d.mu.Lock()
			d.dirs = append(d.dirs, dir)
			hook := d.onReload
			d.mu.Unlock()
			if hook != nil {
				hook(dir)
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	d.url = hs.URL
	return d
}

func (d *dirEngine) reloaded() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dirs...)
}

// publishWithProbe publishes version v of the model of checkpoint seed
// through p, with the learner's probe.
func publishWithProbe(t *testing.T, ctx context.Context, b *bus.Bus, p *transfer.Publisher, v int64, seed uint64) *policy.Model {
	t.Helper()
	ck, err := policy.ReadCheckpoint(bytes.NewReader(tinyCheckpoint(t, seed)))
	if err != nil {
		t.Fatal(err)
	}
	probe, err := service.Probe(v, ck.Model, ck.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PublishProbe(ctx, probe); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishModel(ctx, v, ck.Model, task.BuiltinTokenizer()); err != nil {
		t.Fatal(err)
	}
	return ck.Model
}

// TestEngineReloadsVersionDirectories: with either transport and either
// protocol, the engine backend loads an announced version by asking the
// engine to reload from the version's own directory (fs: the announced
// path, under the actor's lease for the whole reload; objects: the actor's
// rebuilt copy), checks the probe, and writes nothing of its own.
func TestEngineReloadsVersionDirectories(t *testing.T) {
	for _, transport := range []string{transfer.TransportFS, transfer.TransportObjects} {
		for _, api := range engineAPIs {
			t.Run(transport+"/"+api, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				srv := bustest.Server(t)
				lb := bustest.Open(t, srv, bus.DefaultConfig("ed"))
				root := t.TempDir()
				pub, err := transfer.NewPublisher(lb, transfer.DefaultConfig(transport, root), zap.NewNop())
				if err != nil {
					t.Fatal(err)
				}
				de := startDirEngine(t, api)
				var leased []bool
				de.onReload = func(dir string) {
					_, leases, err := transfer.List(ctx, lb)
					leased = append(leased, err == nil && len(leases) == 1 && leases[0].Actor == "a1" && leases[0].Version == 1)
				}
				e := newEngineBackend(t, api, de.url, nil)
				local := t.TempDir()
				cfg := DefaultConfig()
				cfg.ID, cfg.WeightsDir = "a1", local
				a, err := New(bustest.Open(t, srv, bus.DefaultConfig("ed")), e, cfg, zap.NewNop(), nil)
				if err != nil {
					t.Fatal(err)
				}
				publishWithProbe(t, ctx, lb, pub, 1, 31)
				if !a.load(ctx, 1) || e.Version() != 1 || e.Refused() != nil {
					t.Fatalf("load v1: version %d, refused %v", e.Version(), e.Refused())
				}
				want := filepath.Join(root, "v1")
				if transport == transfer.TransportObjects {
					want = filepath.Join(local, "v1")
				}
				if got := de.reloaded(); len(got) != 1 || got[0] != want {
					t.Fatalf("reloads from %v, want [%s]", got, want)
				}
				if transport == transfer.TransportFS {
					if len(leased) != 1 || !leased[0] {
						t.Errorf("the actor's lease on v1 was not held while the engine reloaded it")
					}
					_, leases, err := transfer.List(ctx, lb)
					if err != nil || len(leases) != 0 {
						t.Errorf("leases after the load: %v (%v), want none", leases, err)
					}
				}
				if ents, _ := os.ReadDir(e.cfg.WeightsDir); len(ents) != 0 {
					t.Errorf("the backend wrote %d entries into its own weights dir for a transferred version", len(ents))
				}
			})
		}
	}
}

// TestEngineVersionVanishes: a shared-filesystem version pruned before the
// engine is asked to load it, or while the engine reads it, is an error
// wrapping ErrVersionGone, and the actor loads the newest version instead;
// an engine that may hold part of a vanished version serves nothing until
// then.
func TestEngineVersionVanishes(t *testing.T) {
	for _, api := range engineAPIs {
		t.Run(api, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			srv := bustest.Server(t)
			lb := bustest.Open(t, srv, bus.DefaultConfig("ev"))
			root := t.TempDir()
			pub, err := transfer.NewPublisher(lb, transfer.DefaultConfig(transfer.TransportFS, root), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			de := startDirEngine(t, api)
			e := newEngineBackend(t, api, de.url, nil)
			cfg := DefaultConfig()
			cfg.ID = "a1"
			a, err := New(bustest.Open(t, srv, bus.DefaultConfig("ev")), e, cfg, zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for v := int64(1); v <= 3; v++ {
				publishWithProbe(t, ctx, lb, pub, v, 40+uint64(v))
			}
			v1 := filepath.Join(root, "v1")
			v2 := filepath.Join(root, "v2")

			// Mid-reload: the directory goes while the engine reads it.
			de.onReload = func(dir string) {
				if dir == v1 {
					os.RemoveAll(v1)
				}
			}
			loc, err := a.fetch.Materialise(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			err = e.LoadDir(ctx, 1, loc.Dir, loc.Manifest, a.probe(ctx, 1))
			loc.Release()
			if !errors.Is(err, transfer.ErrVersionGone) {
				t.Fatalf("v1 removed during the reload: %v, want ErrVersionGone", err)
			}
			if e.Version() != -1 || e.Ready() == nil {
				t.Fatalf("after a reload of a vanished version: version %d, ready %v; want -1 and not ready", e.Version(), e.Ready())
			}

			// Before the reload: the fetcher already checked v2, then it goes.
			loc, err = a.fetch.Materialise(ctx, 2)
			if err != nil {
				t.Fatal(err)
			}
			os.RemoveAll(v2)
			n := len(de.reloaded())
			err = e.LoadDir(ctx, 2, loc.Dir, loc.Manifest, a.probe(ctx, 2))
			loc.Release()
			if !errors.Is(err, transfer.ErrVersionGone) || len(de.reloaded()) != n {
				t.Fatalf("v2 removed before the reload: %v after %d reload requests, want ErrVersionGone and none", err, len(de.reloaded())-n)
			}

			// The actor's retry: v2 is gone, the latest (v3) is loaded.
			if !a.load(ctx, 2) || e.Version() != 3 || e.Ready() != nil {
				t.Fatalf("load(2) with v2 gone: version %d, ready %v; want v3 loaded", e.Version(), e.Ready())
			}
			if got := de.reloaded(); got[len(got)-1] != filepath.Join(root, "v3") {
				t.Errorf("last reload from %s, want v3's directory", got[len(got)-1])
			}
		})
	}
}
