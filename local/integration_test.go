package local

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/verifier/worker"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The integration tests run the real roles (actor, verifier worker, replay
// service, learner) over a real embedded JetStream server on a random port
// with its store in a temporary directory, and poll with deadlines.

const (
	itK = 4
	itB = 8
)

// luckyChecker grades by a hash of the response text, so that an untrained
// policy still gets rewards spread over every bucket (about half correct):
// the pool fills, questions retire and replay happens. Deterministic, so the
// learner's re-verification of a replayed trajectory agrees with the worker.
type luckyChecker struct{}

func (luckyChecker) Check(gold, response string) verifier.Verdict {
	h := fnv.New32a()
	h.Write([]byte(response))
	if h.Sum32()%2 == 0 {
		return verifier.Verdict{Correct: true, Reason: "correct"}
	}
	return verifier.Verdict{Reason: "wrong_value"}
}

// tinyModel is a small random policy for the built-in tokenizer: fast to
// sample and train, enough for the system's mechanics.
func tinyModel(t testing.TB) policy.Checkpoint {
	cfg := task.ModelConfig()
	cfg.Layers, cfg.Width, cfg.Heads = 1, 16, 2
	m, err := policy.New(cfg, rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	return policy.Checkpoint{Model: m, Tokenizer: task.BuiltinTokenizer()}
}

func itLearnerConfig(steps int64) lsvc.Config {
	c := lsvc.DefaultConfig()
	c.Learner.K, c.Learner.B, c.Learner.MiniBatches = itK, itB, 1
	c.Learner.Start = 0 // mixed from step 0 (E5): collection and replay at once
	c.MaxNew = 8
	c.Steps = steps
	c.SampleTimeout = 2 * time.Second
	c.GatherTimeout = 90 * time.Second
	return c
}

func itReplayConfig() rsvc.Config {
	c := rsvc.DefaultConfig()
	c.Pool.K, c.Pool.Mu = itK, itK/2
	c.AckWait, c.ReportWait = 3*time.Second, 30*time.Second
	return c
}

// cluster is a server with actors and verifiers running; the replay
// service and the learner are started by the test.
type cluster struct {
	t      *testing.T
	srv    *bus.Server
	cfg    bus.Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error
}

func newCluster(t *testing.T, actors int) *cluster {
	c := &cluster{t: t, srv: bustest.Server(t), cfg: bus.DefaultConfig("it")}
	c.ctx, c.cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(c.stop)
	for i := range actors {
		b := c.open(fmt.Sprintf("actor-%d", i))
		acfg := actor.DefaultConfig()
		acfg.ID = fmt.Sprintf("actor-%d", i)
		a, err := actor.New(b, actor.NewBuiltin(), acfg, zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.goRole("actor", a.Run)
	}
	w, err := worker.New(c.open("verifier"), worker.DefaultConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.SetLookup(func(string) (verifier.Checker, error) { return luckyChecker{}, nil })
	c.goRole("verifier", w.Run)
	return c
}

func (c *cluster) open(name string) *bus.Bus {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	nc := bustest.Conn(c.t, c.srv, name)
	b, err := bus.Open(ctx, nc, c.cfg, zap.NewNop())
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *cluster) goRole(name string, run func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := run(c.ctx); err != nil && c.ctx.Err() == nil {
			c.errMu.Lock()
			c.errs = append(c.errs, fmt.Errorf("%s: %w", name, err))
			c.errMu.Unlock()
		}
	}()
}

func (c *cluster) stop() {
	c.cancel()
	c.wg.Wait()
	c.errMu.Lock()
	defer c.errMu.Unlock()
	for _, err := range c.errs {
		c.t.Errorf("role failed: %v", err)
	}
}

// replayRole is a replay service that can be killed and restarted.
type replayRole struct {
	c      *cluster
	b      *bus.Bus
	mu     sync.Mutex
	svc    *rsvc.Service
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *cluster) startReplay() *replayRole {
	r := &replayRole{c: c, b: c.open("replay")}
	r.start()
	return r
}

func (r *replayRole) start() {
	svc, err := rsvc.New(itReplayConfig(), r.b, nil, zap.NewNop())
	if err != nil {
		r.c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.c.ctx)
	done := make(chan struct{})
	r.mu.Lock()
	r.svc, r.cancel, r.done = svc, cancel, done
	r.mu.Unlock()
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			r.c.t.Errorf("replay: %v", err)
		}
	}()
}

// kill stops the service without any goodbye (its context is cancelled
// between two messages; nothing is flushed on the way out).
func (r *replayRole) kill() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	cancel()
	<-done
}

