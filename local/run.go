package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/internal/progress"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/torch"
	"github.com/exgrpo/exgrpo/verifier/worker"
	"go.uber.org/zap"
)

// Hooks lets callers (tests, the command) watch a run. All fields optional.
type Hooks struct {
	// Out receives the human-readable progress (base model, progress bar,
	// the final comparison); nil = silent.
	Out io.Writer
	// Server is called once the embedded server is up, with its client URL.
	Server func(url string)
	// Replay is called with the running replay service (tests inspect it).
	Replay func(*rsvc.Service)
	// Step is called after every step, after the run directory has it.
	Step func(lsvc.StepResult, rundir.Step)
	// Trainer is called with the started trainer backend (TrainerTorch
	// only; tests use it to kill the worker).
	Trainer func(trainer.Trainer)
}

// Run performs the whole run described by cfg and returns its summary (also
// written to the run directory's summary.json). Cancelling ctx stops the
// run early: the summary then says Completed = false.
func Run(ctx context.Context, cfg Config, hooks Hooks, log *zap.Logger) (rundir.Summary, error) {
	start := time.Now()
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		return rundir.Summary{}, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	out := hooks.Out
	if out == nil {
		out = io.Discard
	}
	dir, err := rundir.Create(cfg.RunDir, cfg, false)
	if err != nil {
		return rundir.Summary{}, err
	}
	defer dir.Close()
	fmt.Fprintf(out, "run directory: %s\n", cfg.RunDir)

	// The base model: cached warm-up, or pretrained now.
	base, err := BaseModel(ctx, cfg, out)
	if err != nil {
		return rundir.Summary{}, err
	}
	train, heldout, err := Datasets(cfg)
	if err != nil {
		return rundir.Summary{}, err
	}
	evaluate := Evaluator(cfg, heldout)
	fmt.Fprintf(out, "evaluating the base model on %d held-out questions x %d samples ...\n", len(heldout.Problems), cfg.EvalSamples)
	basePass1, err := evaluate(ctx, base.Model)
	if err != nil {
		return rundir.Summary{}, fmt.Errorf("local: evaluate base model: %w", err)
	}
	fmt.Fprintf(out, "base model held-out pass@1: %.3f\n", basePass1)
	dir.BaseHeldOut = basePass1

	sum := rundir.Summary{RunID: cfg.RunID, Algo: cfg.Algo, BasePass1: basePass1, FinalPass1: math.NaN(),
		HeldOutN: len(heldout.Problems), MixedFromStep: -1}
	var stepsMu sync.Mutex
	var lastResult lsvc.StepResult
	err = runRoles(ctx, cfg, base, train.Problems, evaluate, dir, out, hooks, log, start, func(r lsvc.StepResult, s rundir.Step) {
		stepsMu.Lock()
		defer stepsMu.Unlock()
		lastResult = r
		sum.Steps = r.Summary.Step + 1
		sum.Rollouts = r.Rollouts
		sum.PoolSize, sum.Retired = s.PoolSize, s.Retired
		if r.Summary.Mixed && sum.MixedFromStep < 0 {
			sum.MixedFromStep = r.Summary.Step
		}
		if !math.IsNaN(r.HeldOut) {
			sum.FinalPass1 = r.HeldOut
		}
	})
	stepsMu.Lock()
	defer stepsMu.Unlock()
	sum.Completed = err == nil && lastResult.Last
	sum.WallSeconds = since(start)
	if math.IsNaN(sum.FinalPass1) {
		sum.FinalPass1 = 0
	}
	sum.Gain = sum.FinalPass1 - basePass1
	steps := dir.Steps()
	if n := min(len(steps), 10); n > 0 {
		for _, s := range steps[len(steps)-n:] {
			sum.FinalReward += s.Reward / float64(n)
		}
		if perr := dir.PlotCurve(fmt.Sprintf("%s on the built-in task (run %s)", cfg.Algo, cfg.RunID)); perr != nil {
			log.Warn("learning curve", zap.Error(perr))
		}
	}
	if sum.Completed {
		sum.Checkpoint = filepath.Join(rundir.CheckpointsDir, lsvc.LatestFile)
	}
	if werr := dir.WriteSummary(sum); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return sum, err
	}
	if sum.Completed {
		fmt.Fprintf(out, "\n%-28s %.3f\n%-28s %.3f\n%-28s %+.3f (%+.1f points)\n", "base held-out pass@1:", sum.BasePass1,
			"final held-out pass@1:", sum.FinalPass1, "gain:", sum.Gain, 100*sum.Gain)
	} else {
		fmt.Fprintf(out, "\nstopped before the last step: base held-out pass@1 %.3f, no final evaluation\n", sum.BasePass1)
	}
	fmt.Fprintf(out, "%d steps, %d rollouts, %.0f s; run directory %s\n", sum.Steps, sum.Rollouts, sum.WallSeconds, cfg.RunDir)
	if !sum.Completed && ctx.Err() != nil {
		return sum, ctx.Err()
	}
	return sum, nil
}

