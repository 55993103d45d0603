package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/policy"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/verifier"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const (
	testK      = 4
	testB      = 4
	testMaxNew = 6
)

// lucky is the test's reward: a fixed pseudo-random half of all trajectory
// ids are correct, so that groups spread over every bucket, the pool fills
// and replay happens even with an untrained policy.
func lucky(id string) bool {
	h := fnv.New32a()
	h.Write([]byte(id))
	return h.Sum32()%2 == 0
}

// rollouts is a stand-in for the actor and verifier roles (their own tests
// cover them): it takes tasks from TASKS, samples with the announced policy
// version it fetched from the Object Store, stores each trajectory on
// ROLLOUTS and publishes its verdict (lucky's reward) on SCORED, acking each
// task afterwards.
//
// forge, when set, stands for a misbehaving actor or verifier: it gets each
// scored rollout and returns what is published instead.
func rollouts(ctx context.Context, t *testing.T, b *bus.Bus, tasks chan<- wire.Task, forge ...func(wire.Scored) []wire.Scored) error {
	cons, err := b.Shared(ctx, bus.Tasks)
	if err != nil {
		return err
	}
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		return err
	}
	defer pub.Close()
	tok := task.BuiltinTokenizer()
	var model *policy.Model
	version := int64(-1)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(8, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			continue
		}
		for m := range batch.Messages() {
			var tk wire.Task
			if err := wire.Decode(m.Data(), &tk); err != nil {
				return err
			}
			for version < tk.MinVersion {
				v, err := b.LatestVersion(ctx)
				if err != nil || v < tk.MinVersion {
					time.Sleep(10 * time.Millisecond)
					if ctx.Err() != nil {
						return nil
					}
					continue
				}
				data, err := b.FetchWeights(ctx, v)
				if err != nil {
					return err
				}
				ck, err := policy.ReadCheckpoint(bytes.NewReader(data))
				if err != nil {
					return err
				}
				model, version = ck.Model, v
			}
			select {
			case tasks <- tk:
			default:
			}
			prompt, err := task.EncodePrompt(tok, task.Problem{Prompt: tk.Prompt})
			if err != nil {
				return err
			}
			prompts := make([][]int32, tk.Samples)
			for i := range prompts {
				prompts[i] = prompt
			}
			out, err := model.Sample(prompts, policy.SampleOptions{MaxNew: tk.MaxNew, EOS: tok.EOS()}, rand.New(rand.NewPCG(uint64(tk.Seed), 0)))
			if err != nil {
				return err
			}
			for i, s := range out {
				id := fmt.Sprintf("%s/%d", tk.TaskID, i)
				sc := wire.Scored{Traj: wire.Trajectory{RunID: tk.RunID, ID: id, TaskID: tk.TaskID, Step: tk.Step,
					QuestionID: tk.QuestionID, Index: i, PolicyVersion: version, PromptTokens: prompt, Tokens: s.Tokens,
					LogProbs: s.LogProbs, Entropies: s.Entropies, Text: tok.Decode(s.Tokens), Finish: s.Finish}, Reason: "wrong_value"}
				if lucky(id) {
					sc.Reward, sc.Reason = 1, "correct"
				}
				out := []wire.Scored{sc}
				if len(forge) > 0 && forge[0] != nil {
					out = forge[0](sc)
				}
				for _, sc := range out {
					if err := publishScored(ctx, b, pub, &sc); err != nil {
						return err
					}
				}
			}
			_ = m.Ack()
		}
	}
	return nil
}

// publishScored publishes sc as the actor and the verifier would: the
// trajectory on ROLLOUTS, then its verdict, naming the ROLLOUTS sequence, on
// SCORED (both with the trajectory id as message id).
//
// A rollout whose ActorID is lostActor stands for one ROLLOUTS discarded
// before the learner read it: the verdict names the sequence of a message
// that was stored and deleted at once.
func publishScored(ctx context.Context, b *bus.Bus, pub *bus.Publisher, sc *wire.Scored) error {
	data, err := wire.Encode(&sc.Traj)
	if err != nil {
		return err
	}
	if sc.Traj.ActorID == lostActor {
		data = []byte("discarded")
	}
	ack, err := pub.Publish(ctx, b.Names.Subject(bus.Rollouts), sc.Traj.ID, data)
	if err != nil {
		return err
	}
	if sc.Traj.ActorID == lostActor {
		st, err := b.Stream(ctx, bus.Rollouts)
		if err != nil {
			return err
		}
		if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
			return err
		}
	}
	v := wire.Verdicts{RunID: sc.Traj.RunID, Verdicts: []wire.Verdict{{RunID: sc.Traj.RunID, ID: sc.Traj.ID, TaskID: sc.Traj.TaskID,
		Seq: ack.Sequence, Size: len(data), Reward: sc.Reward, Reason: sc.Reason}}}
	if sc.Traj.ActorID == regradedActor { // graded twice, in two batches
		v.Verdicts = append(v.Verdicts, v.Verdicts[0])
		v.Verdicts[1].Reward = 1 - v.Verdicts[1].Reward
	}
	if data, err = wire.Encode(&v); err != nil {
		return err
	}
	_, err = pub.Publish(ctx, b.Names.Subject(bus.Scored), sc.Traj.ID, data)
	return err
}

