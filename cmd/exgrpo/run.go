package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/exgrpo/exgrpo/task"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	register("run", "train the built-in policy with every role in one process (embedded NATS server)", runLocal)
}

// trainFlags binds the flags shared by `run`, `learner` and `replay`: the
// algorithm's settings and the data. They write into c.
func trainFlags(fs *flag.FlagSet, c *local.Config) {
	l := &c.Learner.Learner
	fs.StringVar(&c.Algo, "algo", c.Algo, "algorithm: exgrpo, or onpolicy (the Dr.GRPO baseline: rho 0, no collection)")
	fs.Int64Var(&c.Learner.Steps, "steps", c.Learner.Steps, "training steps")
	fs.Int64Var(&c.Learner.Seed, "seed", c.Learner.Seed, "seed of question draws and sampling")
	fs.StringVar(&c.TrainData, "train-data", "", "train on this dataset file instead of the built-in set (verl-style .parquet, or JSONL)")
	fs.StringVar(&c.HeldOutData, "heldout-data", "", "evaluate on this dataset file instead of the built-in held-out set")
	fs.Func("system-prompt", "system prompt of every problem of --train-data/--heldout-data: 'paper' (the paper's <think> prompt) or the text", func(v string) error {
		c.Data.System = v
		if v == "paper" {
			c.Data.System = task.PaperSystemPrompt
		}
		return nil
	})
	fs.BoolVar(&c.Data.ThinkGate, "think-gate", false, "grade only the text after the last </think> (math-think / arith-think)")
	fs.IntVar(&l.K, "k", l.K, "rollouts per question (group size K)")
	fs.IntVar(&l.B, "batch", l.B, "questions per step (B)")
	fs.Float64Var(&l.Rho, "rho", l.Rho, "fraction of a step's questions replayed from the pool")
	fs.Float64Var(&l.LR, "lr", l.LR, "AdamW learning rate (constant)")
	fs.Float64Var(&l.Start, "start", l.Start, "delayed-start threshold on batch Pass@1 (<= 0: mixed from step 0)")
	fs.Float64Var(&l.Beta, "beta", l.Beta, "policy-shaping constant of f(w) = w/(w+beta)")
	fs.Float64Var(&l.CEnt, "c-ent", l.CEnt, "entropy bonus coefficient")
	fs.IntVar(&l.MiniBatches, "minibatches", l.MiniBatches, "optimiser steps per step")
	fs.IntVar(&l.Staleness, "staleness", l.Staleness, "staleness bound S in policy versions (0 = synchronous, the paper)")
	fs.IntVar(&l.RetireAfter, "retire-after", l.RetireAfter, "retire a question after this many consecutive all-correct groups (1 = the paper's E4, 0 = never); learner and replay pool alike")
	fs.IntVar(&c.Replay.Pool.ReplayLimit, "replay-limit", c.Replay.Pool.ReplayLimit, "replay one question at most this many times (0 = no limit, the paper; a variant outside the paper)")
	fs.IntVar(&c.Learner.MaxNew, "max-new", c.Learner.MaxNew, "response token cap per rollout")
	fs.Func("temperature", "actors' sampling temperature (default 1); actors record and the trainer scores softmax(z/T)", func(v string) error {
		t, err := strconv.ParseFloat(v, 32)
		c.Learner.Temperature = float32(t)
		return err
	})
	fs.IntVar(&c.Learner.EvalEvery, "eval-every", c.Learner.EvalEvery, "held-out evaluation every N steps (and at the end)")
	fs.IntVar(&c.Learner.CheckpointEvery, "checkpoint-every", c.Learner.CheckpointEvery, "checkpoint every N steps (and at the end)")
	fs.IntVar(&c.TrainQuestions, "train-questions", c.TrainQuestions, "training questions (built-in train set)")
	fs.IntVar(&c.HeldOutQuestions, "heldout", c.HeldOutQuestions, "held-out questions evaluated")
	fs.IntVar(&c.EvalSamples, "eval-samples", c.EvalSamples, "samples per held-out question for pass@1")
	fs.StringVar(&c.CacheDir, "cache-dir", c.CacheDir, "base-model cache (default ~/.cache/exgrpo)")
	fs.IntVar(&c.Pretrain.Steps, "pretrain-steps", c.Pretrain.Steps, "warm-up steps of the base model (fewer = weaker base)")
	fs.Func("selection", "replayed-trajectory selection: lowest-entropy (default), random or highest-entropy", func(v string) error {
		l.Selection = learner.Selection(v)
		return nil
	})
}

// roleLogger logs JSON lines to path (appending), or to stderr when path is "".
func roleLogger(path string, debug bool) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if debug {
		cfg.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	}
	if path != "" {
		cfg.OutputPaths = []string{path}
		cfg.ErrorOutputPaths = []string{path}
	}
	return cfg.Build()
}

func runLocal(ctx context.Context, args []string) error {
	c := local.DefaultConfig()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&c.RunDir, "run-dir", "", "run directory (default a fresh timestamped one under ./runs)")
	trainerFlags(fs, &c)
	fs.StringVar(&c.RunID, "run", c.RunID, "run id in stream names")
	fs.IntVar(&c.Actors, "actors", c.Actors, "actor roles")
	fs.IntVar(&c.Verifiers, "verifiers", c.Verifiers, "verifier worker roles")
	fs.StringVar(&c.Engine, "engine", "", "run the actors on engine backends: vllm or sglang starts one built-in engine server per actor in this process, serving the base model in that API (empty: built-in actors)")
	fs.StringVar(&c.MetricsAddr, "metrics", "", "serve Prometheus /metrics on this address (e.g. :9090)")
	debug := fs.Bool("debug", false, "debug logging (to run.log in the run directory)")
	trainFlags(fs, &c)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if c.RunDir == "" {
		c.RunDir = rundir.DefaultPath("runs", time.Now())
	}
	if err := os.MkdirAll(c.RunDir, 0o755); err != nil {
		return err
	}
	log, err := roleLogger(filepath.Join(c.RunDir, rundir.LogFile), *debug)
	if err != nil {
		return err
	}
	defer log.Sync()
	c.Normalize()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	actors := "built-in"
	if c.Engine != "" {
		actors = c.Engine + " engine"
	}
	fmt.Fprintf(os.Stderr, "exgrpo run: %s, %d steps of %d questions x %d rollouts (rho %.2f), %d %s actor(s)\n",
		c.Algo, c.Learner.Steps, c.Learner.Learner.B, c.Learner.Learner.K, c.Learner.Learner.Rho, c.Actors, actors)
	_, err = local.Run(ctx, c, local.Hooks{Out: os.Stderr}, log)
	return err
}