// Evaluator returns the held-out evaluation every run uses: pass@1 over
// cfg.EvalSamples samples per question at temperature 1, with the same
// sampling seed each time, so that base and final figures compare.
func Evaluator(cfg Config, heldout task.Dataset) func(context.Context, *policy.Model) (float64, error) {
	tok := task.BuiltinTokenizer()
	return func(ctx context.Context, m *policy.Model) (float64, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rep, err := task.Evaluate(m, tok, heldout, cfg.EvalSamples, 1, rand.New(rand.NewPCG(cfg.EvalSeed, 0x6576616c)))
		if err != nil {
			return 0, err
		}
		return rep.Overall.Pass1, nil
	}
}

// BaseModel returns the base model of cfg.Pretrain from cfg.CacheDir,
// pretraining (with a progress bar on out) and caching it when missing.
func BaseModel(ctx context.Context, cfg Config, out io.Writer) (policy.Checkpoint, error) {
	if out == nil {
		out = io.Discard
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	var bar *progress.Bar
	path := task.BasePath(cfg.CacheDir, cfg.Pretrain)
	ck, cached, err := task.BaseModel(ctx, cfg.CacheDir, cfg.Pretrain, func(p task.PretrainProgress) {
		if bar == nil {
			fmt.Fprintf(out, "no cached base model: pretraining one (cached afterwards in %s)\n", path)
			bar = progress.New(out, "warm-up", int64(p.Steps), 30)
		}
		bar.Set(int64(p.Step), fmt.Sprintf("loss %.3f", p.SmoothLoss))
	})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return ck, fmt.Errorf("local: base model: %w", err)
	}
	if cached {
		fmt.Fprintf(out, "base model: %s (cached)\n", path)
	}
	return ck, nil
}

// Datasets returns the training set and the held-out evaluation set (the
// built-in "train" and "heldout" sets, at the configured sizes).
func Datasets(cfg Config) (train, heldout task.Dataset, err error) {
	for _, s := range task.BuiltinSets() {
		switch s.Name {
		case "train":
			train, err = task.Generate(s.Name, s.Spec, cfg.TrainQuestions, s.Seed)
		case "heldout":
			heldout, err = task.Generate(s.Name, s.Spec, cfg.HeldOutQuestions, s.Seed)
		}
		if err != nil {
			return train, heldout, fmt.Errorf("local: dataset %s: %w", s.Name, err)
		}
	}
	if cfg.TrainData != "" {
		if train, err = task.LoadFile(cfg.TrainData, cfg.Data); err != nil {
			return train, heldout, fmt.Errorf("local: train data: %w", err)
		}
	}
	if cfg.HeldOutData != "" {
		if heldout, err = task.LoadFile(cfg.HeldOutData, cfg.Data); err != nil {
			return train, heldout, fmt.Errorf("local: held-out data: %w", err)
		}
	}
	if len(train.Problems) == 0 || len(heldout.Problems) == 0 {
		return train, heldout, fmt.Errorf("local: train or held-out set is empty")
	}
	return train, heldout, nil
}

