package service

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"go.uber.org/zap"
)

// TestResumeIntoTrainer: with Deps.Trainer (the path --trainer torch takes),
// --resume restores the checkpoint's weights and optimiser state into the
// trainer, which then trains from there.
func TestResumeIntoTrainer(t *testing.T) {
	e := newEnv(t)
	e.runAll(t, testConfig(2))
	ck, err := policy.LoadFile(filepath.Join(e.ckpt, LatestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Opt == nil || ck.Opt.T == 0 {
		t.Fatalf("checkpoint without optimiser state: %+v", ck.Opt)
	}
	cfg := testConfig(4)
	cfg.Resume, cfg.CheckpointDir = true, e.ckpt
	tr, err := trainer.NewBuiltin(e.base.Clone(), task.BuiltinTokenizer(), cfg.Learner.AdamW(), trainer.BuiltinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(cfg, Deps{Bus: e.b, Trainer: tr, Tokenizer: task.BuiltinTokenizer(), Problems: e.train, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if svc.NextStep() != 2 {
		t.Errorf("next step %d, want 2", svc.NextStep())
	}
	w, _ := tr.Weights(t.Context())
	o, _ := tr.Optimizer(t.Context())
	if !slices.Equal(w.Params, ck.Model.Params) || !slices.Equal(o.M, ck.Opt.M) || !slices.Equal(o.V, ck.Opt.V) || o.T != ck.Opt.T {
		t.Error("the trainer does not hold the checkpoint's weights and optimiser state after resuming")
	}
	if svc.Model() != w {
		t.Error("the service does not train through the given trainer")
	}
}