// snapshot waits until the pool has folded step n and returns its snapshot.
func (r *replayRole) snapshot(t *testing.T, n int64) []byte {
	t.Helper()
	var snap []byte
	bustest.Eventually(t, 60*time.Second, fmt.Sprintf("replay folds step %d", n), func() bool {
		r.mu.Lock()
		svc := r.svc
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.c.ctx, 2*time.Second)
		defer cancel()
		var last int64 = -1
		err := svc.Inspect(ctx, func(p *replay.Pool, l int64) { snap, last = p.Snapshot(), l })
		return err == nil && last >= n
	})
	return snap
}

// runLearner runs a learner to completion over the cluster.
func (c *cluster) runLearner(cfg lsvc.Config, model policy.Checkpoint, onStep func(lsvc.StepResult)) *lsvc.Service {
	c.t.Helper()
	ds, err := task.Generate("train", task.TrainSpec(), 200, 1)
	if err != nil {
		c.t.Fatal(err)
	}
	svc, err := lsvc.New(cfg, lsvc.Deps{Bus: c.open("learner"), Model: model.Model, Tokenizer: model.Tokenizer,
		Problems: ds.Problems, Check: func(p task.Problem, text string) verifier.Verdict { return luckyChecker{}.Check(p.Answer, text) },
		OnStep: onStep, Log: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := svc.Run(c.ctx); err != nil {
		c.t.Fatalf("learner: %v", err)
	}
	if c.ctx.Err() != nil {
		c.t.Fatalf("learner stopped by the test deadline at step %d", svc.NextStep())
	}
	return svc
}

// ledger reads what the streams say happened: every step report (CONTROL)
// and every scored trajectory (a ROLLOUTS trajectory joined with its SCORED
// verdict by sequence), by id.
type ledger struct {
	reports []wire.StepReport
	scored  map[string]*wire.Scored
	seqs    map[string]uint64 // ROLLOUTS sequence of each scored trajectory
	dups    []string          // trajectory ids graded twice
}

func readAll(t *testing.T, b *bus.Bus, k bus.Kind, fn func(data []byte)) {
	t.Helper()
	readAllMsgs(t, b, k, func(m jetstream.Msg) { fn(m.Data()) })
}

func readAllMsgs(t *testing.T, b *bus.Bus, k bus.Kind, fn func(m jetstream.Msg)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := b.JS.OrderedConsumer(ctx, b.Names.Stream(k), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	left := int(info.NumPending)
	for left > 0 {
		batch, err := cons.Fetch(min(left, 1000), jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if m.Subject() == b.Names.LineageSubject() {
				continue // lineage records, not step reports (see wire.Lineage)
			}
			fn(m)
		}
		if n == 0 {
			t.Fatalf("stream %s: %d messages announced but not delivered", k, left)
		}
		left -= n
	}
}

func (c *cluster) ledger(t *testing.T) ledger {
	b := c.open("reader")
	l := ledger{scored: map[string]*wire.Scored{}}
	readAll(t, b, bus.Control, func(d []byte) {
		var r wire.StepReport
		if err := wire.Decode(d, &r); err == nil {
			l.reports = append(l.reports, r)
		}
	})
	l.seqs = map[string]uint64{}
	verdicts := map[uint64]*wire.Verdict{}
	readAll(t, b, bus.Scored, func(d []byte) {
		vs, err := wire.DecodeVerdicts(d)
		if err != nil {
			return
		}
		for i := range vs {
			v := &vs[i]
			if seq, dup := l.seqs[v.ID]; dup {
				// A rollout graded again (a verifier died between its
				// publish and its acks) is the same sequence with the
				// same reward, and readers keep the first; anything
				// else is a trajectory scored twice.
				if seq != v.Seq || verdicts[seq].Reward != v.Reward {
					l.dups = append(l.dups, v.ID)
				}
				continue
			}
			l.seqs[v.ID] = v.Seq
			verdicts[v.Seq] = v
		}
	})
	readAllMsgs(t, b, bus.Rollouts, func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		v, ok := verdicts[md.Sequence.Stream]
		if !ok {
			return // not graded (dead-lettered)
		}
		var tr wire.Trajectory
		if err := wire.Decode(m.Data(), &tr); err != nil || tr.ID != v.ID {
			t.Errorf("ROLLOUTS seq %d: %v, id %q; its verdict names %q", md.Sequence.Stream, err, tr.ID, v.ID)
			return
		}
		l.scored[tr.ID] = &wire.Scored{Traj: tr, Reward: v.Reward, Reason: v.Reason, Extracted: v.Extracted}
	})
	return l
}

// fold is the independent fold of the ledger with the pure pool: what the
// replay service's state must be after the last report.
func (l ledger) fold(t *testing.T, cfg replay.Config) *replay.Pool {
	p, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range l.reports {
		r := replay.Report{Step: rep.Step, Mixed: rep.Mixed}
		for _, g := range rep.Groups {
			rg := replay.Group{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct}
			for i, id := range g.TrajectoryIDs {
				if !rep.Mixed || g.Rewards[i] != 1 || (g.Replayed && id == g.ReplayedID) {
					continue
				}
				tr := l.scored[id].Traj
				rg.Successes = append(rg.Successes, replay.Trajectory{ID: id, PolicyVersion: tr.PolicyVersion, Step: rep.Step,
					PromptTokens: tr.PromptTokens, Tokens: tr.Tokens, LogProbs: tr.LogProbs})
			}
			r.Groups = append(r.Groups, rg)
		}
		if err := p.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// checkLedger: every step is reported once, with B groups of K distinct
// trajectories, each fresh one stored on ROLLOUTS and graded on SCORED with one reward (nothing lost,
// nothing counted twice) and each replayed one a correct trajectory of an
// earlier step.
func (l ledger) check(t *testing.T, steps int) (replayed int) {
	t.Helper()
	if len(l.reports) != steps {
		t.Fatalf("CONTROL holds %d step reports, want %d", len(l.reports), steps)
	}
	if len(l.dups) > 0 {
		t.Errorf("trajectories scored twice: %v", l.dups)
	}
	trained := map[string]int64{}
	for i, r := range l.reports {
		if r.Step != int64(i) {
			t.Errorf("report %d is step %d", i, r.Step)
		}
		if len(r.Groups) != itB {
			t.Errorf("step %d: %d groups, want %d", r.Step, len(r.Groups), itB)
		}
		for _, g := range r.Groups {
			if len(g.TrajectoryIDs) != itK {
				t.Errorf("step %d question %s: %d trajectories", r.Step, g.QuestionID, len(g.TrajectoryIDs))
			}
			for j, id := range g.TrajectoryIDs {
				if g.Replayed && j == 0 {
					replayed++
					from, ok := trained[id]
					if !ok || from >= r.Step || l.scored[id].Reward != 1 {
						t.Errorf("step %d replays %s: not a correct trajectory of an earlier step", r.Step, id)
					}
					continue
				}
				if prev, dup := trained[id]; dup {
					t.Errorf("trajectory %s trained fresh at steps %d and %d", id, prev, r.Step)
				}
				trained[id] = r.Step
				s, ok := l.scored[id]
				if !ok {
					t.Errorf("step %d trained %s, which ROLLOUTS and SCORED do not hold", r.Step, id)
					continue
				}
				if s.Reward != g.Rewards[j] {
					t.Errorf("trajectory %s: reward %v in SCORED, %v in the report", id, s.Reward, g.Rewards[j])
				}
				if j >= len(g.Seqs) || g.Seqs[j] != l.seqs[id] {
					t.Errorf("trajectory %s: the report names ROLLOUTS sequences %v, its verdict %d", id, g.Seqs, l.seqs[id])
				}
			}
		}
	}
	return replayed
}

// TestLoopWithReplayRestart: the full loop over real roles for several
// steps, with the replay service killed mid-run and restarted later; the
// restarted service ends with exactly the pool of an independent fold of
// the run's ledger (byte-identical snapshots), and the ledger is whole.
func TestLoopWithReplayRestart(t *testing.T) {
	const steps = 8
	c := newCluster(t, 1)
	rr := c.startReplay()
	restarted := make(chan struct{})
	c.runLearner(itLearnerConfig(steps), tinyModel(t), func(r lsvc.StepResult) {
		if r.Summary.Step == 2 {
			rr.kill() // mid-run; the learner goes on and waits for it when it needs it
			go func() {
				time.Sleep(time.Second)
				rr.start()
				close(restarted)
			}()
		}
	})
	<-restarted
	got := rr.snapshot(t, steps-1)
	l := c.ledger(t)
	if n := l.check(t, steps); n == 0 {
		t.Error("no group replayed experience")
	}
	ref := l.fold(t, itReplayConfig().Pool)
	if !bytes.Equal(got, ref.Snapshot()) {
		t.Fatalf("restarted replay's pool differs from the independent fold of the ledger: %+v vs %+v", restore(t, got).Stats(), ref.Stats())
	}
	if st := ref.Stats(); st.Questions == 0 || st.Trajectories == 0 {
		t.Fatalf("pool empty after %d mixed steps: %+v", steps, st)
	}
}

func restore(t *testing.T, snap []byte) *replay.Pool {
	p, err := replay.Restore(itReplayConfig().Pool, snap)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMalformedMessagesGoToDead: garbage published on every stream a role
// reads lands in DEAD with a reason, and training completes its steps.
func TestMalformedMessagesGoToDead(t *testing.T) {
	const steps = 4
	c := newCluster(t, 1)
	rr := c.startReplay()
	b := c.open("vandal")
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	garbage := map[bus.Kind][]byte{
		bus.Tasks:    []byte("\xc1 not msgpack"),
		bus.Rollouts: {0x81, 0xa1, 'v', 0x63}, // schema version 99
		bus.Scored:   []byte("\xff\xff"),
		bus.Control:  {0x81, 0xa1, 'v', 0x63},
	}
	c.runLearner(itLearnerConfig(steps), tinyModel(t), func(r lsvc.StepResult) {
		if r.Summary.Step != 0 {
			return
		}
		for k, data := range garbage {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := pub.Publish(ctx, b.Names.Subject(k), "garbage-"+string(k), data); err != nil {
				t.Errorf("publish garbage on %s: %v", k, err)
			}
			cancel()
		}
	})
	rr.snapshot(t, steps-1)
	l := c.ledger(t)
	l.check(t, steps)
	// Each poisoned message is dead-lettered by a reader of its stream: the
	// actors (TASKS), the verifier (ROLLOUTS), the learner (SCORED: the
	// verdicts), the replay service (CONTROL).
	want := map[string]bool{"TASKS": true, "ROLLOUTS": true, "SCORED": true, "CONTROL": true}
	var got map[string]bool
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = deadLetters(t, b)
		missing := 0
		for k := range want {
			if !got[k] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters (stream/role) %v, want all of %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deadLetters reads DEAD message by message (no consumer) and returns the
// streams of its letters that carry a reason.
func deadLetters(t *testing.T, b *bus.Bus) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.Stream(ctx, bus.Dead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var dl wire.DeadLetter
		if err := wire.Decode(m.Data, &dl); err != nil || dl.Reason == "" {
			continue
		}
		got[dl.Stream[len("EXGRPO_IT_"):]] = true
	}
	return got
}

// TestRunOneProcess: `exgrpo run`'s code path end to end with a tiny warm-up:
// the run directory holds config, metrics (one line per step), the learning
// curve, the final checkpoint and a completed summary.
func TestRunOneProcess(t *testing.T) {
	cfg := tinyRunConfig(t)
	sum, err := Run(context.Background(), cfg, Hooks{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Completed || sum.Steps != cfg.Learner.Steps || sum.Rollouts != cfg.Learner.Steps*int64(itB*itK) {
		t.Fatalf("summary %+v: want completed, %d steps, %d rollouts", sum, cfg.Learner.Steps, cfg.Learner.Steps*int64(itB*itK))
	}
	if sum.BasePass1 < 0 || sum.BasePass1 > 1 || sum.FinalPass1 < 0 || sum.FinalPass1 > 1 {
		t.Fatalf("pass@1 out of range: %+v", sum)
	}
	for _, f := range []string{"config.json", "metrics.jsonl", "metrics.csv", "learning_curve.png", "summary.json",
		filepath.Join("checkpoints", lsvc.LatestFile)} {
		if st, err := os.Stat(filepath.Join(cfg.RunDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("run directory lacks %s (%v)", f, err)
		}
	}
	ck, err := policy.LoadFile(filepath.Join(cfg.RunDir, "checkpoints", lsvc.LatestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Meta[lsvc.MetaStep] != fmt.Sprint(cfg.Learner.Steps-1) || ck.Opt == nil {
		t.Errorf("final checkpoint at step %q with optimiser %v", ck.Meta[lsvc.MetaStep], ck.Opt != nil)
	}
}

// tinyRunConfig is a run that takes seconds: a small model warmed up for a
// few steps (cached in a temporary directory), 8 questions x 4 rollouts.
func tinyRunConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.RunDir = filepath.Join(t.TempDir(), "run")
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	cfg.Pretrain.Model.Layers, cfg.Pretrain.Model.Width, cfg.Pretrain.Model.Heads = 1, 32, 2
	cfg.Pretrain.Steps, cfg.Pretrain.Batch, cfg.Pretrain.Warmup = 20, 16, 5
	cfg.Learner.Steps = 3
	cfg.Learner.Learner.K, cfg.Learner.Learner.B, cfg.Learner.Learner.MiniBatches = itK, itB, 1
	cfg.Learner.EvalEvery, cfg.Learner.CheckpointEvery = 0, 0
	cfg.TrainQuestions, cfg.HeldOutQuestions, cfg.EvalSamples = 100, 16, 1
	return cfg
}
