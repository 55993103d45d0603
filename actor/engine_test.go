package actor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/engine/server"
	"github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// engineFixture is a built-in engine server (real HTTP, real model) with
// its initial checkpoint.
type engineFixture struct {
	srv  *server.Server
	url  string
	hs   *httptest.Server
	ckpt []byte
}

func startEngine(t *testing.T, api string, seed uint64, mutate func(*server.Config)) engineFixture {
	t.Helper()
	data := tinyCheckpoint(t, seed)
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig(api, path)
	cfg.Workers = 2
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return engineFixture{srv: s, url: hs.URL, hs: hs, ckpt: data}
}

func newEngineBackend(t *testing.T, api, url string, mutate func(*EngineConfig)) *Engine {
	t.Helper()
	cfg := DefaultEngineConfig(api, url)
	cfg.WeightsDir = t.TempDir()
	cfg.HealthWait = time.Second
	cfg.Client.Backoff = 10 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := NewEngine(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// probeOf is the learner's probe of a checkpoint.
func probeOf(t *testing.T, version int64, ckpt []byte) *wire.Probe {
	t.Helper()
	c, err := policy.ReadCheckpoint(bytes.NewReader(ckpt))
	if err != nil {
		t.Fatal(err)
	}
	p, err := service.Probe(version, c.Model, c.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Seqs) == 0 {
		t.Fatal("empty probe")
	}
	return &p
}

func engineTask(t *testing.T, id, prompt string, samples int, seed int64, temp float32) wire.Task {
	t.Helper()
	ids, err := task.EncodePrompt(task.BuiltinTokenizer(), task.Problem{ID: id, Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	return wire.Task{TaskID: id, QuestionID: id, Prompt: prompt, Answer: "0", Kind: task.KindArith, Samples: samples,
		MaxNew: task.MaxNew, Temp: temp, Seed: seed, PromptTokens: ids}
}

var engineAPIs = []string{engine.APIVLLM, engine.APISGLang}

// TestEngineMatchesBuiltin: the engine backend through the built-in
// server reproduces the built-in backend on the same weights and task
// (tokens, text and finish equal, log-probs within 1e-5), and the same
// task gives the same trajectories again (determinism by seed).
func TestEngineMatchesBuiltin(t *testing.T) {
	ctx := context.Background()
	for _, api := range engineAPIs {
		t.Run(api, func(t *testing.T) {
			ef := startEngine(t, api, 5, nil)
			e := newEngineBackend(t, api, ef.url, nil)
			ckpt := tinyCheckpoint(t, 21)
			if err := e.LoadProbe(ctx, 1, ckpt, probeOf(t, 1, ckpt)); err != nil {
				t.Fatal(err)
			}
			b := NewBuiltin()
			if err := b.Load(1, ckpt); err != nil {
				t.Fatal(err)
			}
			tk := engineTask(t, "s1/q", "12+7*3", 6, 99, 1)
			want, err := b.SampleTask(ctx, tk)
			if err != nil {
				t.Fatal(err)
			}
			for round := range 2 {
				got, err := e.SampleTask(ctx, tk)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					g, w := got[i], want[i]
					if !slicesEqual(g.Tokens, w.Tokens) || g.Text != w.Text || g.Finish != w.Finish || !slicesEqual(g.PromptTokens, w.PromptTokens) {
						t.Fatalf("round %d sample %d: engine %q (%s), built-in %q (%s)", round, i, g.Text, g.Finish, w.Text, w.Finish)
					}
					for j := range g.LogProbs {
						if math.Abs(float64(g.LogProbs[j]-w.LogProbs[j])) > 1e-5 {
							t.Fatalf("sample %d token %d: log-prob %v, built-in %v", i, j, g.LogProbs[j], w.LogProbs[j])
						}
						if g.Entropies[j] != -g.LogProbs[j] || g.EntropyKind != wire.EntropySample {
							t.Fatalf("entropy %v (%q), want the one-sample estimate %v", g.Entropies[j], g.EntropyKind, -g.LogProbs[j])
						}
					}
				}
			}
			if _, err := e.SampleTask(ctx, wire.Task{TaskID: "x", Samples: 1, Prompt: "1+1"}); !errors.Is(err, ErrBadTask) {
				t.Fatalf("a task without prompt ids: %v, want ErrBadTask", err)
			}
		})
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestProbeCatchesWrongWeights: a reload that answers success but keeps the
// old weights (the reported vLLM bug) and a reload of weights other than
// the learner's are both caught by the probe; the backend then refuses to
// serve, saying why, until a version passes.
func TestProbeCatchesWrongWeights(t *testing.T) {
	ctx := context.Background()
	for _, api := range engineAPIs {
		t.Run(api+"/stale reload", func(t *testing.T) {
			ef := startEngine(t, api, 5, func(c *server.Config) { c.StaleReload = true })
			e := newEngineBackend(t, api, ef.url, nil)
			ckpt := tinyCheckpoint(t, 22)
			err := e.LoadProbe(ctx, 1, ckpt, probeOf(t, 1, ckpt))
			if !errors.Is(err, ErrProbe) || !strings.Contains(err.Error(), "does not hold v1") {
				t.Fatalf("stale reload: %v, want ErrProbe", err)
			}
			if e.Version() != -1 || e.Refused() == nil {
				t.Fatalf("after a failed probe: version %d, refused %v", e.Version(), e.Refused())
			}
			_, serr := e.SampleTask(ctx, engineTask(t, "t", "1+2", 2, 1, 1))
			if !errors.Is(serr, ErrNotServing) || !errors.Is(serr, ErrProbe) {
				t.Fatalf("sampling while refused: %v, want ErrNotServing wrapping ErrProbe", serr)
			}
		})
		t.Run(api+"/wrong weights", func(t *testing.T) {
			ef := startEngine(t, api, 5, nil)
			e := newEngineBackend(t, api, ef.url, nil)
			right, wrong := tinyCheckpoint(t, 23), tinyCheckpoint(t, 24)
			if err := e.LoadProbe(ctx, 1, right, probeOf(t, 1, right)); err != nil {
				t.Fatal(err)
			}
			if err := e.LoadProbe(ctx, 2, wrong, probeOf(t, 2, right)); !errors.Is(err, ErrProbe) {
				t.Fatalf("wrong weights: %v, want ErrProbe", err)
			}
			if e.Version() != 1 || e.Refused() == nil {
				t.Fatalf("version %d, refused %v", e.Version(), e.Refused())
			}
			// The next good version is served again.
			if err := e.LoadProbe(ctx, 3, right, probeOf(t, 3, right)); err != nil {
				t.Fatal(err)
			}
			if _, err := e.SampleTask(ctx, engineTask(t, "t", "1+2", 2, 1, 1)); err != nil {
				t.Fatal(err)
			}
			if err := e.LoadProbe(ctx, 4, right, nil); !errors.Is(err, ErrProbe) {
				t.Fatalf("a version without a probe: %v, want ErrProbe (RequireProbe)", err)
			}
		})
	}
}

// TestPrefixCacheAcrossVersions: the server's prefix cache, like vLLM's,
// survives a reload. Without a reset or a salt the new version's probe is
// answered from the old weights' cache and fails although the weights did
// change; resetting the cache or salting requests with the version both
// give fresh numbers, and a salted client never hits the old version's
// entries.
func TestPrefixCacheAcrossVersions(t *testing.T) {
	ctx := context.Background()
	v1, v2 := tinyCheckpoint(t, 31), tinyCheckpoint(t, 32)
	for _, mode := range []string{CacheNone, CacheReset, CacheSalt, CacheResetAndSalt} {
		t.Run(mode, func(t *testing.T) {
			ef := startEngine(t, engine.APIVLLM, 5, nil)
			e := newEngineBackend(t, engine.APIVLLM, ef.url, func(c *EngineConfig) { c.Cache = mode })
			if err := e.LoadProbe(ctx, 1, v1, probeOf(t, 1, v1)); err != nil {
				t.Fatal(err)
			}
			hits := ef.srv.Stats().CacheHits
			err := e.LoadProbe(ctx, 2, v2, probeOf(t, 2, v2))
			newHits := ef.srv.Stats().CacheHits - hits
			if mode == CacheNone {
				if !errors.Is(err, ErrProbe) || newHits == 0 {
					t.Fatalf("no reset, no salt: %v after %d cache hits; want the stale cache caught by the probe", err, newHits)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if newHits != 0 {
				t.Fatalf("%d prompt log-probs of v2 were served from v1's cache", newHits)
			}
		})
	}
}

// faultProxy sits between the actor and the engine and breaks the answers
// of requests whose prompt holds marker.
type faultProxy struct {
	target *httptest.Server
	marker string
	fault  func(w http.ResponseWriter) bool // true: answered (the engine is not asked)
	hits   atomic.Int64
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if strings.Contains(string(body), p.marker) {
		p.hits.Add(1)
		if p.fault(w) {
			return
		}
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target.URL+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// TestBadEngineOutputGoesToDead runs an engine actor on the bus against a
// proxy that breaks the answers for one task's prompt (NaN and positive
// log-probs, unknown ids, lengths that disagree, HTTP 500, timeouts). That
// task is retried, then dead-lettered with the reason; the other tasks are
// served, the actor stays up, and ROLLOUTS holds every good trajectory and
// nothing of the bad task.
func TestBadEngineOutputGoesToDead(t *testing.T) {
	write := func(s string) func(w http.ResponseWriter) bool {
		return func(w http.ResponseWriter) bool { _, _ = w.Write([]byte(s)); return true }
	}
	lp := func(id int, v string) string {
		return `{"token":"token_id:` + fmt.Sprint(id) + `","logprob":` + v + `,"top_logprobs":[]}`
	}
	choice := func(ids, lps string) string {
		return `{"choices":[{"index":0,"finish_reason":"stop","token_ids":` + ids + `,"logprobs":{"content":` + lps + `}},` +
			`{"index":1,"finish_reason":"stop","token_ids":` + ids + `,"logprobs":{"content":` + lps + `}}]}`
	}
	cases := []struct {
		name   string
		fault  func(w http.ResponseWriter) bool
		reason string
	}{
		{"NaN log-prob", write(choice("[5,2]", "["+lp(5, "NaN")+","+lp(2, "-1")+"]")), "bad answer"},
		{"positive log-prob", write(choice("[5,2]", "["+lp(5, "0.7")+","+lp(2, "-1")+"]")), "> 0"},
		{"unknown token id", write(choice("[5000,2]", "["+lp(5000, "-1")+","+lp(2, "-1")+"]")), "outside the vocabulary"},
		{"lengths disagree", write(choice("[5,6,2]", "["+lp(5, "-1")+","+lp(2, "-1")+"]")), "log-prob"},
		{"HTTP 500", func(w http.ResponseWriter) bool { w.WriteHeader(500); return true }, "unavailable"},
		{"timeout", func(w http.ResponseWriter) bool { time.Sleep(400 * time.Millisecond); return true }, "unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ef := startEngine(t, engine.APIVLLM, 5, nil)
			// The marker is the bad prompt's token ids as the request writes them.
			badIDs, _ := task.EncodePrompt(task.BuiltinTokenizer(), task.Problem{Prompt: "99-98"})
			marker := strings.Trim(strings.ReplaceAll(fmt.Sprint(badIDs), " ", ","), "[]")
			proxy := &faultProxy{target: ef.hs, marker: marker, fault: tc.fault}
			ps := httptest.NewServer(proxy)
			t.Cleanup(ps.Close)
			e := newEngineBackend(t, engine.APIVLLM, ps.URL, func(c *EngineConfig) {
				c.Client.RequestTimeout = 200 * time.Millisecond
				c.Client.Attempts = 2
			})
			s := bustest.Server(t)
			b := bustest.Open(t, s, bus.DefaultConfig("engine-bad"))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := b.PublishProbe(ctx, *probeOf(t, 1, ef.ckpt)); err != nil {
				t.Fatal(err)
			}
			if err := b.PublishWeights(ctx, 1, ef.ckpt); err != nil {
				t.Fatal(err)
			}
			run := runActor(t, b, e, "engine")
			var tasks []wire.Task
			for i, p := range []string{"1+2", "99-98", "3*4", "5-1"} {
				tk := engineTask(t, fmt.Sprintf("t%d", i), p, 2, int64(i), 1)
				tk.MinVersion = 1
				tasks = append(tasks, tk)
			}
			publishTasks(t, ctx, b, tasks...)
			bustest.Eventually(t, 40*time.Second, "TASKS drained", func() bool { return streamMsgs(t, ctx, b, bus.Tasks) == 0 })
			ids, _ := rolloutIDs(t, ctx, b)
			want := map[string]bool{"t0/0": true, "t0/1": true, "t2/0": true, "t2/1": true, "t3/0": true, "t3/1": true}
			if len(ids) != len(want) {
				t.Fatalf("ROLLOUTS %v, want %v", ids, want)
			}
			for _, id := range ids {
				if !want[id] {
					t.Fatalf("ROLLOUTS holds %s", id)
				}
			}
			dl := deadLetters(t, ctx, b)
			if len(dl) != 1 || !strings.Contains(dl[0].Reason, tc.reason) || !strings.Contains(dl[0].Reason, "delivery 3") {
				t.Fatalf("dead letters %+v, want one for the bad task with %q", dl, tc.reason)
			}
			if proxy.hits.Load() < 3 {
				t.Fatalf("the bad task was tried %d times, want it retried", proxy.hits.Load())
			}
			// The actor is still up and serves a new task.
			publishTasks(t, ctx, b, func() wire.Task { tk := engineTask(t, "t9", "2+2", 1, 9, 1); tk.MinVersion = 1; return tk }())
			bustest.Eventually(t, 20*time.Second, "a later task served", func() bool { return streamMsgs(t, ctx, b, bus.Rollouts) == 7 })
			run.stop()
		})
	}
}

func deadLetters(t *testing.T, ctx context.Context, b *bus.Bus) []wire.DeadLetter {
	t.Helper()
	st, err := b.Stream(ctx, bus.Dead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var dl wire.DeadLetter
		if err := wire.Decode(m.Data, &dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, dl)
	}
	return out
}

// TestEngineDiesMidRequest: the engine process goes away while a task is
// being sampled; the task goes back to the queue (the engine is down, which
// is not the task's fault), the actor stays up, and when an engine is back
// on the same address every task is served, none lost or half-written.
func TestEngineDiesMidRequest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	ckpt := tinyCheckpoint(t, 5)
	if err := os.WriteFile(path, ckpt, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	scfg := server.DefaultConfig(engine.APIVLLM, path)
	scfg.Workers = 1
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	// The first server hangs every generation until it is killed.
	var inGen atomic.Bool
	hang := make(chan struct{})
	h := srv.Handler()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/inference/v1/generate" && !strings.Contains(r.URL.RawQuery, "x") {
			body, _ := io.ReadAll(r.Body)
			if !strings.Contains(string(body), `"prompt_logprobs"`) { // not the probe
				inGen.Store(true)
				<-hang
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = hs.Serve(ln) }()

	e := newEngineBackend(t, engine.APIVLLM, "http://"+addr, func(c *EngineConfig) {
		c.HealthWait = 300 * time.Millisecond
		c.Client.Attempts = 1
	})
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("engine-dies"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.PublishProbe(ctx, *probeOf(t, 1, ckpt)); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishWeights(ctx, 1, ckpt); err != nil {
		t.Fatal(err)
	}
	run := runActor(t, b, e, "engine")
	tasks := []wire.Task{engineTask(t, "t0", "1+2", 3, 1, 1), engineTask(t, "t1", "4*5", 3, 2, 1)}
	for i := range tasks {
		tasks[i].MinVersion = 1
	}
	publishTasks(t, ctx, b, tasks...)
	bustest.Eventually(t, 20*time.Second, "a generation in flight", inGen.Load)
	// Kill the engine mid-request: connections cut, nothing listening.
	_ = hs.Close()
	close(hang)
	time.Sleep(800 * time.Millisecond)
	if n := streamMsgs(t, ctx, b, bus.Rollouts); n != 0 {
		t.Fatalf("%d trajectories stored while the engine was dead", n)
	}
	if n := streamMsgs(t, ctx, b, bus.Dead); n != 0 {
		t.Fatalf("%d tasks dead-lettered because the engine died", n)
	}
	// A new engine on the same address (the same weights: a restarted
	// server loads its checkpoint, here v1's).
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv2, _ := server.New(scfg)
	hs2 := &http.Server{Handler: srv2.Handler()}
	go func() { _ = hs2.Serve(ln2) }()
	t.Cleanup(func() { _ = hs2.Close() })
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Logf("engine version %d, refused %v, rollouts %d\n%s", e.Version(), e.Refused(), streamMsgs(t, ctx, b, bus.Rollouts), buf[:n])
		}
	}()
	bustest.Eventually(t, 30*time.Second, "every task served after the restart", func() bool {
		return streamMsgs(t, ctx, b, bus.Rollouts) == 6 && streamMsgs(t, ctx, b, bus.Tasks) == 0
	})
	ids, last := rolloutIDs(t, ctx, b)
	if len(ids) != 6 || last != 6 {
		t.Fatalf("ROLLOUTS %v (last seq %d), want the 6 trajectories once", ids, last)
	}
	if n := srv2.Stats().Reloads; n != 1 {
		t.Fatalf("the restarted engine was reloaded %d times, want once (its launch weights are not trusted)", n)
	}
	run.stop()
}
