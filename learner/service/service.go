package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Deps are what the learner role works with besides its Config.
type Deps struct {
	Bus *bus.Bus
	// Model is the policy to train (the base model); ignored when resuming
	// from a checkpoint. The service owns it while Run runs.
	Model     *policy.Model
	Tokenizer *policy.Tokenizer
	// Trainer, when set, trains the policy instead of the built-in Go
	// trainer over Model (e.g. a PyTorch worker holding Model's weights,
	// built with Config.Learner.AdamW()); on resume the checkpoint's
	// weights and optimiser state are restored into it. A trainer of
	// another architecture (an HF model) cannot be restored into: to
	// resume, start it on the checkpoint's weights (LatestDir, then
	// DirCheckpoint.Weights); the service loads the optimiser state. The
	// caller closes it.
	Trainer trainer.Trainer
	// Problems is the training set; replayed questions must be among them.
	Problems []task.Problem
	// PublishWeights makes a policy version available to the actors; nil
	// publishes the policy's checkpoint bytes (no optimiser) with
	// bus.PublishWeights, which is what the actors read.
	PublishWeights func(ctx context.Context, version int64, m *policy.Model, tok *policy.Tokenizer) error
	// PublishVersion, when set, publishes versions instead of
	// PublishWeights, from the trainer itself (which writes the weights in
	// the model's own format, for any architecture): VersionPublisher makes
	// one over weights/transfer.
	PublishVersion func(ctx context.Context, version int64, tr trainer.Trainer) error
	// Check re-verifies a replayed trajectory's text (E9); nil uses the
	// verifier of the problem's kind.
	Check func(p task.Problem, text string) verifier.Verdict
	// Evaluate returns a model's held-out pass@1; nil = no evaluation. It
	// evaluates the built-in architecture; with a trainer of another one
	// the service says so at start and skips it.
	Evaluate func(ctx context.Context, m *policy.Model) (float64, error)
	// OnStep is called after every step, on the learner's goroutine.
	OnStep  func(StepResult)
	Metrics *Metrics // nil: unregistered
	Log     *zap.Logger
}

// StepResult is what one step did, for progress display and metrics files.
type StepResult struct {
	Summary  learner.StepSummary
	Version  int64   // policy version published after the step
	HeldOut  float64 // held-out pass@1 after the step, NaN when not evaluated
	Replayed int     // replayed groups
	Rollouts int64   // fresh rollouts gathered so far in this process
	Dropped  int     // incomplete groups dropped at the gather deadline
	Gather   time.Duration
	Train    time.Duration
	Total    time.Duration
	Last     bool // the final step of Config.Steps
}

// Checkpoint metadata keys.
const (
	MetaStep    = "exgrpo.step"    // last completed step
	MetaVersion = "exgrpo.version" // policy version after it
	MetaMixed   = "exgrpo.mixed"   // mode of the next step (E5)
	MetaRetired = "exgrpo.retired" // JSON list of retired question ids (E4)
	// MetaStreaks is the JSON map of question id -> consecutive all-correct
	// groups so far (E4 with RetireAfter > 1); absent in older checkpoints.
	MetaStreaks = "exgrpo.retire_streaks"
	MetaRun     = "exgrpo.run"
	LatestFile  = "latest.safetensors"
)

// Service is the learner role. Build with New, run once with Run.
type Service struct {
	cfg  Config
	d    Deps
	log  *zap.Logger
	met  *Metrics
	core *learner.Learner

	problems map[string]task.Problem
	sampler  *learner.FreshSampler
	retire   *learner.Retirement // E4 with RetireAfter; agrees with the pool's rule
	rng      *rand.Rand          // E7 random selection only
	checkers map[string]verifier.Checker
	pub      *bus.Publisher

	format  string // checkpoint format (FormatFile, FormatDir)
	builtin bool   // the trainer holds the built-in architecture

	step     int64   // next step to train
	chain    []int64 // this lineage's checkpoints known here: the one resumed from, then this epoch's (the keep rule)
	epoch    int64   // this process's learner epoch (wire.Lineage), set by Run
	version  int64   // current policy version
	mixed    bool    // mode known for the next step (E5)
	retired  []string
	rollouts int64

	plans    map[int64]*plan
	scoredC  chan jetstream.Msg // verdicts (SCORED)
	rollC    chan jetstream.Msg // trajectories (ROLLOUTS, followed from the epoch's start)
	rolls    map[uint64]*heldRollout
	verdicts map[uint64]*heldVerdict
	joined   map[uint64]int64         // ROLLOUTS sequences joined, with their step (until it is trained)
	early    map[int64][]earlyRollout // rollouts of steps not yet planned (after a restart)
}

