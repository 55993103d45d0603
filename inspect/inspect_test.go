package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// wantBuckets is the BucketsView an independent fold's stats give.
func wantBuckets(st replay.Stats, mixed bool, at int64, reports int) BucketsView {
	v := BucketsView{Run: fxRun, K: fxK, Step: st.Step, AtStep: at, Mixed: mixed, Pool: st.Questions, Retired: st.Retired,
		Known: st.Known, Trajectories: st.Trajectories, Tokens: st.Tokens, Reports: reports}
	for k := 1; k < len(st.Buckets); k++ {
		v.Buckets = append(v.Buckets, Bucket{K: k, Questions: st.Buckets[k]})
	}
	return v
}

// ALGORITHM.md E2-E5: the pool at step N is the fold of the first N+1 reports.
func TestBucketsAtEveryStepEqualAnIndependentFold(t *testing.T) {
	f := newFixture(t)
	_, l := f.ledger(t)
	if l.K != fxK {
		t.Fatalf("K = %d from the reports, want %d", l.K, fxK)
	}
	if l.Undecodable != 1 {
		t.Errorf("undecodable messages %d, want 1 (the garbage on CONTROL)", l.Undecodable)
	}
	if len(l.Points) != fxSteps {
		t.Fatalf("%d points, want %d", len(l.Points), fxSteps)
	}
	sawRetired, sawSpread := false, false
	for n := int64(0); n < fxSteps; n++ {
		want := wantBuckets(f.expected[n], n >= fxMixedAt, n, int(n)+1)
		got := l.Buckets(fxRun, n)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("buckets at step %d:\n got %+v\nwant %+v", n, got, want)
		}
		p := l.Points[n]
		if p.Step != n || !reflect.DeepEqual(p.Buckets, f.expected[n].Buckets) || p.Pool != f.expected[n].Questions ||
			p.Retired != f.expected[n].Retired || p.Trajectories != f.expected[n].Trajectories || p.Missing != 0 || p.Skipped != "" {
			t.Errorf("timeline point %d = %+v, want the stats %+v", n, p, f.expected[n])
		}
		if p.Pass1 != f.reports[n].Pass1 || p.Entropy != f.reports[n].Entropy {
			t.Errorf("point %d curves %v/%v, want %v/%v", n, p.Pass1, p.Entropy, f.reports[n].Pass1, f.reports[n].Entropy)
		}
		sawRetired = sawRetired || f.expected[n].Retired > 0
		nonEmpty := 0
		for _, c := range f.expected[n].Buckets {
			if c > 0 {
				nonEmpty++
			}
		}
		sawSpread = sawSpread || nonEmpty >= 2
	}
	if !sawRetired || !sawSpread {
		t.Fatalf("the fixture never retires a question (%v) or never fills two buckets (%v): the test would prove little", sawRetired, sawSpread)
	}
	// The latest (no --at-step) is the last step; before the delayed start nothing is stored.
	last := l.Buckets(fxRun, -1)
	if want := wantBuckets(f.expected[fxSteps-1], true, -1, fxSteps); !reflect.DeepEqual(last, want) {
		t.Errorf("latest buckets\n got %+v\nwant %+v", last, want)
	}
	if b := l.Buckets(fxRun, fxMixedAt-1); b.Trajectories != 0 || b.Pool != 0 || b.Mixed {
		t.Errorf("before the delayed start (E5) the pool is empty and mixed is off, got %+v", b)
	}
}

