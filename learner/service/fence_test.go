package service

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestFenceRefusesBadRollouts publishes, for every group of step 1, one
// rollout spoiled in one way (as a faulty engine or a forger with actor
// credentials could): it must land in DEAD with a reason that names the
// fault, be asked for again, and the group must still train with K rollouts;
// the learner runs on. Rollouts for a step not in flight and oversized ones
// must not reach the replay service's snapshots (it reads from ROLLOUTS only
// what the reports name).
func TestFenceRefusesBadRollouts(t *testing.T) {
	ctxLen := task.ModelConfig().Context
	vocab := task.BuiltinTokenizer().Size()
	spoil := func(f func(tr *wire.Trajectory)) func(wire.Scored) []wire.Scored {
		return func(sc wire.Scored) []wire.Scored {
			if sc.Traj.Step != 1 || sc.Traj.Index != 1 || strings.Contains(sc.Traj.TaskID, "~") {
				return []wire.Scored{sc}
			}
			sc.Traj.Tokens = append(wire.Int32s(nil), sc.Traj.Tokens...)
			sc.Traj.LogProbs = append(wire.Float32s(nil), sc.Traj.LogProbs...)
			sc.Traj.Entropies = append(wire.Float32s(nil), sc.Traj.Entropies...)
			f(&sc.Traj)
			return []wire.Scored{sc}
		}
	}
	long := func(tr *wire.Trajectory, n int) {
		tr.Tokens = make(wire.Int32s, n)
		tr.LogProbs, tr.Entropies = make(wire.Float32s, n), make(wire.Float32s, n)
		for i := range tr.Tokens {
			tr.Tokens[i], tr.LogProbs[i] = 5, -1
		}
	}
	tests := []struct {
		name   string
		forge  func(wire.Scored) []wire.Scored
		reason string // in the DEAD reason; "" = nothing to DEAD
	}{
		{"longer than the context", spoil(func(tr *wire.Trajectory) { long(tr, ctxLen+10) }), "exceed the model's context"},
		{"token id out of range", spoil(func(tr *wire.Trajectory) { tr.Tokens[0] = int32(vocab + 3) }), "outside the vocabulary"},
		{"negative token id", spoil(func(tr *wire.Trajectory) { tr.Tokens[0] = -1 }), "outside the vocabulary"},
		{"NaN log-prob", spoil(func(tr *wire.Trajectory) { tr.LogProbs[0] = float32(math.NaN()) }), "must be finite and <= 0"},
		{"-Inf log-prob", spoil(func(tr *wire.Trajectory) { tr.LogProbs[0] = float32(math.Inf(-1)) }), "must be finite and <= 0"},
		{"positive log-prob", spoil(func(tr *wire.Trajectory) { tr.LogProbs[0] = 0.5 }), "must be finite and <= 0"},
		{"NaN entropy", spoil(func(tr *wire.Trajectory) { tr.Entropies[0] = float32(math.NaN()) }), "entropy"},
		{"mismatched lengths", spoil(func(tr *wire.Trajectory) { tr.LogProbs = tr.LogProbs[:len(tr.LogProbs)-1] }), "log-probs for"},
		{"text other than the tokens", spoil(func(tr *wire.Trajectory) { tr.Text = "\\boxed{42}" }), "not the decoding of its tokens"},
		{"version from the future", spoil(func(tr *wire.Trajectory) { tr.PolicyVersion = 99 }), "policy version 99"},
		{"oversized", spoil(func(tr *wire.Trajectory) { long(tr, 200_000) }), "exceed the model's context"},
		{"step not in flight", func(sc wire.Scored) []wire.Scored {
			if sc.Traj.Step != 1 || sc.Traj.Index != 1 {
				return []wire.Scored{sc}
			}
			extra := sc
			extra.Traj.ID, extra.Traj.Step = sc.Traj.ID+"x", 1_000_000
			long(&extra.Traj, 50_000) // would bloat every snapshot if kept
			return []wire.Scored{extra, sc}
		}, "not in flight"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.forge = tc.forge
			cfg := testConfig(3)
			_, results := e.runAll(t, cfg)
			retried := stepOneRetried(t, results)
			letters := deadReasons(t, e.b)
			if tc.name == "step not in flight" {
				if retried != 0 || len(letters) != testB || !strings.Contains(strings.Join(letters, "\n"), tc.reason) {
					t.Errorf("%d retried rollouts and dead letters %q; want none retried, %d letters naming %q", retried, letters, testB, tc.reason)
				}
				if gauge(t, e.replay.SnapshotBytes) > 1<<20 {
					t.Errorf("replay snapshot of %v bytes: the rollout of a step not in flight was buffered", gauge(t, e.replay.SnapshotBytes))
				}
				return
			}
			if retried != testB {
				t.Errorf("%d groups trained with a rollout asked for again, want %d", retried, testB)
			}
			found := 0
			for _, why := range letters {
				if strings.Contains(why, tc.reason) {
					found++
				}
			}
			if found < testB {
				t.Errorf("%d dead letters name %q, want %d; letters: %q", found, tc.reason, testB, letters)
			}
			if gauge(t, e.replay.SnapshotBytes) > 1<<20 {
				t.Errorf("replay snapshot of %v bytes after oversized rollouts", gauge(t, e.replay.SnapshotBytes))
			}
		})
	}
}

