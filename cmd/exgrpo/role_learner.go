package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/exgrpo/exgrpo/bus"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/weights/transfer"
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
	trainerFlags(fs, &c)
	ckptDir := fs.String("checkpoint-dir", "checkpoints", "where checkpoints are written (and read with --resume)")
	resume := &resumeFlag{}
	fs.Var(resume, "resume", "continue from checkpoint-dir/latest.safetensors at the step after it; "+
		"--resume=auto: continue when that checkpoint exists for this run, else start fresh (for automatic restarts)")
	base := fs.String("base", "", "start from this policy checkpoint instead of the cached built-in base model")
	eval := fs.Bool("eval", true, "evaluate held-out pass@1 every --eval-every steps and at the end")
	wf := addWeightsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if err := bf.check(); err != nil {
		return err
	}
	var err error
	c.RunDir = "-" // no run directory in this role
	c.Normalize()
	c.Learner.CheckpointDir = *ckptDir
	if c.Learner.Resume, err = resume.decide(*ckptDir, bf.run); err != nil {
		return err
	}
	if err := c.Learner.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(bf.logLevel)
	if err != nil {
		return err
	}
	if resume.auto {
		log.Info("--resume=auto", zap.Bool("resuming", c.Learner.Resume), zap.String("checkpoint_dir", *ckptDir))
	}
	defer func() { _ = log.Sync() }()

	var ck policy.Checkpoint
	if *base != "" {
		ck, err = policy.LoadFile(*base)
	} else if !c.Learner.Resume {
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
	if c.Trainer == local.TrainerTorch && ck.Model == nil {
		// Resuming: the worker starts on the checkpoint's weights; the
		// service then restores them and the optimiser state into it.
		if ck, err = policy.LoadFile(filepath.Join(*ckptDir, lsvc.LatestFile)); err != nil {
			return fmt.Errorf("learner: resume: %w", err)
		}
	}
	tr, err := local.StartTrainer(ctx, c, ck, log)
	if err != nil {
		return err
	}
	if tr != nil {
		defer tr.Close()
		deps.Trainer = tr
	}
	if deps.PublishVersion, err = wf.publisher(b, *ckptDir, ck.Tokenizer, log); err != nil {
		return err
	}
	svc, err := lsvc.New(c.Learner, deps)
	if err != nil {
		return err
	}
	return bf.serve(ctx, nc, log, reg, svc.Run)
}

// weightsFlags choose how the learner publishes policy versions.
type weightsFlags struct {
	transport string
	cfg       transfer.Config
}

func addWeightsFlags(fs *flag.FlagSet) *weightsFlags {
	f := &weightsFlags{cfg: transfer.DefaultConfig(transfer.TransportObjects, "")}
	fs.StringVar(&f.transport, "weights-transport", "blob", "how versions travel: blob (one Object Store object per version, "+
		"the built-in model), objects (file sets in the Object Store with delta versions) or fs (a shared directory, --weights-dir)")
	fs.StringVar(&f.cfg.Dir, "weights-dir", "", "fs: the shared directory actors read versions from (DIR/v<N>); objects: the learner's staging directory (default checkpoint-dir/weights)")
	fs.IntVar(&f.cfg.FullEvery, "weights-full-every", f.cfg.FullEvery, "objects: a full version every N versions, deltas between")
	fs.IntVar(&f.cfg.Keep, "weights-keep", f.cfg.Keep, "versions kept besides those a delta chain or an actor's lease needs")
	fs.DurationVar(&f.cfg.LeaseTTL, "weights-lease-ttl", f.cfg.LeaseTTL, "fs: an actor's lease on a version it reads lapses after this long unrenewed")
	return f
}

// publisher returns the learner's PublishVersion for the chosen transport
// (nil: the service's default, one object per version): every version is
// what the trainer's SaveWeights writes (a built-in checkpoint, or an HF
// directory from the PyTorch worker's HF model), staged, committed and
// announced by weights/transfer, with its probe.
func (f *weightsFlags) publisher(b *bus.Bus, ckptDir string, tok *policy.Tokenizer, log *zap.Logger) (func(context.Context, int64, trainer.Trainer) error, error) {
	switch f.transport {
	case "blob":
		return nil, nil
	case transfer.TransportFS:
		if f.cfg.Dir == "" {
			return nil, fmt.Errorf("%w: --weights-transport fs needs --weights-dir, the shared directory every actor (and engine) reads at the same path", errUsage)
		}
	case transfer.TransportObjects:
		if f.cfg.Dir == "" {
			f.cfg.Dir = filepath.Join(ckptDir, "weights")
		}
	default:
		return nil, fmt.Errorf("%w: --weights-transport %q (want blob, objects or fs)", errUsage, f.transport)
	}
	f.cfg.Transport = f.transport
	p, err := transfer.NewPublisher(b, f.cfg, log)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return lsvc.VersionPublisher(b, p, tok), nil
}

func taskTokenizer() *policy.Tokenizer { return task.BuiltinTokenizer() }

// resumeFlag is --resume (a boolean) or --resume=auto.
type resumeFlag struct{ on, auto bool }

func (f *resumeFlag) IsBoolFlag() bool { return true }

func (f *resumeFlag) String() string {
	if f == nil || (!f.on && !f.auto) {
		return "false"
	}
	if f.auto {
		return "auto"
	}
	return "true"
}

func (f *resumeFlag) Set(v string) error {
	if v == "auto" {
		f.on, f.auto = false, true
		return nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("want true, false or auto, not %q", v)
	}
	f.on, f.auto = b, false
	return nil
}

// decide says whether to resume: --resume always (a missing checkpoint is
// an error then), --resume=auto when dir holds a latest checkpoint of this
// run. A latest checkpoint of another run is an error with auto: starting
// fresh would overwrite it.
func (f *resumeFlag) decide(dir, run string) (bool, error) {
	if !f.auto {
		return f.on, nil
	}
	path := filepath.Join(dir, lsvc.LatestFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	ck, err := policy.LoadFile(path)
	if err != nil {
		return false, fmt.Errorf("learner: --resume=auto: %w", err)
	}
	if got := ck.Meta[lsvc.MetaRun]; got != run {
		return false, fmt.Errorf("%w: --resume=auto: %s is a checkpoint of run %q, not %q; use another --checkpoint-dir", errUsage, path, got, run)
	}
	return true, nil
}
