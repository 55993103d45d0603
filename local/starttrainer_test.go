package local

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"go.uber.org/zap"
)

// TestStartTrainerSocket: with --torch-socket StartTrainer asks the worker
// what it holds instead of overwriting it. A built-in worker gets the base
// weights (as before); with Torch.Model it keeps what it was launched with,
// and a Torch.Model that is not what it was launched with is refused.
func TestStartTrainerSocket(t *testing.T) {
	needTorch(t)
	dir := t.TempDir()
	mc := task.ModelConfig()
	mc.Layers, mc.Width, mc.Heads = 1, 16, 2
	newModel := func(seed uint64) *policy.Model {
		m, err := policy.New(mc, rand.New(rand.NewPCG(seed, 1)))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	launched, base := newModel(1), newModel(2)
	path := filepath.Join(dir, "launched.safetensors")
	if err := policy.SaveFile(path, policy.Checkpoint{Model: launched, Tokenizer: task.BuiltinTokenizer()}); err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Abs("../trainer/torch")
	if err != nil {
		t.Fatal(err)
	}
	// worker starts a worker as torchrun would, listening on a socket of its own.
	worker := func(name string) string {
		sock := filepath.Join(dir, name+".sock")
		cmd := exec.Command("/usr/bin/python3", "-m", "torchworker", "--model", path, "--listen", sock, "--threads", "1")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return sock
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Trainer = TrainerTorch
	cfg.Torch.Python = "/usr/bin/python3"
	weights := func(cfg Config) ([]float32, error) {
		tr, err := StartTrainer(ctx, cfg, policy.Checkpoint{Model: base, Tokenizer: task.BuiltinTokenizer()}, zap.NewNop())
		if err != nil {
			return nil, err
		}
		defer tr.Close()
		if got, want := tr.Info().Model, realPath(t, path); got != want {
			t.Errorf("the worker reports model %q, want %q", got, want)
		}
		w, err := tr.Weights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Clone(w.Params), nil
	}

	cfg.Torch.Socket = worker("a")
	if w, err := weights(cfg); err != nil || !slices.Equal(w, base.Params) {
		t.Errorf("built-in worker without Torch.Model: err %v; holds the base %v", err, err == nil && slices.Equal(w, base.Params))
	}
	cfg.Torch.Socket, cfg.Torch.Model = worker("b"), path
	if w, err := weights(cfg); err != nil || !slices.Equal(w, launched.Params) {
		t.Errorf("worker launched on Torch.Model: err %v; keeps its model %v", err, err == nil && slices.Equal(w, launched.Params))
	}
	cfg.Torch.Socket, cfg.Torch.Model = worker("c"), filepath.Join(dir, "other")
	if _, err := weights(cfg); !errors.Is(err, lsvc.ErrConfig) {
		t.Errorf("worker launched on another model than Torch.Model: %v, want lsvc.ErrConfig", err)
	}
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
