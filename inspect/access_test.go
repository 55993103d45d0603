package inspect

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/auth"
	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"go.uber.org/zap"
)

// With the "inspect" role's credentials (package auth: read every stream,
// write nothing, acknowledge nothing) every view works and equals what an
// unrestricted reader sees: inspect needs no permission beyond reading.
func TestReadOnlyCredentialsSuffice(t *testing.T) {
	dir := t.TempDir()
	bundle, err := auth.Generate(auth.DefaultConfig(fxRun))
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartServer(bus.ServerConfig{ConfigFile: filepath.Join(dir, auth.ServerConfFile), Host: "127.0.0.1", Port: -1,
		StoreDir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), CredsFile: auth.CredsFile(dir, auth.Admin)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := bus.Open(ctx, nc, bus.DefaultConfig(fxRun), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	f := publishOn(t, srv, b)
	admin, err := NewSource(nc, fxRun)
	if err != nil {
		t.Fatal(err)
	}
	l, err := admin.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds := auth.CredsFile(dir, auth.Inspect)
	url := srv.ClientURL()
	for _, at := range []int64{-1, 4} {
		got := roundTrip[BucketsView](t, runMain(t, "buckets", "--nats", url, "--creds", creds, "--run", fxRun, "--json", "--at-step", itoa(int(at))))
		if want := l.Buckets(fxRun, at); !reflect.DeepEqual(got, want) {
			t.Errorf("buckets at %d with inspect credentials:\n got %+v\nwant %+v", at, got, want)
		}
	}
	st := roundTrip[StepView](t, runMain(t, "step", "9", "--nats", url, "--creds", creds, "--run", fxRun, "--json"))
	if want, _ := l.Step(fxRun, 9); !reflect.DeepEqual(st, want) {
		t.Errorf("step with inspect credentials differs")
	}
	q := roundTrip[QuestionView](t, runMain(t, "question", "q2", "--nats", url, "--creds", creds, "--run", fxRun, "--json"))
	if want, _ := l.Question(ctx, admin, "q2", nil, ""); !reflect.DeepEqual(q, want) {
		t.Errorf("question with inspect credentials differs")
	}
	sv := roundTrip[StreamsView](t, runMain(t, "streams", "--nats", url, "--creds", creds, "--run", fxRun, "--json"))
	if len(sv.Streams) < len(bus.Kinds) || sv.Streams[4].Kind != "CONTROL" || sv.Streams[4].Messages != fxSteps+1 {
		t.Errorf("streams with inspect credentials: %+v", sv.Streams)
	}
	if f.b.Names.Run != fxRun {
		t.Fatal(f.b.Names.Run)
	}
}

// --checkpoint scores a question's stored trajectories under that policy:
// mean token entropy and log-prob equal policy.Score's (the E7 score).
func TestQuestionScoredUnderACheckpoint(t *testing.T) {
	f := newFixture(t)
	s, l := f.ledger(t)
	tok := policy.NewCharTokenizer("abcdefghijklm")
	m, err := policy.New(policy.Config{Vocab: tok.Size(), Context: 32, Layers: 1, Width: 8, Heads: 2}, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ck.safetensors")
	if err := policy.SaveFile(path, policy.Checkpoint{Model: m, Tokenizer: tok}); err != nil {
		t.Fatal(err)
	}
	q := ""
	for i := range fxQ {
		if id := "q" + itoa(i); len(l.Pool().Candidates(id)) > 1 {
			q = id
			break
		}
	}
	if q == "" {
		t.Fatal("no question with two stored trajectories in the fixture")
	}
	got := roundTrip[QuestionView](t, runMain(t, "question", q, "--checkpoint", path, "--nats", f.srv.ClientURL(), "--run", fxRun, "--json"))
	cands := l.Pool().Candidates(q)
	if len(got.Stored) != len(cands) || len(cands) == 0 || got.Checkpoint != path {
		t.Fatalf("%d stored scored under %q, want %d under %s", len(got.Stored), got.Checkpoint, len(cands), path)
	}
	for i, c := range cands {
		logps, ents, err := m.Score([]policy.Seq{{Tokens: append(append([]int32{}, c.PromptTokens...), c.Tokens...), PromptLen: len(c.PromptTokens)}})
		if err != nil {
			t.Fatal(err)
		}
		st := got.Stored[i]
		// Tolerance 1e-6: the same float32 sums, through JSON's shortest float64 form.
		if st.Entropy == nil || st.LogProb == nil || math.Abs(*st.Entropy-mean(ents[0])) > 1e-6 || math.Abs(*st.LogProb-mean(logps[0])) > 1e-6 {
			t.Errorf("%s: entropy %v logp %v, want %v %v", c.ID, st.Entropy, st.LogProb, mean(ents[0]), mean(logps[0]))
		}
	}
	// A checkpoint whose context is too short for the trajectories fails clearly.
	small, _ := policy.New(policy.Config{Vocab: tok.Size(), Context: 4, Layers: 1, Width: 8, Heads: 2}, rand.New(rand.NewPCG(1, 2)))
	if _, err := l.Question(context.Background(), s, q, &policy.Checkpoint{Model: small, Tokenizer: tok}, "small"); err == nil {
		t.Errorf("scoring %s with a 4-token context: no error", q)
	}
}