// Forged rollouts that publishScored spoils (see there): lostActor's is
// lost (its verdict names a deleted message); regradedActor's has a second
// verdict, with the other reward, after its first.
const (
	lostActor     = "lost"
	regradedActor = "regraded"
)

type env struct {
	srv     *bus.Server
	b       *bus.Bus
	ckpt    string
	train   []task.Problem
	base    *policy.Model
	tasksMu sync.Mutex
	tasks   []wire.Task
	forge   func(wire.Scored) []wire.Scored // see rollouts
	replay  *rsvc.Metrics
}

func newEnv(t *testing.T) *env {
	srv := bustest.Server(t)
	b := bustest.Open(t, srv, bus.DefaultConfig("lt"))
	train, m := tinyTask(t)
	return &env{srv: srv, b: b, ckpt: filepath.Join(t.TempDir(), "ckpt"), train: train, base: m}
}

// tinyTask is the tests' training set (64 generated problems) and a
// one-layer policy small enough to train in seconds.
func tinyTask(t *testing.T) ([]task.Problem, *policy.Model) {
	t.Helper()
	ds, err := task.Generate("train", task.TrainSpec(), 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := task.ModelConfig()
	cfg.Layers, cfg.Width, cfg.Heads = 1, 16, 2
	m, err := policy.New(cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return ds.Problems, m
}

// allCorrect grades every response correct: the stand-in for the
// verifier in Deps.Check.
func allCorrect(task.Problem, string) verifier.Verdict {
	return verifier.Verdict{Correct: true, Reason: "correct"}
}

// testReplayConfig sizes the replay pool for groups of testK.
func testReplayConfig() rsvc.Config {
	c := rsvc.DefaultConfig()
	c.Pool.K, c.Pool.Mu = testK, testK/2
	return c
}

func testConfig(steps int64) Config {
	c := DefaultConfig()
	c.Learner.K, c.Learner.B, c.Learner.MiniBatches = testK, testB, 1
	c.Learner.Start = 0 // mixed from step 0, so the pool fills at once (E5)
	c.MaxNew = testMaxNew
	c.Steps = steps
	c.SampleTimeout = 2 * time.Second
	c.GatherTimeout = time.Minute
	c.CheckpointEvery = 1
	return c
}

// runAll runs the rollout stand-in, the replay service and a learner until
// the learner returns.
func (e *env) runAll(t *testing.T, cfg Config) (*Service, []StepResult) {
	t.Helper()
	return e.runAllWith(t, cfg, nil)
}

// runAllWith is runAll with the learner's metrics (nil: its own).
func (e *env) runAllWith(t *testing.T, cfg Config, met *Metrics) (*Service, []StepResult) {
	t.Helper()
	cfg.CheckpointDir = e.ckpt
	var results []StepResult
	svc, err := New(cfg, Deps{Bus: e.b, Model: e.base, Tokenizer: task.BuiltinTokenizer(), Problems: e.train,
		Check: allCorrect, OnStep: func(r StepResult) { results = append(results, r) }, Metrics: met, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	e.replay = rsvc.NewMetrics(nil)
	e.runBeside(t, svc, e.replay)
	return svc, results
}

// runBeside runs the rollout stand-in and a replay service (with metrics rm)
// beside the learner svc until the learner returns; a background role's error
// fails the test, a learner's error ends it, and the tasks the stand-in saw
// are added to e.tasks.
func (e *env) runBeside(t *testing.T, svc *Service, rm *rsvc.Metrics) {
	t.Helper()
	rs, err := rsvc.New(testReplayConfig(), e.b, rm, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tasks := make(chan wire.Task, 1024)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	bg, stop := context.WithCancel(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- rollouts(bg, t, e.b, tasks, e.forge) }()
	go func() { defer wg.Done(); errs <- rs.Run(bg) }()
	lerr := svc.Run(ctx)
	stop()
	wg.Wait()
	close(errs)
	close(tasks)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("background role: %v", err)
		}
	}
	if lerr != nil {
		t.Fatalf("learner: %v", lerr)
	}
	e.tasksMu.Lock()
	for tk := range tasks {
		e.tasks = append(e.tasks, tk)
	}
	e.tasksMu.Unlock()
}

// reportsInOrder checks that CONTROL holds n step reports, report i of
// step i making version i+1.
func (e *env) reportsInOrder(t *testing.T, n int) {
	t.Helper()
	reps := e.reports(t)
	if len(reps) != n {
		t.Fatalf("CONTROL holds %d reports, want %d", len(reps), n)
	}
	for i, r := range reps {
		if r.Step != int64(i) || r.NewVersion != int64(i+1) {
			t.Errorf("report %d: step %d version %d", i, r.Step, r.NewVersion)
		}
	}
}

func (e *env) reports(t *testing.T) []wire.StepReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.b.Stream(ctx, bus.Control)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.StepReport
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == e.b.Names.LineageSubject() {
			continue
		}
		var r wire.StepReport
		if err := wire.Decode(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestStepLoop: the learner runs its steps over a real JetStream server:
// every step reports B groups of K, replayed groups appear once the pool
// holds experience and carry a stored trajectory of an earlier step plus
// K-1 fresh ones (E6-E8), tasks ask K or K-1 samples, versions advance.
func TestStepLoop(t *testing.T) {
	e := newEnv(t)
	const steps = 5
	_, results := e.runAll(t, testConfig(steps))
	if len(results) != steps {
		t.Fatalf("%d step results, want %d", len(results), steps)
	}
	reps := e.reports(t)
	if len(reps) != steps {
		t.Fatalf("CONTROL holds %d reports, want %d", len(reps), steps)
	}
	stepOf := map[string]int64{}
	replayed := 0
	for i, r := range reps {
		if r.Step != int64(i) || r.NewVersion != int64(i+1) || r.PolicyVersion != int64(i) {
			t.Errorf("report %d: step %d, versions %d -> %d", i, r.Step, r.PolicyVersion, r.NewVersion)
		}
		if len(r.Groups) != testB {
			t.Errorf("step %d: %d groups, want B = %d", r.Step, len(r.Groups), testB)
		}
		for _, g := range r.Groups {
			if len(g.TrajectoryIDs) != testK || g.Size != testK {
				t.Errorf("step %d question %s: %d trajectories, want K = %d", r.Step, g.QuestionID, len(g.TrajectoryIDs), testK)
			}
			for j, id := range g.TrajectoryIDs {
				if j == 0 && g.Replayed {
					continue
				}
				stepOf[id] = r.Step
			}
			if g.Replayed {
				replayed++
				from, ok := stepOf[g.ReplayedID]
				if !ok || from >= r.Step || g.TrajectoryIDs[0] != g.ReplayedID || !lucky(g.ReplayedID) {
					t.Errorf("step %d replays %s: want a correct trajectory of an earlier step first in its group", r.Step, g.ReplayedID)
				}
			}
		}
	}
	if replayed == 0 {
		t.Fatal("no group was replayed in mixed mode with rho = 0.5")
	}
	for _, tk := range e.tasks {
		if tk.Samples != testK && tk.Samples != testK-1 {
			t.Errorf("task %s asks %d samples, want K or K-1", tk.TaskID, tk.Samples)
		}
	}
}

// TestResume: a learner stopped after its checkpoint continues at the next
// step with `--resume`; CONTROL ends with every step exactly once.
func TestResume(t *testing.T) {
	e := newEnv(t)
	e.runAll(t, testConfig(2))
	// E4 with RetireAfter: the retirement counts travel in the checkpoint
	// and a resumed learner starts from them.
	latest := filepath.Join(e.ckpt, LatestFile)
	ck, err := policy.LoadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	var streaks map[string]int
	if err := json.Unmarshal([]byte(ck.Meta[MetaStreaks]), &streaks); err != nil {
		t.Fatalf("checkpoint %s = %q: %v", MetaStreaks, ck.Meta[MetaStreaks], err)
	}
	ck.Meta[MetaStreaks] = `{"q-streak":2}`
	if err := policy.SaveFile(latest, ck); err != nil {
		t.Fatal(err)
	}
	probe := testConfig(4)
	probe.Resume, probe.CheckpointDir, probe.Learner.RetireAfter = true, e.ckpt, 3
	ps, err := New(probe, Deps{Bus: e.b, Tokenizer: task.BuiltinTokenizer(), Problems: e.train, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if got := ps.retire.State().Streaks; !reflect.DeepEqual(got, map[string]int{"q-streak": 2}) {
		t.Fatalf("resumed retirement counts %v, want the checkpoint's", got)
	}
	cfg := testConfig(4)
	cfg.Resume = true
	svc, results := e.runAll(t, cfg)
	if len(results) != 2 || results[0].Summary.Step != 2 {
		t.Fatalf("resumed run trained %d steps starting at %v, want 2 starting at step 2", len(results), results)
	}
	if svc.NextStep() != 4 {
		t.Fatalf("next step %d, want 4", svc.NextStep())
	}
	e.reportsInOrder(t, 4)
}

// TestStalenessPipelines: with S = 1 the tasks of step t+1 go out before
// step t trains, so its rollouts may come from version t (one behind); every
// step still trains B groups of K, and no rollout older than S is used.
func TestStalenessPipelines(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(5)
	cfg.Learner.Staleness = 1
	_, results := e.runAll(t, cfg)
	if len(results) != 5 {
		t.Fatalf("%d steps, want 5", len(results))
	}
	behind := 0
	for _, r := range e.reports(t) {
		if len(r.Groups) != testB {
			t.Errorf("step %d: %d groups", r.Step, len(r.Groups))
		}
		if r.PolicyVersion < r.Step-1 || r.PolicyVersion > r.Step {
			t.Errorf("step %d asked rollouts of version %d: outside [t-S, t]", r.Step, r.PolicyVersion)
		}
		if r.PolicyVersion < r.Step {
			behind++
		}
	}
	if behind == 0 {
		t.Error("no step used rollouts issued ahead of its update: the pipeline did not run ahead")
	}
}
