package retrain

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"

	"github.com/exgrpo/exgrpo/learner"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// tinyRun is a finished one-process run (local.Run) that takes seconds: a
// small model warmed up for a few steps, 8 questions x 4 rollouts per
// step, mixed from step 0 with two mini-batches, so that later steps
// replay experience (E8) and each step makes two updates (E14).
func tinyRun(t *testing.T, steps int64) (local.Config, string) {
	t.Helper()
	cfg := local.DefaultConfig()
	cfg.RunDir = filepath.Join(t.TempDir(), "run")
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	cfg.Pretrain.Model.Layers, cfg.Pretrain.Model.Width, cfg.Pretrain.Model.Heads = 1, 32, 2
	cfg.Pretrain.Steps, cfg.Pretrain.Batch, cfg.Pretrain.Warmup = 300, 16, 20
	cfg.Learner.Steps = steps
	cfg.Learner.Learner.K, cfg.Learner.Learner.B, cfg.Learner.Learner.MiniBatches = 4, 8, 2
	cfg.Learner.Learner.LR = 1e-3 // moves the tiny model visibly in a few steps
	cfg.Learner.EvalEvery, cfg.Learner.CheckpointEvery = 0, 0
	cfg.TrainQuestions, cfg.HeldOutQuestions, cfg.EvalSamples = 40, 8, 1
	sum, err := local.Run(context.Background(), cfg, local.Hooks{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Completed {
		t.Fatalf("run did not complete: %+v", sum)
	}
	return cfg, filepath.Join(cfg.RunDir, "checkpoints", lsvc.LatestFile)
}

// Retraining a finished run from its record (CONTROL's final lineage and
// SCORED, read from the run directory's store) with the run's own
// settings reproduces its final weights and AdamW moments bit for bit;
// with another beta (E11) or shaping off, the same data gives other weights.
func TestRetrainReproducesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a one-process run")
	}
	cfg, latest := tinyRun(t, 5)
	ctx := context.Background()
	rec, err := Load(ctx, cfg.RunDir, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Reports) != int(cfg.Learner.Steps) {
		t.Fatalf("%d reports in the ledger for %d steps", len(rec.Reports), cfg.Learner.Steps)
	}
	replayed := 0
	for _, r := range rec.Reports {
		for _, g := range r.Groups {
			if g.Replayed {
				replayed++
			}
		}
	}
	t.Logf("%d replayed groups", replayed)
	if replayed == 0 {
		t.Fatal("the run replayed nothing: the test would not cover E11")
	}
	rc, err := RunConfig(ConfigPath(cfg.RunDir))
	if err != nil {
		t.Fatal(err)
	}
	base, err := local.BaseModel(ctx, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := policy.LoadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	lc := LearnerConfig(rc)
	if err := CheckSameData(lc, lc); err != nil {
		t.Fatal(err)
	}
	res, err := Train(ctx, lc, base.Model, rec)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := sameBits(res.Model.Params, want.Model.Params); !ok {
		t.Fatalf("retrained weights differ from the run's final checkpoint at parameter %d", i)
	}
	if want.Opt == nil || res.Opt.T != want.Opt.T {
		t.Fatalf("AdamW step count %d, checkpoint %v", res.Opt.T, want.Opt)
	}
	if i, ok := sameBits(res.Opt.M, want.Opt.M); !ok {
		t.Fatalf("first moments differ at %d", i)
	}
	if i, ok := sameBits(res.Opt.V, want.Opt.V); !ok {
		t.Fatalf("second moments differ at %d", i)
	}
	if _, ok := sameBits(res.Model.Params, base.Model.Params); ok {
		t.Fatal("the retrained model equals the base model")
	}

	for name, edit := range map[string]func(*learner.Config){
		"beta 0.5":   func(c *learner.Config) { c.Beta = 0.5 },
		"no shaping": func(c *learner.Config) { c.NoPolicyShaping = true },
	} {
		c := lc
		edit(&c)
		if err := CheckSameData(lc, c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		other, err := Train(ctx, c, base.Model, rec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, ok := sameBits(other.Model.Params, want.Model.Params); ok {
			t.Errorf("%s: same weights as the run: the objective change did not reach the update", name)
		}
	}

	// The harness: the same settings give the same weights and the run's
	// final held-out pass@1; another beta is reported as the one change.
	out := t.TempDir()
	sum, err := Run(ctx, Options{RunDir: cfg.RunDir, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if sum.SameWeights == nil || !*sum.SameWeights || len(sum.Changed) != 0 || sum.Steps != int(cfg.Learner.Steps) || sum.Replayed != replayed {
		t.Fatalf("same settings: %+v", sum)
	}
	if sum.FinalPass1 != sum.RunPass1 {
		t.Errorf("final held-out pass@1 %v, the run's %v", sum.FinalPass1, sum.RunPass1)
	}
	ck, err := policy.LoadFile(filepath.Join(out, "final.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sameBits(ck.Model.Params, want.Model.Params); !ok {
		t.Error("final.safetensors differs from the run's final weights")
	}
	sum, err = Run(ctx, Options{RunDir: cfg.RunDir, Out: t.TempDir(), Edit: func(c *learner.Config) { c.Beta = 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.SameWeights == nil || *sum.SameWeights || len(sum.Changed) != 1 || sum.Changed[0] != "Beta 0.1 -> 0.5" {
		t.Errorf("beta 0.5: same weights %v, changed %v", sum.SameWeights, sum.Changed)
	}
	if _, err := Run(ctx, Options{RunDir: cfg.RunDir, Out: t.TempDir(), Edit: func(c *learner.Config) { c.Rho = 0.25 }}); !errors.Is(err, ErrConfig) {
		t.Errorf("rho 0.25: %v, want ErrConfig", err)
	}

	// The same record read from a live server (--nats): the same steps and
	// trajectories, and the same weights.
	srv, err := bus.StartServer(bus.ServerConfig{Host: "127.0.0.1", Port: -1, StoreDir: filepath.Join(cfg.RunDir, "jetstream"),
		ReadyTimeout: 20 * time.Second}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	live, err := Load(ctx, "", &bus.ConnConfig{URL: srv.ClientURL()}, cfg.RunID)
	srv.Shutdown()
	if err != nil {
		t.Fatal(err)
	}
	if len(live.Reports) != len(rec.Reports) || len(live.Scored) != len(rec.Scored) {
		t.Fatalf("live record: %d reports, %d trajectories; the store's: %d, %d", len(live.Reports), len(live.Scored), len(rec.Reports), len(rec.Scored))
	}
	if res2, err := Train(ctx, lc, base.Model, live); err != nil {
		t.Fatal(err)
	} else if _, ok := sameBits(res2.Model.Params, want.Model.Params); !ok {
		t.Fatal("retrained from the live server: weights differ")
	}

	// A record with a gap, or missing a trajectory, is refused.
	gap := &Record{Reports: rec.Reports[1:], Scored: rec.Scored}
	if _, err := Train(ctx, lc, base.Model, gap); !errors.Is(err, ErrRecord) {
		t.Errorf("gap: %v, want ErrRecord", err)
	}
	lost := &Record{Reports: rec.Reports, Scored: map[string]*wire.Scored{}}
	for id, sc := range rec.Scored {
		if id != rec.Reports[2].Groups[0].TrajectoryIDs[1] {
			lost.Scored[id] = sc
		}
	}
	if _, err := Train(ctx, lc, base.Model, lost); !errors.Is(err, ErrRecord) {
		t.Errorf("missing trajectory: %v, want ErrRecord", err)
	}
}

// Settings that would change the data are refused; E10-E14's are not.
func TestCheckSameData(t *testing.T) {
	run := learner.DefaultConfig()
	for _, tc := range []struct {
		name string
		edit func(*learner.Config)
		ok   bool
	}{
		{"same", func(*learner.Config) {}, true},
		{"beta", func(c *learner.Config) { c.Beta = 0.3 }, true},
		{"no shaping", func(c *learner.Config) { c.NoPolicyShaping = true }, true},
		{"no IS", func(c *learner.Config) { c.NoISCorrection = true }, true},
		{"c_ent", func(c *learner.Config) { c.CEnt = 0 }, true},
		{"lr", func(c *learner.Config) { c.LR = 3e-4 }, true},
		{"mini-batches", func(c *learner.Config) { c.MiniBatches = 1 }, true},
		{"K", func(c *learner.Config) { c.K = 4 }, false},
		{"B", func(c *learner.Config) { c.B = 16 }, false},
		{"rho", func(c *learner.Config) { c.Rho = 0.25 }, false},
		{"start", func(c *learner.Config) { c.Start = 0.5 }, false},
		{"selection", func(c *learner.Config) { c.Selection = learner.SelectRandom }, false},
		{"retirement", func(c *learner.Config) { c.RetireAfter = 2 }, false},
		{"temperature", func(c *learner.Config) { c.Temperature = 0.7 }, false},
		{"invalid beta", func(c *learner.Config) { c.Beta = -1 }, false},
	} {
		c := run
		tc.edit(&c)
		if err := CheckSameData(run, c); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
