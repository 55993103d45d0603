// Package local runs a whole training run in one process: an embedded NATS
// server with JetStream stored in the run directory, and every role around
// it (actors, verifier workers, the replay service and the learner), on the
// built-in task and policy. It is what `exgrpo run` does.
//
// Before the roles start it makes sure a base model exists (the supervised
// warm-up of package task, cached across runs) and measures its held-out
// pass@1; after the last step it measures the trained policy the same way
// (same questions, same samples per question, same seed), and writes the
// run directory (package rundir): config, metrics, learning curve,
// checkpoints and summary.json.
package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lsvc "github.com/exgrpo/exgrpo/learner/service"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/task"
)

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("local: invalid config")

// Algorithms of Config.Algo.
const (
	AlgoExGRPO   = "exgrpo"
	AlgoOnPolicy = "onpolicy" // the Dr.GRPO baseline: rho = 0, no collection, PPO clip throughout
)

// Config is a one-process run. JSON field names are what config.json shows.
type Config struct {
	RunDir string `json:"run_dir"` // the run directory (created); see rundir
	RunID  string `json:"run_id"`  // stream names' run id, [A-Za-z0-9_-]; default "local"
	Algo   string `json:"algo"`    // AlgoExGRPO (default) or AlgoOnPolicy

	Learner lsvc.Config `json:"learner"` // steps, K, B, rho, lr, S, ... (Learner.Learner)
	Replay  rsvc.Config `json:"replay"`  // the pool (its K follows Learner.Learner.K)

	Actors    int `json:"actors"`    // actor roles; default 1
	Verifiers int `json:"verifiers"` // verifier worker roles; default 1
	// Engine runs the actors on inference-engine backends instead of the
	// built-in one: "vllm" or "sglang" starts one built-in engine server
	// (package engine/server) per actor in this process, serving the base
	// model in that API, and points an engine actor at it. "" (default):
	// the built-in actors.
	Engine string `json:"engine,omitempty"`

	Pretrain task.PretrainConfig `json:"pretrain"`  // the base model's warm-up
	CacheDir string              `json:"cache_dir"` // where base models are cached; default ~/.cache/exgrpo

	// TrainData and HeldOutData replace the built-in sets with dataset
	// files (task.LoadFile: verl-style .parquet, or JSONL), loaded with
	// Data. With the built-in policy every prompt must be in its alphabet.
	TrainData   string              `json:"train_data,omitempty"`
	HeldOutData string              `json:"heldout_data,omitempty"`
	Data        task.DatasetOptions `json:"data_options"`

	TrainQuestions   int    `json:"train_questions"`   // training set size (built-in "train" set); default 4000
	HeldOutQuestions int    `json:"heldout_questions"` // held-out questions evaluated; default 400
	EvalSamples      int    `json:"eval_samples"`      // samples per held-out question for pass@1; default 4
	EvalSeed         uint64 `json:"eval_seed"`         // sampling seed of every evaluation; default 7

	// Trainer is the learner's trainer backend: TrainerGo (default, the
	// built-in Go model in process) or TrainerTorch (the PyTorch worker,
	// package trainer/torch, on the same built-in weights).
	Trainer string       `json:"trainer"`
	Torch   TorchOptions `json:"torch"` // with TrainerTorch

	MetricsAddr string `json:"metrics_addr"` // Prometheus /metrics listen address; "" = off
	NATSPort    int    `json:"nats_port"`    // embedded server port; default -1 (a free one)
}

// Trainer backends of Config.Trainer.
const (
	TrainerGo    = "go"
	TrainerTorch = "torch"
)

// TorchOptions configure the PyTorch worker of TrainerTorch.
type TorchOptions struct {
	Python           string `json:"python"`             // interpreter with torch, numpy, msgpack; "" = $EXGRPO_PYTHON, then /usr/bin/python3
	Device           string `json:"device"`             // torch device; default cpu
	Threads          int    `json:"threads"`            // torch (and BLAS) threads; 0 = torch's default; default 1
	MicroBatchTokens int    `json:"micro_batch_tokens"` // tokens per forward with gradient; 0 = whole mini-batches
	Socket           string `json:"socket"`             // connect to a worker already listening here (torchrun) instead of starting one
	// Model is the model the worker trains instead of the base: an HF
	// model directory, or a built-in checkpoint (StartTrainer); with Socket,
	// the model the worker was launched with, which StartTrainer checks.
	Model string `json:"model"`
}

