package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const testK = 4

// harness is a real embedded JetStream server (random port, temp dir) with
// the run's topology.
type harness struct {
	t   *testing.T
	srv *bus.Server
	b   *bus.Bus
	pub *bus.Publisher
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Port: -1, StoreDir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "test"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := bus.Open(ctx, nc, bus.DefaultConfig("rt"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return &harness{t: t, srv: srv, b: b, pub: pub}
}

func (h *harness) publish(subject, id string, m wire.Message) {
	h.t.Helper()
	data, err := wire.Encode(m)
	if err != nil {
		h.t.Fatal(err)
	}
	h.raw(subject, id, data)
}

func (h *harness) raw(subject, id string, data []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.pub.Publish(ctx, subject, id, data); err != nil {
		h.t.Fatal(err)
	}
}

// script is a synthetic run: per step, the scored trajectories and the
// report naming them, as the learner and verifiers would publish them.
type script struct {
	reports []wire.StepReport
	scored  [][]wire.Scored
}

// makeScript draws steps of groups over a small question set, with k drawn
// so that every bucket, zero and retirement happen; mixed from step 1 (E5).
func makeScript(steps, questions int, seed uint64) script {
	rng := rand.New(rand.NewPCG(seed, 1))
	var sc script
	for t := range steps {
		rep := wire.StepReport{RunID: "rt", Step: int64(t), Mixed: t >= 1}
		var scored []wire.Scored
		for _, qi := range rng.Perm(questions)[:questions/2] {
			q := fmt.Sprintf("q%03d", qi)
			g := wire.GroupReport{QuestionID: q, Size: testK}
			for i := range testK {
				id := fmt.Sprintf("%d/%s/%d", t, q, i)
				r := float32(0)
				if rng.Float64() < 0.6 {
					r = 1
					g.Correct++
				}
				n := 1 + rng.IntN(3)
				toks := make([]int32, n)
				lps := make([]float32, n)
				for j := range toks {
					toks[j] = int32(rng.IntN(3)) // small alphabet: duplicates happen (E2 dedup)
					lps[j] = -rng.Float32()
				}
				g.TrajectoryIDs = append(g.TrajectoryIDs, id)
				g.Rewards = append(g.Rewards, r)
				scored = append(scored, wire.Scored{Reward: r, Traj: wire.Trajectory{RunID: "rt", ID: id, TaskID: fmt.Sprintf("%d/%s", t, q),
					Step: int64(t), QuestionID: q, Index: i, PromptTokens: []int32{1, int32(qi)}, Tokens: toks, LogProbs: lps, Entropies: make([]float32, n),
					Finish: "eos", Text: "x"}})
			}
			rep.Groups = append(rep.Groups, g)
		}
		sc.reports = append(sc.reports, rep)
		sc.scored = append(sc.scored, scored)
	}
	return sc
}

// publishStep publishes one step's trajectories, then its report.
func (h *harness) publishStep(sc script, t int) {
	h.publishScored(sc, t)
	h.publish(h.b.Names.Subject(bus.Control), fmt.Sprintf("step/%d", t), &sc.reports[t])
}

// publishScored publishes step t's trajectories as the actors and the
// verifier do (each on ROLLOUTS, its verdict on SCORED) and writes their
// ROLLOUTS sequences into the step's report, as the learner does. Publishing
// again is deduplicated by id and gives the same sequences.
func (h *harness) publishScored(sc script, t int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seqs := map[string]uint64{}
	for i := range sc.scored[t] {
		s := &sc.scored[t][i]
		data, err := wire.Encode(&s.Traj)
		if err != nil {
			h.t.Fatal(err)
		}
		ack, err := h.pub.Publish(ctx, h.b.Names.Subject(bus.Rollouts), s.Traj.ID, data)
		if err != nil {
			h.t.Fatal(err)
		}
		seqs[s.Traj.ID] = ack.Sequence
		h.publish(h.b.Names.Subject(bus.Scored), s.Traj.ID, &wire.Verdict{RunID: "rt", ID: s.Traj.ID, TaskID: s.Traj.TaskID,
			Seq: ack.Sequence, Size: len(data), Reward: s.Reward, Reason: s.Reason})
	}
	for g := range sc.reports[t].Groups {
		gr := &sc.reports[t].Groups[g]
		gr.Seqs = make([]uint64, len(gr.TrajectoryIDs))
		for i, id := range gr.TrajectoryIDs {
			gr.Seqs[i] = seqs[id]
		}
	}
}

// reference folds the script's first n steps with the pure pool, as the
// service must (the independent fold).
func reference(t *testing.T, cfg replay.Config, sc script, n int) *replay.Pool {
	p, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for s := range n {
		rep := sc.reports[s]
		byID := map[string]*wire.Scored{}
		for i := range sc.scored[s] {
			byID[sc.scored[s][i].Traj.ID] = &sc.scored[s][i]
		}
		r := replay.Report{Step: rep.Step, Mixed: rep.Mixed}
		for _, g := range rep.Groups {
			rg := replay.Group{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct}
			if rep.Mixed {
				for i, id := range g.TrajectoryIDs {
					if g.Rewards[i] == 1 {
						tr := byID[id].Traj
						rg.Successes = append(rg.Successes, replay.Trajectory{ID: id, PolicyVersion: tr.PolicyVersion, Step: rep.Step,
							PromptTokens: tr.PromptTokens, Tokens: tr.Tokens, LogProbs: tr.LogProbs})
					}
				}
			}
			r.Groups = append(r.Groups, rg)
		}
		if err := p.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func testConfig() Config {
	c := DefaultConfig()
	c.Pool.K, c.Pool.Mu = testK, testK/2
	c.AckWait = 2 * time.Second // a restart gets unacknowledged messages back quickly
	return c
}

// running is a service running in the background.
type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, h *harness) *running {
	t.Helper()
	svc, err := New(testConfig(), h.b, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("replay service: %v", err)
		}
		r.done <- nil // later stops return at once
	case <-time.After(20 * time.Second):
		t.Error("replay service did not stop")
	}
}

// waitStep polls (with a deadline) until the service has folded step n,
// and returns its pool snapshot.
func (r *running) waitStep(t *testing.T, n int64) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var snap []byte
		var last int64
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.svc.Inspect(ctx, func(p *replay.Pool, l int64) { snap, last = p.Snapshot(), l })
		cancel()
		if err == nil && last >= n {
			return snap
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("replay service did not fold step %d in time", n)
	return nil
}

// TestFoldMatchesPureFold: the service's pool equals the independent fold of
// the same reports (ALGORITHM.md E1-E5), EXPERIENCE holds exactly the stored
// trajectories, and retired questions' subjects are purged (E4).
func TestFoldMatchesPureFold(t *testing.T) {
	h := newHarness(t)
	sc := makeScript(8, 12, 7)
	r := start(t, h)
	for s := range sc.reports {
		h.publishStep(sc, s)
	}
	got := r.waitStep(t, int64(len(sc.reports)-1))
	ref := reference(t, testConfig().Pool, sc, len(sc.reports))
	if !bytes.Equal(got, ref.Snapshot()) {
		t.Fatalf("service pool differs from the pure fold: stats %+v vs %+v", statsOf(t, got), ref.Stats())
	}
	if st := ref.Stats(); st.Retired == 0 || st.Questions == 0 {
		t.Fatalf("script too tame to test retirement and storage: %+v", st)
	}
	// EXPERIENCE: one message per stored trajectory, none for retired questions.
	stored := map[string]bool{}
	for s := range sc.reports {
		for _, g := range sc.reports[s].Groups {
			for _, c := range ref.Candidates(g.QuestionID) {
				stored[c.ID] = true
			}
		}
	}
	seen := readExperience(t, h)
	for id := range stored {
		if !seen[id] {
			t.Errorf("stored trajectory %s missing from EXPERIENCE", id)
		}
	}
	for _, q := range ref.RetiredIDs() {
		for id := range seen {
			if len(id) > 0 && bytes.Contains([]byte(id), []byte("/"+q+"/")) {
				t.Errorf("retired question %s still has experience %s", q, id)
			}
		}
	}
}

func statsOf(t *testing.T, snap []byte) replay.Stats {
	p, err := replay.Restore(testConfig().Pool, snap)
	if err != nil {
		t.Fatal(err)
	}
	return p.Stats()
}

func readExperience(t *testing.T, h *harness) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := h.b.JS.OrderedConsumer(ctx, h.b.Names.Stream(bus.Experience), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	left := int(info.NumPending)
	for left > 0 {
		batch, err := cons.Fetch(left, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			var e wire.Experience
			if err := wire.Decode(m.Data(), &e); err != nil {
				t.Fatal(err)
			}
			seen[e.TrajectoryID] = true
			n++
		}
		if n == 0 {
			break
		}
		left -= n
	}
	return seen
}

// runSteps starts a service and folds the script's steps [0, n).
func runSteps(t *testing.T, h *harness, sc script, n int) *running {
	t.Helper()
	r := start(t, h)
	for s := 0; s < n; s++ {
		h.publishStep(sc, s)
	}
	r.waitStep(t, int64(n-1))
	return r
}

// requireFold fails unless got is, byte for byte, the pure fold of the
// script's first n steps.
func requireFold(t *testing.T, got []byte, sc script, n int) {
	t.Helper()
	ref := reference(t, testConfig().Pool, sc, n)
	if !bytes.Equal(got, ref.Snapshot()) {
		t.Fatalf("pool differs from the uninterrupted, in-order fold: %+v vs %+v", statsOf(t, got), ref.Stats())
	}
}

// TestRestartRebuildsSameState: the service stopped mid-run and restarted
// ends with the same pool, byte for byte, as the uninterrupted pure fold,
// with the trajectories of the report that comes after the restart stored
// on ROLLOUTS while it was up (it fetches them when the report comes).
func TestRestartRebuildsSameState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pause time.Duration // between the last trajectories and the stop
	}{
		{"stopped at once", 0},
		{"stopped after a second", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			sc := makeScript(10, 12, 11)
			r := runSteps(t, h, sc, 5)
			// Trajectories of step 5 arrive while the service is up; its
			// report only after the restart.
			h.publishScored(sc, 5)
			time.Sleep(tc.pause)
			r.stop(t)
			h.publish(h.b.Names.Subject(bus.Control), "step/5", &sc.reports[5])
			for s := 6; s < 8; s++ {
				h.publishStep(sc, s)
			}
			r2 := start(t, h)
			r2.waitStep(t, 7)
			for s := 8; s < 10; s++ {
				h.publishStep(sc, s)
			}
			requireFold(t, r2.waitStep(t, 9), sc, 10)
		})
	}
}

