package main

import (
	"context"
	"flag"
	"fmt"
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
	fs.Var(resume, "resume", "continue from the latest checkpoint in checkpoint-dir at the step after it; "+
		"--resume=auto: continue when that checkpoint exists for this run, else start fresh (for automatic restarts)")
	ckFormat := fs.String("checkpoint-format", "", "file (checkpoint-dir/step-N.safetensors and latest.safetensors: the built-in model, "+
		"what retrain, inspect and eval read) or dir (checkpoint-dir/step-N/ with the trainer's own weights and optimiser files, and a latest file naming it: any model); "+
		"default file for the built-in model, dir for an HF model")
	fs.IntVar(&c.Learner.CheckpointKeep, "checkpoint-keep", 0, "checkpoints kept on disk: after each new one is complete and latest names it, older ones of this run are deleted "+
		"down to the newest N (latest and the one before it always kept: a resume may go to either); "+
		"0 = the format's default (2 for dir, every checkpoint for file), -1 = every checkpoint")
	base := fs.String("base", "", "start from this policy checkpoint instead of the cached built-in base model")
	model := fs.String("model", "", "with --trainer torch: the model the worker trains, an HF model directory (or a built-in checkpoint), instead of the built-in base; "+
		"with --torch-socket: the model the worker was launched with (checked)")
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
	if *model != "" {
		switch {
		case c.Trainer != local.TrainerTorch:
			return fmt.Errorf("%w: --model %s is trained by the PyTorch worker (--trainer torch); the Go trainer trains the built-in model (--base for a built-in checkpoint)", errUsage, *model)
		case *base != "":
			return fmt.Errorf("%w: --model and --base both name the model to train; give one", errUsage)
		}
		c.Torch.Model = *model
	}
	if err := c.Learner.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(bf.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	// The architecture decides the checkpoint format, and the format where
	// --resume looks: a worker already running is asked what it holds.
	arch := "builtin"
	if c.Torch.Model != "" {
		arch = local.ModelArch(c.Torch.Model)
	}
	var tr trainer.Trainer
	if c.Trainer == local.TrainerTorch && c.Torch.Socket != "" {
		cc := c
		cc.Torch.Model = "" // checked below, unless resuming (then the checkpoint's weights are)
		if tr, err = local.StartTrainer(ctx, cc, policy.Checkpoint{}, log); err != nil {
			return err
		}
		defer tr.Close()
		arch = tr.Info().Arch
	}
	if c.Learner.CheckpointFormat, err = lsvc.CheckpointFormatFor(*ckFormat, arch); err != nil {
		return fmt.Errorf("%w: --checkpoint-format: %v", errUsage, err)
	}
	if c.Learner.Resume, err = resume.decide(*ckptDir, bf.run, c.Learner.CheckpointFormat); err != nil {
		return err
	}
	if resume.auto {
		log.Info("--resume=auto", zap.Bool("resuming", c.Learner.Resume), zap.String("checkpoint_dir", *ckptDir),
			zap.String("format", c.Learner.CheckpointFormat))
	}
	if tr != nil && c.Torch.Model != "" && !c.Learner.Resume {
		if err := lsvc.Holds(tr.Info(), c.Torch.Model); err != nil {
			return fmt.Errorf("learner: --torch-socket: %w", err)
		}
	}

	var ck policy.Checkpoint
	switch {
	case *base != "":
		ck, err = policy.LoadFile(*base)
	case c.Learner.Resume || c.Torch.Model != "":
		// the checkpoint's weights, or the worker's own model
	case tr != nil && arch != "builtin":
		// a torchrun worker holding its own model
	default:
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
	if tr == nil && c.Trainer == local.TrainerTorch && c.Learner.Resume {
		// The worker starts on the checkpoint's weights; the service then
		// restores the optimiser state (and the built-in weights) into it.
		if c.Learner.CheckpointFormat == lsvc.FormatDir {
			dck, err := lsvc.LatestDir(*ckptDir)
			if err != nil {
				return fmt.Errorf("learner: resume: %w", err)
			}
			c.Torch.Model = dck.Weights()
		} else if ck, err = policy.LoadFile(filepath.Join(*ckptDir, lsvc.LatestFile)); err != nil {
			return fmt.Errorf("learner: resume: %w", err)
		}
	}
	if tr == nil {
		if tr, err = local.StartTrainer(ctx, c, ck, log); err != nil {
			return err
		}
		if tr != nil {
			defer tr.Close()
		}
	} else if ck.Model != nil && arch == "builtin" && !c.Learner.Resume {
		// A torchrun worker of the built-in architecture trains the base.
		if err := tr.Restore(ctx, ck.Model, nil); err != nil {
			return fmt.Errorf("learner: --torch-socket: %w", err)
		}
	}
	if tr != nil {
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
// run in format (lsvc.FormatFile or FormatDir). A latest checkpoint of
// another run is an error with auto: starting fresh would overwrite it.
func (f *resumeFlag) decide(dir, run, format string) (bool, error) {
	if !f.auto {
		return f.on, nil
	}
	got, ok, err := lsvc.LatestRun(dir, format)
	if err != nil {
		return false, fmt.Errorf("learner: --resume=auto: %w", err)
	}
	if !ok {
		return false, nil
	}
	if got != run {
		return false, fmt.Errorf("%w: --resume=auto: the latest checkpoint in %s is of run %q, not %q; use another --checkpoint-dir", errUsage, dir, got, run)
	}
	return true, nil
}
