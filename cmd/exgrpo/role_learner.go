package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"go.uber.org/zap"
)

func init() {
	register("learner", "the learner: drives the training steps, publishes weights and step reports (one per run)", runLearnerRole)
}

func runLearnerRole(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("learner", flag.ContinueOnError)
	bf := addBusFlags(fs)
	c := local.DefaultConfig()
	trainFlags(fs, &c)
	ckptDir := fs.String("checkpoint-dir", "checkpoints", "where checkpoints are written (and read with --resume)")
	resume := fs.Bool("resume", false, "continue from checkpoint-dir/latest.safetensors at the step after it")
	base := fs.String("base", "", "start from this policy checkpoint instead of the cached built-in base model")
	eval := fs.Bool("eval", true, "evaluate held-out pass@1 every --eval-every steps and at the end")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	c.RunDir = "-" // no run directory in this role
	c.Normalize()
	c.Learner.CheckpointDir, c.Learner.Resume = *ckptDir, *resume
	if err := c.Learner.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(bf.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	var ck policy.Checkpoint
	if *base != "" {
		ck, err = policy.LoadFile(*base)
	} else if !*resume {
		ck, err = local.BaseModel(ctx, c, os.Stderr)
	}
	if err != nil {
		return fmt.Errorf("learner: base model: %w", err)
	}
	if ck.Tokenizer == nil {
		ck.Tokenizer = taskTokenizer()
	}
	train, heldout, err := local.Datasets(c)
	if err != nil {
		return err
	}
	nc, b, err := bf.open(ctx, "learner", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := metrics.New("learner", bf.run, true)
	deps := lsvc.Deps{Bus: b, Model: ck.Model, Tokenizer: ck.Tokenizer, Problems: train.Problems,
		Metrics: lsvc.NewMetrics(reg.Registerer()), Log: log,
		OnStep: func(r lsvc.StepResult) {
			log.Info("step", zap.Int64("step", r.Summary.Step), zap.Float64("reward", r.Summary.Pass1),
				zap.Float64("heldout", r.HeldOut), zap.Bool("mixed", r.Summary.Mixed), zap.Int("replayed", r.Replayed),
				zap.Float64("loss", r.Summary.Loss), zap.Duration("took", r.Total))
		}}
	if *eval {
		deps.Evaluate = local.Evaluator(c, heldout)
	}
	svc, err := lsvc.New(c.Learner, deps)
	if err != nil {
		return err
	}
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	merr := make(chan error, 1)
	go func() { merr <- metrics.Serve(mctx, bf.metrics, log, reg) }()
	err = svc.Run(ctx)
	stop()
	if e := <-merr; err == nil && e != nil {
		err = e
	}
	return err
}

func taskTokenizer() *policy.Tokenizer { return task.BuiltinTokenizer() }