// earlyRollout is a fenced rollout of a step not planned yet.
type earlyRollout struct {
	sc  *wire.Scored
	seq uint64
}

type plan struct {
	epoch    int64
	step     int64
	version  int64 // MinVersion of its tasks
	tasks    map[string]*planned
	order    []string // task ids in question order
	missing  int      // rollouts still expected
	expected int      // rollouts asked for
	started  time.Time
	retries  map[string]retryRef // retry task id -> the rollout it replaces
}

type planned struct {
	problem  task.Problem
	taskID   string
	samples  int
	prompt   wire.Int32s // the prompt's token ids (Task.PromptTokens)
	replayed *learner.Rollout
	ranking  []learner.Ranked
	got      map[int]*wire.Scored
	seqs     map[int]uint64 // index -> ROLLOUTS sequence of got[index] (named in the step report)
	retried  map[int]int    // index -> times asked for again
}

// New builds the service; with Config.Resume it loads the latest checkpoint.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Bus == nil || d.Tokenizer == nil {
		return nil, fmt.Errorf("%w: Bus and Tokenizer are required", ErrConfig)
	}
	if d.PublishWeights == nil {
		d.PublishWeights = func(ctx context.Context, version int64, m *policy.Model, tok *policy.Tokenizer) error {
			return PublishWeights(ctx, d.Bus, version, m, tok)
		}
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	s := &Service{cfg: cfg, d: d, log: d.Log, met: d.Metrics, problems: make(map[string]task.Problem, len(d.Problems)),
		checkers: map[string]verifier.Checker{}, plans: map[int64]*plan{}, early: map[int64][]earlyRollout{},
		rolls: map[uint64]*heldRollout{}, verdicts: map[uint64]*heldVerdict{}, joined: map[uint64]int64{}}
	ids := make([]string, 0, len(d.Problems))
	for _, p := range d.Problems {
		if _, dup := s.problems[p.ID]; dup {
			return nil, fmt.Errorf("%w: problem id %q appears twice in the training set", ErrConfig, p.ID)
		}
		s.problems[p.ID] = p
		ids = append(ids, p.ID)
	}
	if len(ids) < cfg.Learner.B {
		return nil, fmt.Errorf("%w: %d training problems for B = %d questions per step", ErrConfig, len(ids), cfg.Learner.B)
	}
	model, opt := d.Model, (*policy.AdamW)(nil)
	cfg.Learner.Temperature = float64(cfg.Temperature) // the trainer scores what the actors sampled (E7, E10, E11)
	s.cfg = cfg
	s.mixed = learner.InitialMixed(cfg.Learner)
	arch := "builtin"
	if d.Trainer != nil {
		arch = d.Trainer.Info().Arch
	}
	s.builtin = arch == "builtin"
	var err error
	if s.format, err = cfg.checkpointFormat(arch); err != nil {
		return nil, err
	}
	if !s.builtin && d.PublishVersion == nil {
		return nil, fmt.Errorf("%w: a trainer of architecture %q publishes versions through Deps.PublishVersion (--weights-transport fs or objects); the default publishes built-in weights", ErrConfig, arch)
	}
	var streaks map[string]int
	var dck *DirCheckpoint
	if cfg.Resume {
		var meta map[string]string
		if s.format == FormatDir {
			c, err := LatestDir(cfg.CheckpointDir)
			if err != nil {
				return nil, fmt.Errorf("learner service: resume: %w", err)
			}
			dck, meta = &c, c.Meta
			if d.Trainer == nil { // the Go trainer starts on the checkpoint's weights
				w, err := policy.LoadFile(filepath.Join(c.Weights(), trainer.BuiltinWeightsFile))
				if err != nil {
					return nil, fmt.Errorf("learner service: resume: %w", err)
				}
				model = w.Model
			}
		} else {
			ck, err := policy.LoadFile(filepath.Join(cfg.CheckpointDir, LatestFile))
			if err != nil {
				return nil, fmt.Errorf("learner service: resume: %w", err)
			}
			model, opt, meta = ck.Model, ck.Opt, ck.Meta
			if opt != nil {
				// The AdamW hyper-parameters come from this run's configuration.
				if opt2, err := policy.NewAdamW(cfg.Learner.AdamW(), model); err == nil {
					opt2.T, opt2.M, opt2.V = opt.T, opt.M, opt.V
					opt = opt2
				}
			}
		}
		if streaks, err = s.restoreMeta(meta); err != nil {
			return nil, err
		}
		s.chain = []int64{s.step - 1}
	}
	var core *learner.Learner
	switch {
	case d.Trainer != nil:
		if cfg.Resume && dck == nil {
			if err := d.Trainer.Restore(context.Background(), model, opt); err != nil {
				return nil, fmt.Errorf("learner service: resume: %w", err)
			}
		}
		core, err = learner.NewTrainer(cfg.Learner, d.Trainer)
	case model == nil:
		return nil, fmt.Errorf("%w: no model to train (Deps.Model or a checkpoint)", ErrConfig)
	default:
		core, err = learner.NewWithTokenizer(cfg.Learner, model, opt, d.Tokenizer)
	}
	if err != nil {
		return nil, fmt.Errorf("learner service: %w", err)
	}
	s.core = core
	if dck != nil {
		if err := resumeDir(context.Background(), core.Trainer(), *dck); err != nil {
			return nil, err
		}
	}
	if d.Evaluate != nil && !s.builtin {
		s.log.Info("held-out evaluation skipped: it runs the built-in architecture in process, and the trainer holds another",
			zap.String("arch", arch))
		s.d.Evaluate = nil
	}
	// Seeded by the step the run (re)starts at, so a resumed run is
	// deterministic given its checkpoint.
	s.sampler, err = learner.NewFreshSampler(ids, rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(s.step))))
	if err != nil {
		return nil, fmt.Errorf("learner service: %w", err)
	}
	for _, id := range s.retired {
		s.sampler.Retire(id)
	}
	s.retire = learner.RestoreRetirement(cfg.Learner.RetireAfter, learner.RetirementState{Retired: s.retired, Streaks: streaks})
	s.rng = rand.New(rand.NewPCG(uint64(cfg.Seed)^0x9e3779b97f4a7c15, uint64(s.step)))
	return s, nil
}

