package local

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/engine/enginetest"
	"github.com/exgrpo/exgrpo/engine/server"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer/torch"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"go.uber.org/zap"
)

// reloadSeen is one weight reload request an engine server received: the
// directory it was asked to load and what that directory held at that
// moment (its manifest's version, checked by digest; -1 and err when it
// could not be read).
type reloadSeen struct {
	path    string
	version int64
	format  string
	err     error
}

// reloadWatch records the reload requests (vLLM's collective_rpc
// reload_weights, SGLang's update_weights_from_disk) on their way to the
// engine server, and checks the directory while the request is in flight.
type reloadWatch struct {
	mu   sync.Mutex
	seen []reloadSeen
}

func (w *reloadWatch) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if path, ok := enginetest.ReloadDir(r); ok {
			s := reloadSeen{path: path, version: -1}
			if m, err := weights.OpenVersion(s.path, weights.CheckDigests); err != nil {
				s.err = err
			} else {
				s.version, s.format = m.Version, m.Format
			}
			w.mu.Lock()
			w.seen = append(w.seen, s)
			w.mu.Unlock()
		}
		h.ServeHTTP(rw, r)
	})
}

func (w *reloadWatch) all() []reloadSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]reloadSeen(nil), w.seen...)
}

// engineWeightsRun is a cluster (verifier, replay) with one engine actor
// driving a built-in engine server that starts on other weights than the
// learner's, and a learner publishing through weights/transfer.
type engineWeightsRun struct {
	c        *cluster
	eng      *actor.Engine
	srv      *server.Server
	watch    *reloadWatch
	verDir   string // the learner's transfer directory
	localDir string // the actor's rebuilt Object Store versions
	lb       *bus.Bus
	deps     lsvc.Deps
}