func TestQuestionHistoryAndStoredTrajectories(t *testing.T) {
	f := newFixture(t)
	s, l := f.ledger(t)
	ctx := context.Background()
	checked := 0
	for qi := 0; qi < fxQ; qi++ {
		id := "q" + string(rune('0'+qi))
		v, err := l.Question(ctx, s, id, nil, "")
		var steps []int64
		for _, r := range f.reports {
			for _, g := range r.Groups {
				if g.QuestionID == id {
					steps = append(steps, r.Step)
				}
			}
		}
		if len(steps) == 0 {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s in no report: err %v, want ErrNotFound", id, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		checked++
		if len(v.Steps) != len(steps) {
			t.Fatalf("%s: %d history rows, want %d (%v)", id, len(v.Steps), len(steps), steps)
		}
		hist := map[int64]replay.Event{}
		for _, e := range f.pool.History(id) {
			hist[e.Step] = e
		}
		for i, row := range v.Steps {
			r := f.reports[steps[i]]
			var g *struct {
				k   int
				rep bool
			}
			for _, gr := range r.Groups {
				if gr.QuestionID == id {
					g = &struct {
						k   int
						rep bool
					}{gr.Correct, gr.Replayed}
				}
			}
			if row.Step != steps[i] || row.Correct != g.k || row.Replayed != g.rep || row.Mixed != r.Mixed || row.Size != fxK {
				t.Errorf("%s row %d = %+v, want step %d k %d replayed %v", id, i, row, steps[i], g.k, g.rep)
			}
			e, folded := hist[row.Step]
			if folded != r.Mixed {
				t.Errorf("%s step %d: in the pool's history %v, mixed %v", id, row.Step, folded, r.Mixed)
			}
			if folded && (row.From != e.From || row.To != e.To || row.Added != e.Added || row.Retired != e.Retired || row.WasRetired != e.WasRetired) {
				t.Errorf("%s step %d: bucket move %+v, independent fold says %+v", id, row.Step, row, e)
			}
		}
		info, _ := f.pool.Question(id)
		if v.Bucket != info.Bucket || v.Retired != info.Retired || v.LatestK != info.LatestK {
			t.Errorf("%s state bucket %d retired %v k %d, want %+v", id, v.Bucket, v.Retired, v.LatestK, info)
		}
		cands := f.pool.Candidates(id)
		if len(v.Stored) != len(cands) {
			t.Fatalf("%s: %d stored, want %d", id, len(v.Stored), len(cands))
		}
		for i, c := range cands {
			st := v.Stored[i]
			want := f.scored[c.ID]
			if st.ID != c.ID || st.Step != c.Step || st.PolicyVersion != c.PolicyVersion || st.Tokens != len(c.Tokens) || st.Text != want.Traj.Text {
				t.Errorf("%s stored %d = %+v, want %s step %d v%d %d tokens %q", id, i, st, c.ID, c.Step, c.PolicyVersion, len(c.Tokens), want.Traj.Text)
			}
			if d := st.MeanLogProb - mean(c.LogProbs); d > 1e-9 || d < -1e-9 { // tolerance: float64 sums of the same numbers
				t.Errorf("%s stored %s mean logp %v, want %v", id, c.ID, st.MeanLogProb, mean(c.LogProbs))
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d questions checked", checked)
	}
}

func TestStepGroups(t *testing.T) {
	f := newFixture(t)
	_, l := f.ledger(t)
	replayed := 0
	for _, rep := range f.reports {
		v, err := l.Step(fxRun, rep.Step)
		if err != nil {
			t.Fatal(err)
		}
		if v.Pass1 != rep.Pass1 || v.Mixed != rep.Mixed || v.PolicyVersion != rep.PolicyVersion || len(v.Groups) != len(rep.Groups) {
			t.Fatalf("step %d header %+v", rep.Step, v)
		}
		if !reflect.DeepEqual(v.Buckets, f.expected[rep.Step].Buckets) {
			t.Errorf("step %d buckets %v, want %v", rep.Step, v.Buckets, f.expected[rep.Step].Buckets)
		}
		for i, g := range rep.Groups {
			gv := v.Groups[i]
			if gv.QuestionID != g.QuestionID || gv.Correct != g.Correct || gv.Replayed != g.Replayed || gv.ReplayedID != g.ReplayedID {
				t.Errorf("step %d group %d = %+v, want %+v", rep.Step, i, gv, g)
			}
			for j, ro := range gv.Rollouts {
				sc := f.scored[g.TrajectoryIDs[j]]
				if ro.ID != g.TrajectoryIDs[j] || ro.Reward != g.Rewards[j] || ro.Advantage != g.Advantages[j] || ro.Reason != g.Reasons[j] ||
					!ro.Found || ro.Text != sc.Traj.Text || ro.Tokens != len(sc.Traj.Tokens) || ro.Replayed != (g.Replayed && j == 0) {
					t.Errorf("step %d %s rollout %d = %+v", rep.Step, g.QuestionID, j, ro)
				}
			}
			if g.Replayed {
				replayed++
				if len(gv.Candidates) != len(g.Candidates) || !gv.Candidates[0].Chosen {
					t.Errorf("step %d %s candidates %+v: the lowest-entropy one is chosen (E7)", rep.Step, g.QuestionID, gv.Candidates)
				}
				for j, c := range gv.Candidates {
					if c.ID != g.Candidates[j].ID || c.Entropy != g.Candidates[j].Entropy || c.Chosen != (j == 0) {
						t.Errorf("step %d %s candidate %d = %+v", rep.Step, g.QuestionID, j, c)
					}
				}
			}
		}
	}
	if replayed == 0 {
		t.Fatal("the fixture replays nothing")
	}
	if _, err := l.Step(fxRun, fxSteps+5); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing step: %v, want ErrNotFound", err)
	}
}

// The lag numbers are the consumers' own: a reader that fetched without
// acknowledging shows its ack-pending; the replay service that folded
// everything shows nothing pending; DEAD holds the garbage with its reason.
func TestStreamsLagAndDead(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The real replay service folds the run (and dead-letters the garbage).
	rcfg := rsvc.DefaultConfig()
	rcfg.Pool.K, rcfg.Pool.Mu = fxK, fxK/2
	rcfg.AckWait, rcfg.ReportWait = 5*time.Second, 10*time.Second
	svc, err := rsvc.New(rcfg, bustest.Open(t, f.srv, bus.DefaultConfig(fxRun)), nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(sctx) }()
	var svcStats replay.Stats
	bustest.Eventually(t, 60*time.Second, "the replay service folds every step", func() bool {
		ictx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		last := int64(-1)
		err := svc.Inspect(ictx, func(p *replay.Pool, l int64) { svcStats, last = p.Stats(), l })
		return err == nil && last == fxSteps-1
	})
	s := f.source(t)
	bustest.Eventually(t, 30*time.Second, "DEAD holds the garbage", func() bool {
		v, err := s.Streams(ctx, 5)
		return err == nil && len(v.Dead) == 1
	})
	// The service's pool is the one inspect folds.
	_, l := f.ledger(t)
	if got := l.Buckets(fxRun, -1); !reflect.DeepEqual(got, wantBuckets(svcStats, true, -1, fxSteps)) {
		t.Errorf("inspect's fold %+v differs from the replay service's pool %+v", got, svcStats)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A durable reader of SCORED (a tool's) that fetched 5 without acknowledging.
	lrn, err := f.b.Reader(ctx, bus.Scored, "learner", bus.ReaderOptions{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := lrn.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	before := consumerNames(t, f.b)
	if _, err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if left := ownConsumers(t, f.b); len(left) > 0 {
		t.Errorf("inspect's ordered reads left consumers: %v", left)
	}
	v, err := s.Streams(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if after := consumerNames(t, f.b); !reflect.DeepEqual(before, after) {
		t.Errorf("inspect left consumers behind: before %v after %v", before, after)
	}
	rows := map[string]StreamRow{}
	for _, r := range v.Streams {
		rows[r.Kind] = r
	}
	nScored := uint64(len(f.scored))
	if r := rows["SCORED"]; !r.Exists || r.Messages != nScored || r.LastSeq != nScored || r.Bytes == 0 || r.LastUnixMs == 0 {
		t.Errorf("SCORED row %+v, want %d messages", r, nScored)
	}
	if r := rows["ROLLOUTS"]; !r.Exists || r.Messages != nScored || r.Bytes <= rows["SCORED"].Bytes {
		t.Errorf("ROLLOUTS row %+v, want the %d trajectories (stored once, larger than their verdicts)", r, nScored)
	}
	if r := rows["CONTROL"]; r.Messages != fxSteps+1 {
		t.Errorf("CONTROL holds %d messages, want %d reports + 1 garbage", r.Messages, fxSteps)
	}
	if r := rows["TASKS"]; !r.Exists || r.Messages != 0 || len(r.Consumers) != 1 || r.Consumers[0].Name != bus.ActorsConsumer {
		t.Errorf("TASKS row %+v", r)
	}
	lag := map[string]ConsumerRow{}
	for _, c := range rows["SCORED"].Consumers {
		lag[c.Name] = c
	}
	if c := lag["learner"]; c.AckPending != 5 || c.Pending != nScored-5 || c.Redelivered != 0 || c.Delivered != 5 || c.AckFloor != 0 {
		t.Errorf("learner lag %+v, want 5 ack pending, %d pending", c, nScored-5)
	}
	if c, ok := lag["replay"]; ok {
		t.Errorf("replay has a consumer on SCORED %+v; it reads only what its reports name, from ROLLOUTS", c)
	}
	for _, rr := range rows["CONTROL"].Consumers {
		if rr.Name == "replay" && (rr.Pending != 0 || rr.AckPending != 0) {
			t.Errorf("replay lag on CONTROL %+v", rr)
		}
	}
	if r := rows["replay snapshot"]; !r.Exists || r.Messages == 0 {
		t.Errorf("replay snapshot bucket %+v", r)
	}
	d := v.Dead[0]
	if d.Stream != f.b.Names.Stream(bus.Control) || d.Role != "replay" || !strings.Contains(d.Reason, "malformed") ||
		d.Subject != f.b.Names.Subject(bus.Control) || d.Sequence != uint64(f.garbageAfter)+2 {
		t.Errorf("dead letter %+v, want the garbage at CONTROL seq %d with its decode error", d, f.garbageAfter+2)
	}
	var tb bytes.Buffer
	if err := WriteTable(&tb, v); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^SCORED\s+learner\s+` + itoa(int(nScored-5)) + `\s+5\s+0\s`).Match(tb.Bytes()) {
		t.Errorf("streams table lacks the learner's lag row:\n%s", tb.String())
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func consumerNames(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	var out []string
	for _, k := range bus.Kinds {
		st, err := b.Stream(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		names := st.ConsumerNames(context.Background())
		for n := range names.Name() {
			if !strings.HasPrefix(n, consumerPrefix) {
				out = append(out, string(k)+"/"+n)
			}
		}
	}
	return out
}

// ownConsumers lists inspect's own consumers still on the server.
func ownConsumers(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	var out []string
	for _, k := range bus.Kinds {
		st, err := b.Stream(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		names := st.ConsumerNames(context.Background())
		for n := range names.Name() {
			if strings.HasPrefix(n, consumerPrefix) {
				out = append(out, string(k)+"/"+n)
			}
		}
	}
	return out
}

// runMain runs the command line and returns its stdout.
func runMain(t *testing.T, args ...string) []byte {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Main(ctx, args, &out, &errb, zap.NewNop()); err != nil {
		t.Fatalf("inspect %v: %v\n%s", args, err, errb.String())
	}
	return out.Bytes()
}

// roundTrip decodes JSON into a fresh T, checks re-encoding gives the same
// bytes, and returns the value.
func roundTrip[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, b)
	}
	var again bytes.Buffer
	if err := WriteJSON(&again, v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), b) {
		t.Errorf("%T does not round-trip:\n%s\nvs\n%s", v, b, again.Bytes())
	}
	return v
}

func TestCommandLineJSONRoundTripsAndTables(t *testing.T) {
	f := newFixture(t)
	s, l := f.ledger(t)
	url := f.srv.ClientURL()
	for _, at := range []int64{-1, 3, fxSteps - 2} {
		args := []string{"buckets", "--nats", url, "--run", fxRun, "--json"}
		if at >= 0 {
			args = append(args, "--at-step", itoa(int(at)))
		}
		got := roundTrip[BucketsView](t, runMain(t, args...))
		if want := l.Buckets(fxRun, at); !reflect.DeepEqual(got, want) {
			t.Errorf("buckets --at-step %d --json:\n got %+v\nwant %+v", at, got, want)
		}
	}
	// Flags after the positional argument are read too.
	q := roundTrip[QuestionView](t, runMain(t, "question", "q8", "--nats", url, "--run", fxRun, "--json"))
	wantQ, err := l.Question(context.Background(), s, "q8", nil, "")
	if err != nil || !reflect.DeepEqual(q, wantQ) {
		t.Errorf("question --json:\n got %+v\nwant %+v (%v)", q, wantQ, err)
	}
	st := roundTrip[StepView](t, runMain(t, "--json", "step", "7", "--nats", url, "--run", fxRun))
	if want, _ := l.Step(fxRun, 7); !reflect.DeepEqual(st, want) {
		t.Errorf("step --json:\n got %+v\nwant %+v", st, want)
	}
	sv := roundTrip[StreamsView](t, runMain(t, "streams", "--json", "--nats", url, "--run", fxRun))
	if len(sv.Streams) == 0 || sv.Streams[1].Kind != "ROLLOUTS" {
		t.Errorf("streams --json %+v", sv)
	}

	// Tables: the numbers of the views, aligned.
	tbl := string(runMain(t, "buckets", "--at-step", "6", "--nats", url, "--run", fxRun))
	want := l.Buckets(fxRun, 6)
	for _, b := range want.Buckets {
		if !regexp.MustCompile(`(?m)^` + itoa(b.K) + `\s+` + itoa(b.Questions) + `\b`).MatchString(tbl) {
			t.Errorf("buckets table lacks bucket %d = %d:\n%s", b.K, b.Questions, tbl)
		}
	}
	if !regexp.MustCompile(`(?m)^retired\s+`+itoa(want.Retired)+`$`).MatchString(tbl) ||
		!regexp.MustCompile(`(?m)^trajectories stored\s+`+itoa(want.Trajectories)+`$`).MatchString(tbl) {
		t.Errorf("buckets table:\n%s", tbl)
	}
	tbl = string(runMain(t, "step", "7", "--nats", url, "--run", fxRun))
	for _, g := range f.reports[7].Groups {
		if !regexp.MustCompile(`(?m)^` + g.QuestionID + `\s+(fresh|replayed)\s+` + itoa(g.Correct) + `/4\s`).MatchString(tbl) {
			t.Errorf("step table lacks %s with k %d:\n%s", g.QuestionID, g.Correct, tbl)
		}
	}
	tbl = string(runMain(t, "question", "q8", "--nats", url, "--run", fxRun))
	if got := len(regexp.MustCompile(`(?m)^\d+\s+(mixed|on-policy)\s`).FindAllString(tbl, -1)); got != len(wantQ.Steps) {
		t.Errorf("question table has %d step rows, want %d:\n%s", got, len(wantQ.Steps), tbl)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no view", nil},
		{"unknown view", []string{"pool"}},
		{"question without id", []string{"question"}},
		{"step not a number", []string{"step", "x"}},
		{"extra argument", []string{"buckets", "3"}},
		{"both sources", []string{"buckets", "--run-dir", "d", "--nats", "nats://x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Main(context.Background(), tc.args, &out, &errb, nil)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("err %v, want ErrUsage", err)
			}
		})
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("buckets --at-step 3 --json")
	f.Add("question q1 --run-dir x")
	f.Add("step -1")
	f.Add("serve --http :0")
	f.Fuzz(func(t *testing.T, line string) {
		var errb bytes.Buffer
		o, err := ParseArgs(strings.Fields(line), &errb)
		if err == nil && o.View == "" {
			t.Fatalf("%q parsed without a view", line)
		}
	})
}

// A run directory: refused while its server runs (with the hint to use
// --nats and the server's URL), readable after, and left as it was.
func TestRunDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := map[string]any{"run_id": fxRun, "replay": map[string]any{"Pool": map[string]any{"K": fxK}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, rundir.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	scfg := bus.DefaultServerConfig(filepath.Join(dir, rundir.JetStreamDir))
	scfg.Port = -1
	srv, err := bus.StartServer(scfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	f := publishFixture(t, srv)
	host := strings.TrimPrefix(srv.ClientURL(), "nats://")
	_ = os.WriteFile(filepath.Join(dir, rundir.LogFile), []byte(`{"msg":"Listening for client connections on `+host+`"}`+"\n"), 0o644)

	var out, errb bytes.Buffer
	err = Main(context.Background(), []string{"buckets", "--run-dir", dir}, &out, &errb, nil)
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "--nats "+srv.ClientURL()) || !strings.Contains(err.Error(), "--run "+fxRun) {
		t.Fatalf("inspect of a running run's directory: %v; want ErrRunning naming --nats %s", err, srv.ClientURL())
	}
	before := streamStates(t, f.b)
	f.b.NC.Close()
	srv.Shutdown()

	got := roundTrip[BucketsView](t, runMain(t, "buckets", "--run-dir", dir, "--json", "--at-step", "8"))
	if want := wantBuckets(f.expected[8], true, 8, 9); !reflect.DeepEqual(got, want) {
		t.Errorf("run directory buckets at 8:\n got %+v\nwant %+v", got, want)
	}
	runMain(t, "streams", "--run-dir", dir)
	runMain(t, "question", "q3", "--run-dir", dir)

	// Reopen the store: inspect changed nothing in it.
	srv2, err := bus.StartServer(scfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	b2 := bustest.Open(t, srv2, bus.DefaultConfig(fxRun))
	if after := streamStates(t, b2); !reflect.DeepEqual(before, after) {
		t.Errorf("inspect changed the store:\nbefore %v\nafter  %v", before, after)
	}

	if err := Main(context.Background(), []string{"buckets", "--run-dir", t.TempDir()}, &out, &errb, nil); !errors.Is(err, ErrNoRun) {
		t.Errorf("a directory without a store: %v, want ErrNoRun", err)
	}
}

// streamStates is every stream's message count and sequence range, and
// every consumer's delivered and acknowledged position.
func streamStates(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	var out []string
	ctx := context.Background()
	for _, k := range bus.Kinds {
		st, err := b.Stream(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		i, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(k)+":"+itoa(int(i.State.Msgs))+"/"+itoa(int(i.State.FirstSeq))+"-"+itoa(int(i.State.LastSeq)))
		cl := st.ListConsumers(ctx)
		for ci := range cl.Info() {
			if !strings.HasPrefix(ci.Name, consumerPrefix) {
				out = append(out, ci.Name+":"+itoa(int(ci.Delivered.Stream))+"/"+itoa(int(ci.AckFloor.Stream)))
			}
		}
	}
	return out
}