// Model returns the policy being trained (read it only between steps, e.g.
// from OnStep, or after Run returned).
func (s *Service) Model() *policy.Model { return s.core.Model() }

// NextStep is the step Run will train next.
func (s *Service) NextStep() int64 { return s.step }

// Run trains until Config.Steps steps are done (then it returns nil), ctx
// ends (nil) or a fatal error. A NATS connection that stays down longer than
// Config.ConnLoss is fatal (an error wrapping bus.ErrConnectionLost).
func (s *Service) Run(ctx context.Context) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lost := bus.WatchConnection(rctx, s.d.Bus.NC, s.cfg.ConnLoss)
	go func() {
		select {
		case err := <-lost:
			s.log.Error("NATS connection lost, stopping", zap.Error(err))
			cancel(err)
		case <-rctx.Done():
		}
	}()
	err := s.run(rctx)
	if cause := context.Cause(rctx); ctx.Err() == nil && errors.Is(cause, bus.ErrConnectionLost) {
		return fmt.Errorf("learner service: step %d: %w", s.step, cause)
	}
	return err
}

func (s *Service) run(ctx context.Context) error {
	var err error
	if s.pub, err = s.d.Bus.NewPublisher(bus.DefaultPublisherConfig()); err != nil {
		return fmt.Errorf("learner service: %w", err)
	}
	defer s.pub.Close()
	if s.cfg.Steps > 0 && s.step >= s.cfg.Steps {
		return nil
	}
	// The verdicts and the trajectories, from now on, with ordered
	// consumers (no acks: the streams keep the messages). This epoch's
	// tasks are published below, so every rollout and verdict of this epoch
	// comes after this point; a restarted learner is a new epoch.
	s.scoredC = make(chan jetstream.Msg, 4096)
	vc, err := s.d.Bus.Follow(ctx, bus.Scored, func(m jetstream.Msg) {
		select {
		case s.scoredC <- m:
		case <-ctx.Done():
		}
	}, func(err error) {
		// Missed heartbeats and leader changes after a node loss land
		// here; the ordered consumer resumes after its last message.
		s.log.Warn("verdicts reader", zap.Error(err))
	})
	if err != nil {
		return fmt.Errorf("learner service: %w", err)
	}
	defer vc.Stop()
	s.rollC = make(chan jetstream.Msg, 4096)
	rc, err := s.d.Bus.Follow(ctx, bus.Rollouts, func(m jetstream.Msg) {
		select {
		case s.rollC <- m:
		case <-ctx.Done():
		}
	}, func(err error) { s.log.Warn("rollouts reader", zap.Error(err)) })
	if err != nil {
		return fmt.Errorf("learner service: %w", err)
	}
	defer rc.Stop()

	if s.cfg.WatchDead {
		w, err := s.d.Bus.NewDeadWatcher(ctx, "learner")
		if err != nil {
			return quiet(ctx, fmt.Errorf("learner service: %w", err))
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := w.Run(wctx); err != nil && wctx.Err() == nil {
				s.log.Error("max-deliveries watcher stopped", zap.Error(err))
			}
		}()
		defer func() { stop(); <-done }()
	}
	// Version numbers name one content for ever: when a previous learner
	// epoch announced versions beyond this one's checkpoint (it trained on
	// after it), this epoch continues above them, so that no actor keeps
	// sampling with the dead epoch's newer weights as if they were ours.
	if v, err := s.d.Bus.LatestVersion(ctx); err == nil && v > s.version {
		s.log.Info("a previous learner announced newer weights; numbering continues above them",
			zap.Int64("checkpoint_version", s.version), zap.Int64("announced", v))
		s.version = v + 1
	}
	if err := s.publish(ctx); err != nil {
		return quiet(ctx, fmt.Errorf("learner service: publish weights v%d: %w", s.version, err))
	}
	s.met.Version.Set(float64(s.version))
	if err := s.startEpoch(ctx); err != nil {
		return quiet(ctx, err)
	}
	s.log.Info("learner starting", zap.Int64("epoch", s.epoch), zap.Int64("step", s.step), zap.Int64("version", s.version),
		zap.Bool("mixed", s.mixed))

	S := int64(s.cfg.Learner.Staleness)
	for t := s.step; t <= s.step+S && s.within(t); t++ {
		if err := s.prepare(ctx, t); err != nil {
			return quiet(ctx, err)
		}
	}
	for s.within(s.step) {
		t := s.step
		res, err := s.train(ctx, t)
		if err != nil {
			return quiet(ctx, err)
		}
		s.step = t + 1
		s.prune()
		if next := t + S + 1; s.within(next) {
			if err := s.prepare(ctx, next); err != nil {
				return quiet(ctx, err)
			}
		}
		if s.d.OnStep != nil {
			s.d.OnStep(res)
		}
	}
	return nil
}