func startEngineWeights(t *testing.T, transport, api string, stale bool) *engineWeightsRun {
	c := newCluster(t, 0)
	c.startReplay()
	tmp := t.TempDir()
	r := &engineWeightsRun{c: c, watch: &reloadWatch{}, verDir: filepath.Join(tmp, "versions"), localDir: filepath.Join(tmp, "actor-weights")}

	// The engine's launch weights are not the learner's: an engine that
	// never reloads fails the first probe.
	launch := tinyModel(t)
	other, err := policy.New(launch.Model.Config, rand.New(rand.NewPCG(77, 78)))
	if err != nil {
		t.Fatal(err)
	}
	launchPath := filepath.Join(tmp, "launch.safetensors")
	if err := policy.SaveFile(launchPath, policy.Checkpoint{Model: other, Tokenizer: launch.Tokenizer}); err != nil {
		t.Fatal(err)
	}
	scfg := server.DefaultConfig(api, launchPath)
	scfg.Workers, scfg.StaleReload = 2, stale
	if r.srv, err = server.New(scfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: r.watch.wrap(r.srv.Handler()), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	ecfg := actor.DefaultEngineConfig(api, "http://"+ln.Addr().String())
	ecfg.WeightsDir = filepath.Join(tmp, "engine-blob") // only for single-object versions: must stay empty here
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if r.eng, err = actor.NewEngine(ctx, ecfg, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	acfg := actor.DefaultConfig()
	acfg.ID, acfg.WeightsDir = "engine-actor", r.localDir
	a, err := actor.New(c.open("actor"), r.eng, acfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.goRole("actor", a.Run)

	r.lb = c.open("learner")
	pub, err := transfer.NewPublisher(r.lb, transfer.DefaultConfig(transport, r.verDir), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ds, err := task.Generate("train", task.TrainSpec(), 200, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.deps = lsvc.Deps{Bus: r.lb, Model: launch.Model, Tokenizer: launch.Tokenizer, Problems: ds.Problems,
		Check:          func(p task.Problem, text string) verifier.Verdict { return luckyChecker{}.Check(p.Answer, text) },
		PublishVersion: lsvc.VersionPublisher(r.lb, pub, launch.Tokenizer), Log: zap.NewNop()}
	return r
}

// TestEngineActorsLoadTransferredVersions: the real roles over an embedded
// JetStream server, the learner publishing every version as the files its
// trainer's SaveWeights writes, through the shared-directory transport and
// through the Object Store, and an engine actor whose engine (the built-in
// server, speaking vLLM's and SGLang's protocols) reloads each version
// from its directory: the announced DIR/v<N> for fs, the actor's own
// rebuilt copy for objects. The run completes; every version the engine
// loaded was complete (digests) at the moment the engine read it and
// passed its probe; the engine holds the last version; nothing went
// through the single-checkpoint path.
func TestEngineActorsLoadTransferredVersions(t *testing.T) {
	cases := []struct {
		transport, api string
		torch          bool
	}{
		{transfer.TransportFS, engine.APIVLLM, false},
		{transfer.TransportFS, engine.APISGLang, false},
		{transfer.TransportObjects, engine.APIVLLM, false},
		{transfer.TransportObjects, engine.APISGLang, false},
		{transfer.TransportFS, engine.APIVLLM, true},
		{transfer.TransportObjects, engine.APISGLang, true},
	}
	for _, tc := range cases {
		name := tc.transport + "/" + tc.api + "/go"
		if tc.torch {
			name = tc.transport + "/" + tc.api + "/torch"
		}
		t.Run(name, func(t *testing.T) {
			if tc.torch {
				needTorch(t)
			}
			r := startEngineWeights(t, tc.transport, tc.api, false)
			if tc.torch {
				ctx, cancel := context.WithTimeout(r.c.ctx, 2*time.Minute)
				tr, err := torch.StartBuiltin(ctx, torch.Options{Threads: 1},
					policy.Checkpoint{Model: r.deps.Model, Tokenizer: r.deps.Tokenizer}, itLearnerConfig(1).Learner.AdamW())
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { tr.Close() })
				r.deps.Trainer = tr
			}
			const steps = 3
			svc, err := lsvc.New(itLearnerConfig(steps), r.deps)
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Run(r.c.ctx); err != nil {
				t.Fatalf("learner: %v", err)
			}
			if svc.NextStep() != steps {
				t.Fatalf("learner stopped at step %d of %d", svc.NextStep(), steps)
			}
			bustest.Eventually(t, 30*time.Second, "the engine holds the last version", func() bool {
				return r.eng.Version() == steps && r.eng.Refused() == nil
			})

			anns, _, err := transfer.List(r.c.ctx, r.lb)
			if err != nil {
				t.Fatal(err)
			}
			if len(anns) == 0 {
				t.Fatal("no version announced")
			}
			for _, a := range anns {
				if a.Transport != tc.transport || a.Manifest.Format != weights.FormatBuiltin {
					t.Errorf("v%d announced via %s as %q, want %s and %q", a.Version, a.Transport, a.Manifest.Format, tc.transport, weights.FormatBuiltin)
				}
			}
			seen := r.watch.all()
			loaded := map[int64]bool{}
			for _, s := range seen {
				if s.err != nil {
					t.Errorf("the engine was asked to reload %s, which was not a complete version then: %v", s.path, s.err)
					continue
				}
				root := r.verDir
				if tc.transport == transfer.TransportObjects {
					root = r.localDir
				}
				if want := filepath.Join(root, weights.VersionDir(s.version)); s.path != want {
					t.Errorf("the engine reloaded v%d from %s, want %s", s.version, s.path, want)
				}
				if s.format != weights.FormatBuiltin {
					t.Errorf("v%d's manifest says format %q", s.version, s.format)
				}
				loaded[s.version] = true
			}
			if !loaded[0] || !loaded[steps] {
				t.Errorf("reloads %+v: want v0 (before any task) and v%d among them", seen, steps)
			}
			if st := r.srv.Stats(); st.Reloads != int64(len(seen)) {
				t.Errorf("the server answered %d reloads, %d were sent", st.Reloads, len(seen))
			}
			l := r.c.ledger(t)
			if len(l.reports) != steps {
				t.Errorf("%d step reports, want %d", len(l.reports), steps)
			}
			for id, s := range l.scored {
				if s.Traj.ActorID != "engine-actor" || !loaded[s.Traj.PolicyVersion] {
					t.Errorf("trajectory %s from %s under v%d, which the engine did not reload", id, s.Traj.ActorID, s.Traj.PolicyVersion)
				}
			}
		})
	}
}

// TestEngineActorRefusesStaleReload: the same roles with an engine that
// answers every reload with success but keeps its launch weights (the
// reported vLLM fault): the first version's probe fails, the actor
// refuses to serve (ErrProbe), and no trajectory is ever written. This is
// the test above failing if the engine were not reloaded.
func TestEngineActorRefusesStaleReload(t *testing.T) {
	for _, tc := range []struct{ transport, api string }{
		{transfer.TransportFS, engine.APIVLLM},
		{transfer.TransportObjects, engine.APISGLang},
	} {
		t.Run(tc.transport+"/"+tc.api, func(t *testing.T) {
			r := startEngineWeights(t, tc.transport, tc.api, true)
			svc, err := lsvc.New(itLearnerConfig(1), r.deps)
			if err != nil {
				t.Fatal(err)
			}
			lctx, stop := context.WithCancel(r.c.ctx)
			done := make(chan error, 1)
			go func() { done <- svc.Run(lctx) }()
			bustest.Eventually(t, 30*time.Second, "the engine refuses the stale reload", func() bool {
				return errors.Is(r.eng.Refused(), actor.ErrProbe)
			})
			// Tasks are offered for a while; none is served.
			time.Sleep(2 * time.Second)
			stop()
			if err := <-done; err != nil {
				t.Logf("learner: %v", err)
			}
			if r.eng.Version() != -1 {
				t.Errorf("engine version %d after a stale reload, want -1 (never serving)", r.eng.Version())
			}
			if len(r.watch.all()) == 0 {
				t.Error("no reload was asked of the engine")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := r.lb.Stream(ctx, bus.Rollouts)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != 0 {
				t.Errorf("%d trajectories written by an engine holding the wrong weights", info.State.Msgs)
			}
		})
	}
}