// DefaultConfig is `exgrpo run` without flags: ExGRPO on the built-in task,
// sized to finish within ten minutes on the two-core machine: 250 steps of
// 32 questions x 8 rollouts took under 8 minutes of wall time there, at a
// load average near 20, and lifted held-out pass@1 by about 15 points over
// the default base (docs/benchmarks/run.md).
func DefaultConfig() Config {
	c := Config{RunID: "local", Algo: AlgoExGRPO, Learner: lsvc.DefaultConfig(), Replay: rsvc.DefaultConfig(),
		Actors: 1, Verifiers: 1, Pretrain: task.DefaultPretrainConfig(),
		TrainQuestions: 4000, HeldOutQuestions: 400, EvalSamples: 4, EvalSeed: 7, NATSPort: -1, Trainer: TrainerGo}
	// Tuned on the built-in task and base model (docs/benchmarks/run.md):
	// AdamW moves every parameter by about lr per update, and at 1e-3 the
	// 111k-parameter policy collapses within ten steps, at 2e-4 it drifts;
	// 1e-4 lifts held-out pass@1 steadily. Mixed mode from step 0 (start 0),
	// the paper's setting for a weak base model, so that a short run replays
	// from its first steps whatever the base's batch Pass@1.
	c.Learner.Learner.LR = 1e-4
	c.Learner.Learner.Start = 0
	c.Learner.Steps = 250
	c.Learner.MaxNew = task.TrainMaxNew
	c.Learner.CheckpointEvery = 50
	c.Learner.EvalEvery = 50
	// With --trainer torch on CPU: one torch thread. The built-in model is
	// small, and more threads (torch's and BLAS's pools) only contend with
	// the actors for the same cores (measured in BENCHMARKS.md).
	c.Torch.Threads = 1
	return c
}

// DefaultCacheDir is ~/.cache/exgrpo (or the OS's user cache directory), or
// .cache/exgrpo under the working directory when there is none.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "exgrpo")
	}
	return filepath.Join(".cache", "exgrpo")
}

// Normalize applies the algorithm choice and fills defaults; call before
// Validate (Run does both).
func (c *Config) Normalize() {
	if c.RunID == "" {
		c.RunID = "local"
	}
	if c.Algo == "" {
		c.Algo = AlgoExGRPO
	}
	if c.Trainer == "" {
		c.Trainer = TrainerGo
	}
	if c.Algo == AlgoOnPolicy {
		c.Learner.Learner.OnPolicyOnly = true
		c.Learner.Learner.Rho = 0
	}
	c.Replay.Pool.K = c.Learner.Learner.K
	c.Replay.Pool.Mu = float64(c.Learner.Learner.K) / 2
	c.Replay.Pool.MaxCandidates = c.Learner.Learner.Candidates
	c.Replay.Pool.RetireAfter = c.Learner.Learner.RetireAfter // E4: the pool and the fresh sampler retire alike
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir()
	}
	if c.RunDir != "" {
		c.Learner.CheckpointDir = filepath.Join(c.RunDir, "checkpoints")
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.RunDir == "":
		return fmt.Errorf("%w: RunDir is required (--run-dir)", ErrConfig)
	case c.Algo != AlgoExGRPO && c.Algo != AlgoOnPolicy:
		return fmt.Errorf("%w: Algo %q: want %q or %q", ErrConfig, c.Algo, AlgoExGRPO, AlgoOnPolicy)
	case c.Trainer != TrainerGo && c.Trainer != TrainerTorch:
		return fmt.Errorf("%w: Trainer %q: want %q or %q (--trainer)", ErrConfig, c.Trainer, TrainerGo, TrainerTorch)
	case c.Torch.Model != "" && c.Trainer != TrainerTorch:
		return fmt.Errorf("%w: a model directory (%s) is trained by the PyTorch worker: it needs Trainer %q (--trainer torch)", ErrConfig, c.Torch.Model, TrainerTorch)
	case c.Learner.Steps < 1:
		return fmt.Errorf("%w: Steps %d: a run needs at least 1 step (--steps)", ErrConfig, c.Learner.Steps)
	case c.Engine != "" && c.Engine != "vllm" && c.Engine != "sglang":
		return fmt.Errorf("%w: engine %q (want vllm, sglang or empty)", ErrConfig, c.Engine)
	case c.Actors < 1 || c.Verifiers < 1:
		return fmt.Errorf("%w: need at least 1 actor and 1 verifier (have %d, %d)", ErrConfig, c.Actors, c.Verifiers)
	case c.TrainQuestions < c.Learner.Learner.B:
		return fmt.Errorf("%w: %d training questions for B = %d per step", ErrConfig, c.TrainQuestions, c.Learner.Learner.B)
	case c.HeldOutQuestions < 1 || c.EvalSamples < 1:
		return fmt.Errorf("%w: HeldOutQuestions and EvalSamples must be >= 1", ErrConfig)
	}
	if err := c.Learner.Validate(); err != nil {
		return err
	}
	if err := c.Replay.Validate(); err != nil {
		return err
	}
	return c.Pretrain.Validate()
}

// since is a tiny helper for wall times in seconds.
func since(t time.Time) float64 { return time.Since(t).Seconds() }