// runRoles starts the embedded server and every role, and returns when the
// learner has done its steps (then it stops the others), when ctx ends, or
// when a role fails.
func runRoles(ctx context.Context, cfg Config, base policy.Checkpoint, train []task.Problem,
	evaluate func(context.Context, *policy.Model) (float64, error), dir *rundir.Dir, out io.Writer, hooks Hooks,
	log *zap.Logger, start time.Time, record func(lsvc.StepResult, rundir.Step)) error {
	srv, err := bus.StartServer(bus.ServerConfig{Host: "127.0.0.1", Port: cfg.NATSPort, StoreDir: dir.JetStreamDir(),
		ReadyTimeout: 20 * time.Second}, log.Named("server"))
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	defer srv.Shutdown()
	fmt.Fprintf(out, "NATS server: %s (while the run goes on: exgrpo inspect buckets --nats %s --run %s)\n",
		srv.ClientURL(), srv.ClientURL(), cfg.RunID)
	if hooks.Server != nil {
		hooks.Server(srv.ClientURL())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	open := func(name string) (*bus.Bus, error) {
		nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: name}, log.Named(name))
		if err != nil {
			return nil, err
		}
		b, err := bus.Open(ctx, nc, bus.DefaultConfig(cfg.RunID), log.Named(name))
		if err != nil {
			nc.Close()
			return nil, err
		}
		return b, nil
	}
	var buses []*bus.Bus
	defer func() {
		for _, b := range buses {
			b.NC.Close()
		}
	}()
	var regs []*metrics.Registry
	reg := func(role string) *metrics.Registry {
		r := metrics.New(role, cfg.RunID, len(regs) == 0)
		regs = append(regs, r)
		return r
	}

	type role struct {
		name string
		run  func(context.Context) error
	}
	var roles []role

	rb, err := open("replay")
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	buses = append(buses, rb)
	rreg := reg("replay")
	replaySvc, err := rsvc.New(cfg.Replay, rb, rsvc.NewMetrics(rreg.Registerer()), log.Named("replay"))
	if err != nil {
		return err
	}
	roles = append(roles, role{"replay", replaySvc.Run})
	if hooks.Replay != nil {
		hooks.Replay(replaySvc)
	}
	for i := range cfg.Verifiers {
		name := fmt.Sprintf("verifier-%d", i)
		b, err := open(name)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		buses = append(buses, b)
		w, err := worker.New(b, worker.DefaultConfig(), log.Named(name), reg(name))
		if err != nil {
			return err
		}
		roles = append(roles, role{name, w.Run})
	}
	for i := range cfg.Actors {
		name := fmt.Sprintf("actor-%d", i)
		b, err := open(name)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		buses = append(buses, b)
		acfg := actor.DefaultConfig()
		acfg.ID = name
		if cfg.Engine != "" {
			run, err := engineActor(ctx, cfg, base, dir, i, b, acfg, log.Named(name), reg(name), func(n string, f func(context.Context) error) {
				roles = append(roles, role{n, f})
			})
			if err != nil {
				return err
			}
			roles = append(roles, role{name, run})
			continue
		}
		a, err := actor.New(b, actor.NewBuiltin(), acfg, log.Named(name), reg(name))
		if err != nil {
			return err
		}
		roles = append(roles, role{name, a.Run})
	}

	lb, err := open("learner")
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	buses = append(buses, lb)
	lreg := reg("learner")
	bar := progress.New(out, "training", cfg.Learner.Steps, 25)
	heldOut := math.NaN()
	tr, err := StartTrainer(ctx, cfg, base, log)
	if err != nil {
		return err
	}
	if tr != nil {
		defer tr.Close()
		if hooks.Trainer != nil {
			hooks.Trainer(tr)
		}
	}
	learnerSvc, err := lsvc.New(cfg.Learner, lsvc.Deps{Bus: lb, Model: base.Model, Tokenizer: base.Tokenizer, Problems: train, Trainer: tr,
		Evaluate: evaluate, Metrics: lsvc.NewMetrics(lreg.Registerer()), Log: log.Named("learner"),
		OnStep: func(r lsvc.StepResult) {
			pool := poolStats(ctx, replaySvc, r.Summary.Step)
			if !math.IsNaN(r.HeldOut) {
				heldOut = r.HeldOut
			}
			s := rundir.Step{Step: r.Summary.Step, WallSeconds: since(start), Reward: r.Summary.Pass1, HeldOut: r.HeldOut,
				Entropy: r.Summary.Entropy, Loss: r.Summary.Loss, GradNorm: r.Summary.GradNorm, Skipped: r.Summary.Skipped > 0,
				Mixed: r.Summary.Mixed, Replayed: r.Replayed, PoolSize: pool.Questions, Retired: pool.Retired,
				Rollouts: r.Rollouts, StaleDropped: r.Summary.StaleDropped, StepSeconds: r.Total.Seconds(),
				GatherSecs: r.Gather.Seconds(), TrainSecs: r.Train.Seconds(), LR: cfg.Learner.Learner.LR}
			if err := dir.Append(s); err != nil {
				log.Warn("metrics file", zap.Error(err))
			}
			if (r.Summary.Step+1)%10 == 0 {
				_ = dir.PlotCurve(fmt.Sprintf("%s on the built-in task (run %s)", cfg.Algo, cfg.RunID))
			}
			record(r, s)
			desc := fmt.Sprintf("reward %.2f  held-out %s  pool %d", r.Summary.Pass1, fmtAcc(heldOut), pool.Questions)
			bar.Set(r.Summary.Step+1, desc)
			if hooks.Step != nil {
				hooks.Step(r, s)
			}
		}})
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		roles = append(roles, role{"metrics", func(ctx context.Context) error {
			return metrics.Serve(ctx, cfg.MetricsAddr, log.Named("metrics"), regs...)
		}})
	}

	// Every role runs until the learner is done or one fails.
	errs := make(chan error, len(roles)+1)
	var wg sync.WaitGroup
	for _, r := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.run(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("local: role %s: %w", r.name, err)
				cancel()
			}
		}()
	}
	lerr := learnerSvc.Run(ctx)
	bar.Finish()
	cancel()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if lerr != nil {
		all = append([]error{fmt.Errorf("local: learner: %w", lerr)}, all...)
	}
	return errors.Join(all...)
}

