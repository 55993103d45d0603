package inspect

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// The tests publish a synthetic but valid run through the real topology on
// a real embedded JetStream server: step reports on CONTROL naming the
// trajectories on ROLLOUTS (by sequence) and their verdicts on SCORED,
// exactly as the actors, the verifier workers and the learner write them
// (message ids included). The generator keeps its own
// replay.Pool, folded directly from the replay.Reports it builds (not through
// the service's translation), to pick real stored trajectories for replay
// and to know the pool after every step: the independent fold the views are
// checked against.

const (
	fxK       = 4
	fxB       = 5  // questions per step
	fxQ       = 9  // distinct questions
	fxSteps   = 12 // steps 0..11
	fxMixedAt = 2  // steps before it are on-policy (before the delayed start)
	fxRun     = "insp"
)

// fixture is a published synthetic run and what the generator knows of it.
type fixture struct {
	srv      *bus.Server
	b        *bus.Bus
	reports  []wire.StepReport
	scored   map[string]*wire.Scored
	expected []replay.Stats // pool after step n (independent fold)
	pool     *replay.Pool   // independent pool after the last step
	// garbageAfter: an undecodable CONTROL message follows this step's report.
	garbageAfter int64
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	srv := bustest.Server(t)
	return publishFixture(t, srv)
}

func publishFixture(t testing.TB, srv *bus.Server) *fixture {
	t.Helper()
	return publishOn(t, srv, bustest.Open(t, srv, bus.DefaultConfig(fxRun)))
}