// TestVerdictWithoutTrajectoryAsksAgain: for every group of step 1, one
// rollout's verdict names a ROLLOUTS message that is gone (deleted at once:
// what the stream's byte limit does to a rollout nobody read in time). The
// learner must not wait for it: it fetches the trajectory by sequence, finds
// it gone, counts it, asks for that rollout again, and the group trains with
// K rollouts.
func TestVerdictWithoutTrajectoryAsksAgain(t *testing.T) {
	e := newEnv(t)
	e.forge = markStepOne(2, lostActor)
	met := NewMetrics(nil)
	cfg := testConfig(3)
	_, results := e.runAllWith(t, cfg, met)
	retried := stepOneRetried(t, results)
	r1 := results[1]
	if retried != testB {
		t.Errorf("%d groups trained with a rollout asked for again, want %d", retried, testB)
	}
	if n := counter(t, met.RolloutsGone); n != testB {
		t.Errorf("rollouts_gone_total %v, want %d", n, testB)
	}
	if r1.Gather > 30*time.Second {
		t.Errorf("step 1 gathered for %v: the learner waited instead of asking again", r1.Gather)
	}
}

// stepOneRetried checks that a run trained 3 steps, step 1 with testB
// groups of testK rollouts each and nothing dropped, and returns how many of
// step 1's rollouts were asked for again (their IDs hold "~").
func stepOneRetried(t *testing.T, results []StepResult) int {
	t.Helper()
	if len(results) != 3 {
		t.Fatalf("%d steps trained, want 3", len(results))
	}
	r1 := results[1]
	if r1.Dropped != 0 || len(r1.Summary.Groups) != testB {
		t.Fatalf("step 1: %d groups, %d dropped; want %d and 0", len(r1.Summary.Groups), r1.Dropped, testB)
	}
	retried := 0
	for _, g := range r1.Summary.Groups {
		if len(g.TrajectoryIDs) != testK {
			t.Errorf("group %s trained with %d rollouts, want %d", g.QuestionID, len(g.TrajectoryIDs), testK)
		}
		for _, id := range g.TrajectoryIDs {
			if strings.Contains(id, "~") {
				retried++
			}
		}
	}
	return retried
}

// deadReasons reads the reasons of every dead letter of the run.
func deadReasons(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	err := bus.ReadSubjects(ctx, b, bus.Dead, []string{b.Names.Subject(bus.Dead) + ".>"}, func(m jetstream.Msg) {
		var dl wire.DeadLetter
		if wire.Decode(m.Data(), &dl) == nil {
			out = append(out, dl.Reason)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestNoReaderLeftBehind: the learner reads stored experience every mixed
// step; its readers must be deleted after use, not left to the server's
// inactivity threshold (one per step would pile up over a run).
func TestNoReaderLeftBehind(t *testing.T) {
	e := newEnv(t)
	_, results := e.runAll(t, testConfig(8))
	replayed := 0
	for _, r := range results {
		replayed += r.Replayed
	}
	if replayed == 0 {
		t.Fatal("no step replayed anything: the test did not read experience")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.b.Stream(ctx, bus.Experience)
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(ctx)
	var left []string
	for n := range names.Name() {
		left = append(left, n)
	}
	if len(left) > 0 {
		t.Errorf("consumers left on EXPERIENCE after %d steps: %v", len(results), left)
	}
	for _, k := range bus.Kinds {
		if e.b.StreamConfig(k).Description == "" {
			t.Errorf("stream %s has no description", k)
		}
	}
}

// TestRegradedRolloutFirstVerdictCounts: a rollout graded twice (a verifier
// died between its publish and its acks; the redelivered rollout landed in
// another batch) has two verdicts on SCORED. The learner trains it once,
// with the first verdict's reward, drops the second at once (it does not
// hold it and fetch the trajectory again), and asks for nothing again.
func TestRegradedRolloutFirstVerdictCounts(t *testing.T) {
	e := newEnv(t)
	e.forge = markStepOne(0, regradedActor)
	met := NewMetrics(nil)
	_, results := e.runAllWith(t, testConfig(3), met)
	if n := counter(t, met.Ignored); n < testB {
		t.Errorf("%v messages ignored, want at least the %d second verdicts", n, testB)
	}
	if retried := stepOneRetried(t, results); retried != 0 {
		t.Errorf("%d rollouts asked for again, want 0", retried)
	}
	checked := 0
	for _, g := range results[1].Summary.Groups {
		for i, id := range g.TrajectoryIDs {
			if !strings.HasSuffix(id, "/0") || (g.Replayed && id == g.ReplayedID) {
				continue
			}
			checked++
			if want := map[bool]float32{true: 1, false: 0}[lucky(id)]; g.Rewards[i] != want {
				t.Errorf("%s trained with reward %v, want its first verdict's %v", id, g.Rewards[i], want)
			}
		}
	}
	if checked != testB {
		t.Fatalf("step 1 trained %d regraded rollouts, want %d", checked, testB)
	}
	if r1 := results[1]; r1.Gather > 10*time.Second {
		t.Errorf("step 1 gathered for %v: the second verdict was waited on", r1.Gather)
	}
}

// markStepOne forges the rollout at index of every group of step 1 (not
// their retries) as actor's, for publishScored to spoil.
func markStepOne(index int, actor string) func(wire.Scored) []wire.Scored {
	return func(sc wire.Scored) []wire.Scored {
		if sc.Traj.Step == 1 && sc.Traj.Index == index && !strings.Contains(sc.Traj.TaskID, "~") {
			sc.Traj.ActorID = actor
		}
		return []wire.Scored{sc}
	}
}