func (s *Service) within(t int64) bool { return s.cfg.Steps == 0 || t < s.cfg.Steps }

// quiet turns an error caused by cancellation into a clean stop.
func quiet(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// taskSeed derives a task's sampling seed from the run seed, step and question.
func taskSeed(seed, step int64, q string) int64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s", seed, step, q)
	return int64(h.Sum64() >> 1)
}

// prepare picks step t's questions and publishes its tasks (steps 1-3).
func (s *Service) prepare(ctx context.Context, t int64) error {
	cfg := s.cfg.Learner
	p := &plan{epoch: s.epoch, step: t, version: s.version, tasks: map[string]*planned{}, retries: map[string]retryRef{},
		started: time.Now()}
	exclude := map[string]bool{}
	if n := cfg.PoolQuestions(s.mixed); n > 0 {
		reps, err := s.replayed(ctx, t, n)
		if err != nil {
			return err
		}
		for _, r := range reps {
			p.add(r)
			exclude[r.problem.ID] = true
		}
	}
	fresh, err := s.sampler.Next(cfg.B-len(p.order), exclude)
	if err != nil {
		return fmt.Errorf("learner service: step %d: %w", t, err)
	}
	for _, id := range fresh {
		p.add(&planned{problem: s.problems[id], samples: cfg.K})
	}
	if err := s.tokenizePrompts(ctx, p); err != nil {
		return fmt.Errorf("learner service: step %d: %w", t, err)
	}
	batch := s.pub.Batch()
	for _, id := range p.order {
		pt := p.tasks[id]
		pt.taskID = id
		tk := wire.Task{RunID: s.d.Bus.Names.Run, TaskID: id, Step: t, QuestionID: pt.problem.ID,
			Prompt: pt.problem.Prompt, Answer: pt.problem.Answer, Kind: pt.problem.Kind, Samples: pt.samples,
			MinVersion: p.version, MaxNew: s.cfg.MaxNew, Temp: s.cfg.Temperature, Seed: taskSeed(s.cfg.Seed, t, pt.problem.ID),
			PromptTokens: pt.prompt}
		data, err := wire.Encode(&tk)
		if err != nil {
			return fmt.Errorf("learner service: %w", err)
		}
		if err := batch.Add(ctx, s.d.Bus.Names.Subject(bus.Tasks), id, data); err != nil {
			return fmt.Errorf("learner service: %w", err)
		}
		p.missing += pt.samples
	}
	p.expected = p.missing
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if err := batch.Wait(wctx); err != nil {
		return fmt.Errorf("learner service: publish tasks of step %d: %w", t, err)
	}
	s.plans[t] = p
	for _, e := range s.early[t] {
		s.accept(e.sc, e.seq)
	}
	delete(s.early, t)
	return nil
}

func (p *plan) add(pt *planned) {
	id := wire.TaskID(p.epoch, p.step, pt.problem.ID)
	pt.got, pt.seqs = map[int]*wire.Scored{}, map[int]uint64{}
	p.tasks[id] = pt
	p.order = append(p.order, id)
}

