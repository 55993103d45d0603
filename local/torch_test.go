package local

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/torch"
	"go.uber.org/zap"
)

func needTorch(t *testing.T) {
	t.Helper()
	if err := torch.CheckPython(context.Background(), "/usr/bin/python3"); err != nil && os.Getenv("EXGRPO_PYTHON") == "" {
		t.Skipf("skipping: %v", err)
	}
}

// TestRunTorchTrainer: `exgrpo run --trainer torch` end to end on a tiny
// run: the learner trains through the PyTorch worker, the actors sample
// every published version, and the run directory and summary are the Go
// trainer's (checkpoint with optimiser state included).
func TestRunTorchTrainer(t *testing.T) {
	needTorch(t)
	cfg := tinyRunConfig(t)
	cfg.Trainer = TrainerTorch
	sum, err := Run(context.Background(), cfg, Hooks{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Completed || sum.Steps != cfg.Learner.Steps {
		t.Fatalf("summary %+v: want completed, %d steps", sum, cfg.Learner.Steps)
	}
	ck, err := policy.LoadFile(filepath.Join(cfg.RunDir, "checkpoints", lsvc.LatestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Opt == nil || ck.Opt.T != int(cfg.Learner.Steps)*cfg.Learner.Learner.MiniBatches {
		t.Errorf("final checkpoint's optimiser %+v, want %d updates", ck.Opt, cfg.Learner.Steps)
	}
	for _, f := range []string{"summary.json", "metrics.jsonl"} {
		if _, err := os.Stat(filepath.Join(cfg.RunDir, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestRunTorchWorkerKilled: the worker killed during the run makes the run
// fail promptly with a message naming the dead worker, not hang.
func TestRunTorchWorkerKilled(t *testing.T) {
	needTorch(t)
	cfg := tinyRunConfig(t)
	cfg.Trainer = TrainerTorch
	cfg.Learner.Steps = 50
	var pid int
	hooks := Hooks{
		Trainer: func(tr trainer.Trainer) { pid = tr.(*torch.Client).PID() },
		Step: func(r lsvc.StepResult, _ rundir.Step) {
			if r.Summary.Step == 1 && pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := Run(ctx, cfg, hooks, zap.NewNop())
	if err == nil {
		t.Fatal("the run succeeded with its worker killed")
	}
	if ctx.Err() != nil {
		t.Fatalf("the run hung until the test's deadline: %v", err)
	}
	t.Logf("the run failed with: %v", err)
	if !strings.Contains(err.Error(), "torch worker exited") || !strings.Contains(err.Error(), "killed") {
		t.Errorf("error %q does not say the torch worker was killed", err)
	}
}