// poolStats reads the pool after the fold of step t (waiting a little for
// it; the fold follows the step report by milliseconds).
func poolStats(ctx context.Context, r *rsvc.Service, t int64) replay.Stats {
	var st replay.Stats
	deadline := time.Now().Add(2 * time.Second)
	for {
		var last int64
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		err := r.Inspect(ictx, func(p *replay.Pool, l int64) { st, last = p.Stats(), l })
		cancel()
		if err != nil || last >= t || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fmtAcc(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.3f", x)
}

// StartTrainer returns the PyTorch worker for TrainerTorch (nil for
// TrainerGo: the learner service trains the built-in model in process).
//
// It starts one on cfg.Torch.Model when set (an HF model directory or a
// built-in checkpoint), else on base. With cfg.Torch.Socket it connects to
// a worker already running (torchrun) and asks it what it holds: a worker
// of another architecture keeps the model it loaded; one of the built-in
// architecture gets base's weights when base has a model (base without a
// model: nothing is restored, e.g. when resuming, where the learner
// service restores the checkpoint). cfg.Torch.Model is then the model the
// worker must have been launched with (lsvc.Holds).
func StartTrainer(ctx context.Context, cfg Config, base policy.Checkpoint, log *zap.Logger) (trainer.Trainer, error) {
	if cfg.Trainer != TrainerTorch {
		return nil, nil
	}
	o := torch.Options{Python: cfg.Torch.Python, Device: cfg.Torch.Device, Threads: cfg.Torch.Threads,
		MicroBatchTokens: cfg.Torch.MicroBatchTokens, Stderr: &zapWriter{log.Named("torchworker")}}
	adam := cfg.Learner.Learner.AdamW()
	if cfg.Torch.Socket != "" {
		tr, err := torch.Connect(ctx, o, cfg.Torch.Socket, adam)
		if err != nil {
			return nil, fmt.Errorf("local: torch trainer: %w", err)
		}
		in := tr.Info()
		switch {
		case cfg.Torch.Model != "":
			err = lsvc.Holds(in, cfg.Torch.Model)
		case in.Arch != "builtin":
			log.Info("the torch worker trains the model it loaded", zap.String("arch", in.Arch), zap.String("model", in.Model))
		case base.Model != nil:
			err = tr.Restore(ctx, base.Model, nil)
		}
		if err != nil {
			tr.Close()
			return nil, fmt.Errorf("local: torch trainer: %w", err)
		}
		return tr, nil
	}
	if cfg.Torch.Model != "" {
		tr, err := torch.Start(ctx, o, cfg.Torch.Model, adam)
		if err != nil {
			return nil, fmt.Errorf("local: torch trainer: %w", err)
		}
		return tr, nil
	}
	tr, err := torch.StartBuiltin(ctx, o, base, adam)
	if err != nil {
		return nil, fmt.Errorf("local: torch trainer: %w", err)
	}
	return tr, nil
}

// zapWriter logs the worker's stderr lines at info level.
type zapWriter struct{ log *zap.Logger }

func (w *zapWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Info(line)
		}
	}
	return len(p), nil
}

// ModelArch is the architecture the PyTorch worker finds at path, by the
// worker's own rule: a file, or a directory holding a built-in checkpoint
// (trainer.BuiltinWeightsFile), is the built-in architecture; any other
// directory an HF model.
func ModelArch(path string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, trainer.BuiltinWeightsFile)); err != nil {
			return "hf"
		}
	}
	return "builtin"
}