// replayed asks the pool for n questions and selects one stored trajectory
// for each (steps 1-2; E6, E7). Questions whose experience cannot be found
// are left out (the step takes more fresh ones instead).
func (s *Service) replayed(ctx context.Context, t int64, n int) ([]*planned, error) {
	req := wire.SampleRequest{RunID: s.d.Bus.Names.Run, Step: t, N: n, Seed: s.cfg.Seed ^ (t * 7919), Epoch: s.epoch,
		AfterStep: t - 1 - int64(s.cfg.Learner.Staleness)}
	reply, err := s.requestSample(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		s.log.Warn("replay service unavailable; this step trains on fresh questions only", zap.Int64("step", t), zap.Error(err))
		s.met.ReplayUnavailable.Inc()
		return nil, nil
	}
	if len(reply.Questions) == 0 {
		return nil, nil
	}
	var exps map[string]*wire.Experience
	for attempt := 1; ; attempt++ {
		if exps, err = s.fetchExperience(ctx, reply.Questions); err == nil || ctx.Err() != nil {
			break
		}
		if attempt == fetchAttempts {
			// As when the replay service is away: the step goes on with
			// fresh questions (a cluster electing a stream leader answers
			// "no responders" for a few seconds).
			s.log.Warn("stored experience unavailable; this step trains on fresh questions only", zap.Int64("step", t), zap.Error(err))
			s.met.ReplayUnavailable.Inc()
			return nil, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	if err != nil {
		return nil, err
	}
	var out []*planned
	for _, q := range reply.Questions {
		prob, ok := s.problems[q.QuestionID]
		if !ok {
			s.log.Warn("replayed question is not in the training set", zap.String("question", q.QuestionID))
			continue
		}
		var cands []learner.Rollout
		var texts []string
		for _, id := range q.Candidates {
			e, ok := exps[id]
			if !ok {
				continue
			}
			tr := wire.Trajectory{ID: e.TrajectoryID, TaskID: "-", QuestionID: e.QuestionID, PromptTokens: e.PromptTokens,
				Tokens: e.Tokens, LogProbs: e.LogProbs, Entropies: make(wire.Float32s, len(e.Tokens)), Finish: "eos"}
			if err := tr.Check(s.limits()); err != nil {
				s.log.Warn("stored experience refused", zap.String("question", q.QuestionID), zap.Error(err))
				continue
			}
			cands = append(cands, learner.Rollout{ID: e.TrajectoryID, PromptTokens: e.PromptTokens, Tokens: e.Tokens,
				LogProbs: e.LogProbs, Version: e.PolicyVersion})
			// E9 re-verifies the text the policy would be trained on: the
			// decoding of the stored tokens, not the text stored beside them.
			text := e.Text
			if s.d.Tokenizer != nil && s.builtin { // the built-in tokenizer decodes only built-in ids
				text = task.ResponseText(s.d.Tokenizer, e.Tokens)
			}
			texts = append(texts, text)
		}
		if len(cands) == 0 {
			s.log.Warn("no stored experience found for a replayed question", zap.String("question", q.QuestionID))
			continue
		}
		i, ranking, err := s.core.SelectTrajectoryContext(ctx, cands, s.rng)
		if err != nil {
			return nil, fmt.Errorf("learner service: step %d: %w", t, err)
		}
		r := cands[i]
		// ALGORITHM.md E9: the replayed trajectory is re-verified.
		v := s.check(prob, texts[i])
		r.Reward, r.Reason = 0, v.Reason
		if v.Correct {
			r.Reward = 1
		}
		out = append(out, &planned{problem: prob, samples: s.cfg.Learner.K - 1, replayed: &r, ranking: ranking})
	}
	return out, nil
}

func (s *Service) check(p task.Problem, text string) verifier.Verdict {
	if s.d.Check != nil {
		return s.d.Check(p, text)
	}
	c, ok := s.checkers[p.Kind]
	if !ok {
		var err error
		if c, err = verifier.Lookup(p.Kind); err != nil {
			return verifier.Verdict{Reason: "unknown_kind"}
		}
		s.checkers[p.Kind] = c
	}
	return c.Check(p.Answer, text)
}

// requestSample asks the replay service, retrying each SampleTimeout until
// ReplayWait (the same request, so the answer is the same).
func (s *Service) requestSample(ctx context.Context, req wire.SampleRequest) (wire.SampleReply, error) {
	var reply wire.SampleReply
	data, err := wire.Encode(&req)
	if err != nil {
		return reply, fmt.Errorf("learner service: %w", err)
	}
	start := time.Now()
	deadline := start.Add(s.cfg.ReplayWait)
	logged := start
	var last error
	for time.Now().Before(deadline) {
		if time.Since(logged) >= waitLogEvery {
			logged = time.Now()
			s.log.Info("waiting for the replay service", zap.Int64("step", req.Step), zap.Duration("waited", time.Since(start).Round(time.Second)),
				zap.Duration("deadline", s.cfg.ReplayWait), zap.NamedError("last_error", last))
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.SampleTimeout)
		msg, err := s.d.Bus.NC.RequestWithContext(rctx, s.d.Bus.Names.SampleSubject(), data)
		cancel()
		if ctx.Err() != nil {
			return reply, ctx.Err()
		}
		if err != nil {
			last = err
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			select { // no responders: the replay service is (re)starting
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				return reply, ctx.Err()
			}
			continue
		}
		if err := wire.Decode(msg.Data, &reply); err != nil {
			return reply, fmt.Errorf("learner service: sample reply: %w", err)
		}
		if reply.Error != "" {
			return reply, fmt.Errorf("learner service: replay: %s", reply.Error)
		}
		return reply, nil
	}
	return reply, fmt.Errorf("learner service: no sample reply within %v: %w", s.cfg.ReplayWait, last)
}

// fetchAttempts bounds the tries of fetchExperience per step.
const fetchAttempts = 3

// fetchExperience reads the stored trajectories of the given questions from
// EXPERIENCE with one reader over their subjects (deleted after the read).
func (s *Service) fetchExperience(ctx context.Context, qs []wire.SampledQuestion) (map[string]*wire.Experience, error) {
	want := map[string]bool{}
	subjects := make([]string, 0, len(qs))
	for _, q := range qs {
		subjects = append(subjects, s.d.Bus.Names.ExperienceSubject(q.QuestionID))
		for _, id := range q.Candidates {
			want[id] = true
		}
	}
	out := make(map[string]*wire.Experience, len(want))
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := bus.ReadSubjects(fctx, s.d.Bus, bus.Experience, subjects, func(m jetstream.Msg) {
		var e wire.Experience
		if wire.Decode(m.Data(), &e) != nil {
			return // inspect shows it; the candidate is skipped
		}
		if want[e.TrajectoryID] {
			if _, dup := out[e.TrajectoryID]; !dup {
				out[e.TrajectoryID] = &e
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("learner service: read experience: %w", err)
	}
	return out, nil
}

// accept files one fenced rollout of this epoch (ROLLOUTS sequence seq)
// under its step's plan.
func (s *Service) accept(sc *wire.Scored, seq uint64) {
	if _, ok := s.plans[sc.Traj.Step]; !ok {
		// receive refused steps beyond the ones in flight.
		if sc.Traj.Step < s.step {
			s.met.Ignored.Inc() // a step already trained (a late redelivery)
			return
		}
		s.early[sc.Traj.Step] = append(s.early[sc.Traj.Step], earlyRollout{sc: sc, seq: seq})
		return
	}
	p, pt, i, ok := s.locate(&sc.Traj)
	if !ok {
		s.met.Ignored.Inc()
		return
	}
	if _, dup := pt.got[i]; dup {
		return
	}
	pt.got[i], pt.seqs[i] = sc, seq
	p.missing--
}

// gather waits until every rollout of step t is in, or GatherTimeout, and
// says what it waits for every waitLogEvery.
func (s *Service) gather(ctx context.Context, p *plan) error {
	start := time.Now()
	timer := time.NewTimer(s.cfg.GatherTimeout)
	defer timer.Stop()
	tick := time.NewTicker(waitLogEvery)
	defer tick.Stop()
	fetch := time.NewTicker(joinWait / 3)
	defer fetch.Stop()
	for p.missing > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			tasks, n := p.waiting()
			s.log.Warn("gather deadline: training on the complete groups", zap.Int64("step", p.step), zap.Int("missing", n),
				zap.Strings("tasks", tasks))
			return nil
		case <-tick.C:
			s.logWait(p, start)
		case <-fetch.C:
			s.fetchWaiting(ctx)
		case m := <-s.rollC:
			s.onRollout(ctx, m)
		case m := <-s.scoredC:
			s.onVerdict(ctx, m)
			if p.missing <= p.expected/2 {
				faultpoint.Hit("learner.gather", p.step) // crash tests: half the step's rollouts in
			}
		}
	}
	return nil
}

// train gathers step t's rollouts, updates the policy and publishes the
// weights and the step report (steps 4-6).
func (s *Service) train(ctx context.Context, t int64) (StepResult, error) {
	p := s.plans[t]
	res := StepResult{HeldOut: math.NaN()}
	gstart := time.Now()
	if err := s.gather(ctx, p); err != nil {
		return res, err
	}
	res.Gather = time.Since(gstart)
	cfg := s.cfg.Learner
	var groups []learner.Group
	seqs := map[string]uint64{} // trajectory id -> ROLLOUTS sequence, for the report
	stale := 0
	for _, id := range p.order {
		pt := p.tasks[id]
		fresh := make([]learner.Rollout, 0, pt.samples)
		for i := 0; i < pt.samples; i++ {
			sc, ok := pt.got[i]
			if !ok {
				continue
			}
			tr := &sc.Traj
			seqs[tr.ID] = pt.seqs[i]
			fresh = append(fresh, learner.Rollout{ID: tr.ID, PromptTokens: tr.PromptTokens, Tokens: tr.Tokens,
				LogProbs: tr.LogProbs, Version: tr.PolicyVersion, Reward: sc.Reward, Reason: sc.Reason})
		}
		s.rollouts += int64(len(fresh))
		// Staleness is the gap in policy versions to the policy being
		// trained (version == step until a learner restart renumbers).
		kept, dropped := learner.FilterStale(s.version, cfg.Staleness, fresh)
		stale += dropped
		if len(kept) != pt.samples {
			res.Dropped++
			continue // incomplete after the deadline or staleness filter
		}
		g, err := learner.NewGroup(pt.problem.ID, cfg.K, pt.replayed, kept, pt.ranking)
		if err != nil {
			s.log.Warn("dropping a malformed group", zap.Int64("step", t), zap.Error(err))
			res.Dropped++
			continue
		}
		groups = append(groups, g)
		if pt.replayed != nil {
			res.Replayed++
		}
	}
	delete(s.plans, t)
	mixed := s.mixed
	if !mixed && res.Replayed > 0 {
		mixed = true // cannot happen: replay is only asked for in mixed mode
	}
	tstart := time.Now()
	sum, err := s.core.StepContext(ctx, learner.StepInput{Step: t, PolicyVersion: p.version, Mixed: mixed, Groups: groups, StaleDropped: stale})
	if err != nil {
		return res, fmt.Errorf("learner service: %w", err)
	}
	res.Train = time.Since(tstart)
	s.log.Info("engine/trainer mismatch at the first mini-batch", zap.Int64("step", t),
		zap.Float64("mean_abs_log_w", sum.MismatchLogW), zap.Float64("capped_fraction", sum.CappedFraction))
	s.version++
	if err := s.publish(ctx); err != nil {
		return res, fmt.Errorf("learner service: publish weights v%d: %w", s.version, err)
	}
	// E4, as the pool folds it (RetireAfter): retirement happens in mixed
	// mode only.
	for _, q := range s.retire.Fold(sum) {
		if s.sampler.Retire(q) {
			s.retired = append(s.retired, q)
		}
	}
	s.mixed = sum.NextMixed
	rep := report(s.d.Bus.Names.Run, sum, s.version, time.Since(p.started), seqs)
	rep.Epoch = s.epoch
	data, err := wire.Encode(&rep)
	if err != nil {
		return res, fmt.Errorf("learner service: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if _, err := s.pub.Publish(pctx, s.d.Bus.Names.Subject(bus.Control), wire.ReportMsgID(s.epoch, t), data); err != nil {
		return res, fmt.Errorf("learner service: publish step report %d: %w", t, err)
	}
	faultpoint.Hit("learner.after-report", t) // crash tests
	last := s.cfg.Steps > 0 && t == s.cfg.Steps-1
	if s.cfg.CheckpointDir != "" && (last || (s.cfg.CheckpointEvery > 0 && (t+1)%int64(s.cfg.CheckpointEvery) == 0)) {
		if err := s.checkpoint(ctx, t); err != nil {
			return res, err
		}
	}
	if s.d.Evaluate != nil && (last || (s.cfg.EvalEvery > 0 && (t+1)%int64(s.cfg.EvalEvery) == 0)) {
		acc, err := s.d.Evaluate(ctx, s.core.Model())
		if err != nil {
			return res, quiet(ctx, fmt.Errorf("learner service: evaluate: %w", err))
		}
		res.HeldOut = acc
		s.met.HeldOut.Set(acc)
	}
	res.Summary, res.Version, res.Rollouts, res.Last = sum, s.version, s.rollouts, last
	res.Total = time.Since(p.started)
	s.observe(res, stale)
	s.log.Debug("step", zap.Int64("step", t), zap.Float64("pass1", sum.Pass1), zap.Bool("mixed", sum.Mixed),
		zap.Int("replayed", res.Replayed), zap.Float64("loss", sum.Loss), zap.Duration("time", res.Total))
	return res, nil
}

// PublishWeights publishes a policy version as its checkpoint bytes (model
// and tokenizer, no optimiser state).
func PublishWeights(ctx context.Context, b *bus.Bus, version int64, m *policy.Model, tok *policy.Tokenizer) error {
	var buf bytes.Buffer
	if err := policy.WriteCheckpoint(&buf, policy.Checkpoint{Model: m, Tokenizer: tok,
		Meta: map[string]string{MetaVersion: strconv.FormatInt(version, 10)}}); err != nil {
		return fmt.Errorf("learner service: encode weights v%d: %w", version, err)
	}
	if err := publishProbe(ctx, b, version, m, tok); err != nil {
		return err
	}
	return b.PublishWeights(ctx, version, buf.Bytes())
}

// report turns a step summary into the wire step report (CONTROL); seqs
// gives the ROLLOUTS sequence of each fresh trajectory, which the report
// names beside its id (the replay service fetches the ones it stores by it).
func report(run string, sum learner.StepSummary, newVersion int64, took time.Duration, seqs map[string]uint64) wire.StepReport {
	r := wire.StepReport{RunID: run, Step: sum.Step, PolicyVersion: sum.PolicyVersion, NewVersion: newVersion,
		Pass1: sum.Pass1, Mixed: sum.Mixed, Loss: sum.Loss, GradNorm: sum.GradNorm, Skipped: sum.Skipped > 0,
		Entropy: sum.Entropy, StaleDropped: sum.StaleDropped, StepMicros: took.Microseconds(), UnixMs: time.Now().UnixMilli()}
	for _, g := range sum.Groups {
		gr := wire.GroupReport{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct, Replayed: g.Replayed,
			ReplayedID: g.ReplayedID, TrajectoryIDs: g.TrajectoryIDs, Rewards: g.Rewards, Advantages: g.Advantages,
			Reasons: g.Reasons, Seqs: make([]uint64, len(g.TrajectoryIDs))}
		for j, id := range g.TrajectoryIDs {
			if !(g.Replayed && id == g.ReplayedID) {
				gr.Seqs[j] = seqs[id]
			}
		}
		for _, c := range g.Candidates {
			gr.Candidates = append(gr.Candidates, wire.Candidate{ID: c.ID, Entropy: float32(c.Entropy)})
		}
		r.Groups = append(r.Groups, gr)
	}
	return r
}

// checkpoint writes step t's checkpoint in the configured format
// (checkpointDir for FormatDir). FormatFile: it writes step-<t>.safetensors, announces the checkpoint on
// CONTROL, then replaces latest.safetensors: a learner can only resume from
// a checkpoint the replay service has heard of (wire.Lineage). A crash
// between the two leaves the previous latest, which it still keeps. Then
// the keep rule (pruneCheckpoints, Config.CheckpointKeep) deletes old checkpoints.
func (s *Service) checkpoint(ctx context.Context, t int64) error {
	if err := os.MkdirAll(s.cfg.CheckpointDir, 0o755); err != nil {
		return fmt.Errorf("learner service: checkpoint: %w", err)
	}
	if s.format == FormatDir {
		return s.checkpointDir(ctx, t)
	}
	ck := policy.Checkpoint{Model: s.core.Model(), Tokenizer: s.d.Tokenizer, Opt: s.core.Optimizer(), Meta: s.meta(t)}
	path := filepath.Join(s.cfg.CheckpointDir, fmt.Sprintf("step-%06d.safetensors", t))
	if err := policy.SaveFile(path, ck); err != nil {
		return fmt.Errorf("learner service: checkpoint: %w", err)
	}
	tmp := filepath.Join(s.cfg.CheckpointDir, LatestFile+".tmp")
	if err := policy.SaveFile(tmp, ck); err != nil {
		return fmt.Errorf("learner service: checkpoint: %w", err)
	}
	if err := s.publishLineage(ctx, wire.Lineage{Kind: wire.LineageCheckpoint, Epoch: s.epoch, Step: t}); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.cfg.CheckpointDir, LatestFile)); err != nil {
		return fmt.Errorf("learner service: checkpoint: %w", err)
	}
	s.chain = append(s.chain, t)
	s.pruneCheckpoints(t)
	return nil
}

func (s *Service) observe(r StepResult, stale int) {
	m, sum := s.met, r.Summary
	m.Steps.Inc()
	m.Step.Set(float64(sum.Step))
	m.Version.Set(float64(r.Version))
	m.Reward.Set(sum.Pass1)
	m.Entropy.Set(sum.Entropy)
	m.Loss.Set(sum.Loss)
	m.GradNorm.Set(sum.GradNorm)
	m.Replayed.Set(float64(r.Replayed))
	m.Stale.Add(float64(stale))
	m.DroppedGroups.Add(float64(r.Dropped))
	m.Tokens.Add(float64(sum.Tokens))
	m.Rollouts.Set(float64(r.Rollouts))
	m.StepSeconds.Observe(r.Total.Seconds())
	m.GatherSeconds.Observe(r.Gather.Seconds())
	m.TrainSeconds.Observe(r.Train.Seconds())
	if sum.Mixed {
		m.Mixed.Set(1)
	}
}