// publishOn publishes the synthetic run through b.
func publishOn(t testing.TB, srv *bus.Server, b *bus.Bus) *fixture {
	t.Helper()
	f := &fixture{srv: srv, b: b, scored: map[string]*wire.Scored{}, garbageAfter: 5}
	f.generate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, rep := range f.reports {
		for gi, g := range rep.Groups {
			rep.Groups[gi].Seqs = make([]uint64, len(g.TrajectoryIDs))
			for j, id := range g.TrajectoryIDs {
				sc := f.scored[id]
				if sc.Traj.Step != rep.Step {
					continue // the replayed one was published at its own step
				}
				data, err := wire.Encode(&sc.Traj)
				if err != nil {
					t.Fatal(err)
				}
				ack, err := pub.Publish(ctx, b.Names.Subject(bus.Rollouts), id, data)
				if err != nil {
					t.Fatal(err)
				}
				rep.Groups[gi].Seqs[j] = ack.Sequence
				v := wire.Verdict{RunID: fxRun, ID: id, TaskID: sc.Traj.TaskID, Seq: ack.Sequence, Size: len(data),
					Reward: sc.Reward, Reason: sc.Reason}
				if data, err = wire.Encode(&v); err != nil {
					t.Fatal(err)
				}
				if _, err := pub.Publish(ctx, b.Names.Subject(bus.Scored), id, data); err != nil {
					t.Fatal(err)
				}
			}
		}
		data, err := wire.Encode(&rep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, b.Names.Subject(bus.Control), fmt.Sprintf("step/%d", rep.Step), data); err != nil {
			t.Fatal(err)
		}
		if rep.Step == f.garbageAfter {
			if _, err := pub.Publish(ctx, b.Names.Subject(bus.Control), "garbage", []byte("\xc1 not a step report")); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

// generate builds the run: question i is solved with probability
// 0.12 + 0.1 i, so the pool spreads over the buckets and easy questions
// retire; mixed steps replay up to two pool questions with the lowest-entropy
// candidate (ALGORITHM.md E7, E8).
func (f *fixture) generate(t testing.TB) {
	rng := rand.New(rand.NewPCG(11, 12))
	cfg := replay.DefaultConfig()
	cfg.K, cfg.Mu, cfg.MaxCandidates = fxK, fxK/2, 1<<20
	pool, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(0); step < fxSteps; step++ {
		mixed := step >= fxMixedAt
		rep := wire.StepReport{RunID: fxRun, Step: step, PolicyVersion: step, NewVersion: step + 1, Mixed: mixed,
			Loss: 0.1 * float64(step), GradNorm: 1, StepMicros: 1000 * (step + 1), UnixMs: 1_700_000_000_000 + step*1000}
		rr := replay.Report{Step: step, Mixed: mixed}
		fresh := rng.Perm(fxQ)[:fxB]
		var replayQs []string
		if mixed {
			st := pool.Stats()
			var inPool []string
			for qi := 0; qi < fxQ; qi++ {
				q := fmt.Sprintf("q%d", qi)
				if info, ok := pool.Question(q); ok && info.Bucket > 0 && !slices.Contains(fresh, qi) {
					inPool = append(inPool, q)
				}
			}
			_ = st
			replayQs = inPool[:min(2, len(inPool))]
		}
		type member struct {
			q   string
			rep string // replayed trajectory id, "" for a fresh group
		}
		var groups []member
		for _, qi := range fresh {
			groups = append(groups, member{q: fmt.Sprintf("q%d", qi)})
		}
		for _, q := range replayQs {
			groups = append(groups, member{q: q, rep: "chosen"})
		}
		var correctAll, n int
		var entSum float64
		for _, m := range groups {
			qi := 0
			fmt.Sscanf(m.q, "q%d", &qi)
			p := 0.12 + 0.1*float64(qi)
			g := wire.GroupReport{QuestionID: m.q, Size: fxK, Replayed: m.rep != ""}
			rg := replay.Group{QuestionID: m.q, Size: fxK}
			if m.rep != "" {
				cands := pool.Candidates(m.q)
				for _, c := range cands {
					g.Candidates = append(g.Candidates, wire.Candidate{ID: c.ID, Entropy: float32(rng.Float64())})
				}
				sort.SliceStable(g.Candidates, func(i, j int) bool { return g.Candidates[i].Entropy < g.Candidates[j].Entropy })
				g.ReplayedID = g.Candidates[0].ID
				g.TrajectoryIDs = append(g.TrajectoryIDs, g.ReplayedID)
				g.Rewards = append(g.Rewards, 1)
				g.Reasons = append(g.Reasons, "correct")
			}
			for i := len(g.TrajectoryIDs); i < fxK; i++ {
				id := fmt.Sprintf("%d/%s/%d", step, m.q, i)
				ok := rng.Float64() < p
				reward, reason := float32(0), "wrong_value"
				if ok {
					reward, reason = 1, "correct"
				}
				toks := make([]int32, 2+rng.IntN(3))
				for j := range toks {
					toks[j] = int32(rng.IntN(3))
				}
				lps, ents := make([]float32, len(toks)), make([]float32, len(toks))
				for j := range lps {
					lps[j], ents[j] = -float32(rng.Float64()), float32(rng.Float64())
					entSum += float64(ents[j])
					n++
				}
				sc := &wire.Scored{Traj: wire.Trajectory{RunID: fxRun, ID: id, TaskID: fmt.Sprintf("%d/%s", step, m.q), Step: step,
					QuestionID: m.q, Index: i, PolicyVersion: step, ActorID: "actor-0", PromptTokens: wire.Int32s{7, 8, int32(qi)},
					Tokens: toks, LogProbs: lps, Entropies: ents, Text: fmt.Sprintf("answer %v for %s", toks, m.q), Finish: "eos",
					Answer: "42", Kind: "arith"}, Reward: reward, Reason: reason}
				f.scored[id] = sc
				g.TrajectoryIDs = append(g.TrajectoryIDs, id)
				g.Rewards = append(g.Rewards, reward)
				g.Reasons = append(g.Reasons, reason)
				if ok && mixed {
					rg.Successes = append(rg.Successes, replay.Trajectory{ID: id, PolicyVersion: step, Step: step,
						PromptTokens: sc.Traj.PromptTokens, Tokens: toks, LogProbs: lps})
				}
			}
			for _, r := range g.Rewards {
				g.Correct += int(r)
			}
			mean := float32(g.Correct) / fxK
			for _, r := range g.Rewards {
				g.Advantages = append(g.Advantages, r-mean)
			}
			correctAll += g.Correct
			rg.Correct = g.Correct
			rep.Groups = append(rep.Groups, g)
			rr.Groups = append(rr.Groups, rg)
		}
		rep.Pass1 = float64(correctAll) / float64(fxK*len(groups))
		rep.Entropy = entSum / float64(max(1, n))
		if err := pool.Apply(rr); err != nil {
			t.Fatalf("generator fold step %d: %v", step, err)
		}
		f.reports = append(f.reports, rep)
		f.expected = append(f.expected, pool.Stats())
	}
	f.pool = pool
}

// source inspects the fixture's run over a fresh connection.
func (f *fixture) source(t testing.TB) *Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Dial(ctx, bus.ConnConfig{URL: f.srv.ClientURL()}, fxRun, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func (f *fixture) ledger(t testing.TB) (*Source, *Ledger) {
	t.Helper()
	s := f.source(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, l
}