// TestReportHeldByAStoppedReaderIsFoldedFirst: a report delivered to a reader
// that went away unacknowledged (a restart racing a delivery) comes back
// before the reports after it, so the restarted service folds in step order
// and keeps that step's trajectories (ALGORITHM.md E1).
func TestReportHeldByAStoppedReaderIsFoldedFirst(t *testing.T) {
	h := newHarness(t)
	sc := makeScript(8, 12, 11)
	runSteps(t, h, sc, 5).stop(t)
	h.publishStep(sc, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := h.b.JS.Consumer(ctx, h.b.Names.Stream(bus.Control), testConfig().Durable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for m := range batch.Messages() {
		var rep wire.StepReport
		if err := wire.Decode(m.Data(), &rep); err != nil || rep.Step != 5 {
			t.Fatalf("held message is not report 5: %+v, %v", rep, err)
		}
		held++ // never acknowledged: the stopped reader's copy
	}
	if held != 1 {
		t.Fatalf("held %d reports, want 1", held)
	}
	for s := 6; s < 8; s++ {
		h.publishStep(sc, s)
	}
	requireFold(t, start(t, h).waitStep(t, 7), sc, 8)
}

// TestSampleWaitsForStep: a request naming a step not yet folded is answered
// once the fold reaches it, with the pool's questions and candidates (E6, E7),
// and the same request gets the same answer.
func TestSampleWaitsForStep(t *testing.T) {
	h := newHarness(t)
	sc := makeScript(4, 12, 3)
	r := start(t, h)
	for s := 0; s < 3; s++ {
		h.publishStep(sc, s)
	}
	r.waitStep(t, 2)
	req := wire.SampleRequest{RunID: "rt", Step: 4, N: 3, Seed: 5, AfterStep: 3}
	data, _ := wire.Encode(&req)
	var wg sync.WaitGroup
	var reply wire.SampleReply
	var rerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m, err := h.b.NC.RequestWithContext(ctx, h.b.Names.SampleSubject(), data)
		if err != nil {
			rerr = err
			return
		}
		rerr = wire.Decode(m.Data, &reply)
	}()
	time.Sleep(300 * time.Millisecond)
	h.publishStep(sc, 3)
	wg.Wait()
	if rerr != nil {
		t.Fatal(rerr)
	}
	ref := reference(t, testConfig().Pool, sc, 4)
	want := min(3, ref.Len())
	if len(reply.Questions) != want {
		t.Fatalf("got %d questions, want %d", len(reply.Questions), want)
	}
	for _, q := range reply.Questions {
		var ids []string
		for _, c := range ref.Candidates(q.QuestionID) {
			ids = append(ids, c.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(q.Candidates) || len(ids) == 0 {
			t.Errorf("question %s: candidates %v, want %v", q.QuestionID, q.Candidates, ids)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := h.b.NC.RequestWithContext(ctx, h.b.Names.SampleSubject(), data)
	if err != nil {
		t.Fatal(err)
	}
	var again wire.SampleReply
	if err := wire.Decode(m.Data, &again); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again.Questions) != fmt.Sprint(reply.Questions) {
		t.Fatalf("same request, different answer: %v vs %v", again.Questions, reply.Questions)
	}
}

// TestMalformedToDead: undecodable messages on CONTROL land in DEAD with a
// reason, and the fold goes on; garbage on ROLLOUTS that no report names is
// never read (the verifiers dead-letter it).
func TestMalformedToDead(t *testing.T) {
	h := newHarness(t)
	sc := makeScript(3, 8, 5)
	r := start(t, h)
	h.publishStep(sc, 0)
	h.raw(h.b.Names.Subject(bus.Control), "garbage-1", []byte("\xc1not msgpack"))
	h.raw(h.b.Names.Subject(bus.Control), "garbage-2", []byte{0x81, 0xa1, 'v', 0x63}) // schema version 99
	h.raw(h.b.Names.Subject(bus.Rollouts), "garbage-3", []byte{0x81, 0xa1, 'v', 0x63})
	h.publishStep(sc, 1)
	h.publishStep(sc, 2)
	got := r.waitStep(t, 2)
	if ref := reference(t, testConfig().Pool, sc, 3); !bytes.Equal(got, ref.Snapshot()) {
		t.Fatal("pool differs from the pure fold after malformed messages")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dls := readDead(t, h)
		if len(dls) == 2 {
			for _, d := range dls {
				if d.Reason == "" || d.Role != "replay" || !errors.Is(decodeErr(d), wire.ErrDecode) && !errors.Is(decodeErr(d), wire.ErrSchema) {
					t.Errorf("dead letter %+v: want a decode or schema reason from replay", d)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("DEAD holds %d letters, want 2", len(dls))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decodeErr re-decodes a dead letter's payload to classify its reason.
func decodeErr(d wire.DeadLetter) error {
	if d.Stream == "EXGRPO_RT_CONTROL" {
		return wire.Decode(d.Data, &wire.StepReport{})
	}
	return wire.Decode(d.Data, &wire.Trajectory{})
}

// TestDiscardedTrajectoryFoldedWithout: a report naming trajectories that
// ROLLOUTS no longer holds (its byte limit discarded them; a purge here) is
// folded at once without them, not after ReportWait, and they are counted;
// the pool is the fold without them.
func TestDiscardedTrajectoryFoldedWithout(t *testing.T) {
	h := newHarness(t)
	sc := makeScript(3, 8, 5)
	cfg := testConfig()
	cfg.ReportWait = 10 * time.Minute // a wait would fail the test
	met := NewMetrics(nil)
	svc, err := New(cfg, h.b, met, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r := &running{svc: svc, cancel: cancel, done: done}
	h.publishStep(sc, 0)
	r.waitStep(t, 0)
	h.publishScored(sc, 1)
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	st, err := h.b.Stream(pctx, bus.Rollouts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(pctx); err != nil {
		t.Fatal(err)
	}
	h.publish(h.b.Names.Subject(bus.Control), "step/1", &sc.reports[1])
	h.publishStep(sc, 2)
	got := r.waitStep(t, 2)
	named := len(Named(&sc.reports[1]))
	if named == 0 {
		t.Fatal("the script's step 1 names no trajectory for the pool")
	}
	if n := counterValue(t, met.MissingTrajectories); n != float64(named) {
		t.Errorf("missing trajectories %v, want the %d of step 1", n, named)
	}
	// The independent fold without step 1's trajectories: its successes
	// are left out, its counts (Correct) stay.
	ref, err := replay.New(cfg.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for s := range 3 {
		rr, _ := Assemble(&sc.reports[s], func(id string, seq uint64) (*wire.Trajectory, bool) {
			if s == 1 {
				return nil, false
			}
			for i := range sc.scored[s] {
				if sc.scored[s][i].Traj.ID == id {
					return &sc.scored[s][i].Traj, true
				}
			}
			return nil, false
		})
		if err := ref.Apply(rr); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, ref.Snapshot()) {
		t.Fatalf("pool differs from the fold without the discarded trajectories: %+v vs %+v", statsOf(t, got), ref.Stats())
	}
}

func readDead(t *testing.T, h *harness) []wire.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.b.Stream(ctx, bus.Dead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var d wire.DeadLetter
		if err := wire.Decode(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}
