// Package engineactor measures what an engine actor costs besides the
// engine: for 1,024-token responses with 64 requests in flight, the wall
// time the engine takes per trajectory against the actor's own work per
// trajectory (request, HTTP round trip on loopback, JSON decoding,
// validation, entropy estimate, detokenization call, wire encoding). The
// goal (issue 13) is at most 5% of a rollout's wall time.
//
// The engine is the built-in model (a 1,100-token-context variant of the
// built-in shape, random weights) behind the vLLM-shaped server; its answers
// are recorded, then replayed instantly by a stand-in that does no
// generation, so that the second phase times the actor alone.
package engineactor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/engine/server"
	"github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
)

// Config of one measurement.
type Config struct {
	Requests    int // trajectories (one request each, n = 1); default 64
	InFlight    int // requests open at once; default 64
	Tokens      int // response tokens (ignore_eos); default 1024
	TopLogProbs int // top-k log-probs per token (0: none) and the top-k lower bound as entropy
	API         string
	Workers     int // engine generations at once; default GOMAXPROCS
}

// DefaultConfig is the setting.
func DefaultConfig() Config {
	return Config{Requests: 64, InFlight: 64, Tokens: 1024, API: engine.APIVLLM, Workers: runtime.GOMAXPROCS(0)}
}

// Result holds the figures.
type Result struct {
	Config
	EngineWall        time.Duration // all requests through the real engine
	EnginePerTraj     time.Duration // mean latency of one request (the engine's time for a trajectory, as the actor sees it)
	ActorPerTraj      time.Duration // the actor's own wall time per trajectory (replayed answers, one at a time)
	ActorCPUPerTraj   time.Duration // process CPU time per trajectory in the replay phase (actor plus the stand-in server)
	AnswerBytes       int           // mean engine answer size
	TrajectoryBytes   int           // mean encoded trajectory size
	OverheadOfRollout float64       // ActorPerTraj / (EnginePerTraj + ActorPerTraj)
}

func (r Result) String() string {
	return fmt.Sprintf("%d x %d-token responses, %d in flight (%s): engine %.2fs per trajectory (%.1fs for all); actor %.0fµs per trajectory (CPU %.0fµs) = %.3f%% of a rollout; answer %d B, trajectory %d B",
		r.Requests, r.Tokens, r.InFlight, r.API, r.EnginePerTraj.Seconds(), r.EngineWall.Seconds(),
		float64(r.ActorPerTraj.Microseconds()), float64(r.ActorCPUPerTraj.Microseconds()), 100*r.OverheadOfRollout, r.AnswerBytes, r.TrajectoryBytes)
}

// recorder keeps the generate answers the engine gives.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	gens [][]byte
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/inference/v1/generate" && r.URL.Path != "/generate" {
		rc.h.ServeHTTP(w, r)
		return
	}
	rw := httptest.NewRecorder()
	rc.h.ServeHTTP(rw, r)
	body := rw.Body.Bytes()
	if rw.Code == http.StatusOK {
		if bytes.Contains(body, []byte(`"prompt_logprobs"`)) || bytes.Contains(body, []byte(`"input_token_logprobs"`)) {
			// probe scoring, not a trajectory
		} else {
			rc.mu.Lock()
			rc.gens = append(rc.gens, bytes.Clone(body))
			rc.mu.Unlock()
		}
	}
	for k, v := range rw.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rw.Code)
	_, _ = w.Write(body)
}

// Measure runs both phases.
func Measure(ctx context.Context, cfg Config) (Result, error) {
	res := Result{Config: cfg}
	mcfg := task.ModelConfig()
	mcfg.Context = 1 + task.MaxPromptChars + len(task.PromptSeparator) + cfg.Tokens
	m, err := policy.New(mcfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return res, err
	}
	tok := task.BuiltinTokenizer()
	dir, err := os.MkdirTemp("", "exgrpo-engine-bench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	var ck bytes.Buffer
	if err := policy.WriteCheckpoint(&ck, policy.Checkpoint{Model: m, Tokenizer: tok}); err != nil {
		return res, err
	}
	path := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(path, ck.Bytes(), 0o644); err != nil {
		return res, err
	}
	scfg := server.DefaultConfig(cfg.API, path)
	scfg.Workers = cfg.Workers
	srv, err := server.New(scfg)
	if err != nil {
		return res, err
	}
	rec := &recorder{h: srv.Handler()}
	hs := httptest.NewServer(rec)
	defer hs.Close()
	probe, err := service.Probe(1, m, tok)
	if err != nil {
		return res, err
	}
	tasks := make([]wire.Task, cfg.Requests)
	for i := range tasks {
		p := task.Problem{ID: fmt.Sprint(i), Prompt: fmt.Sprintf("%d+%d*%d", i, i%7, i%5)}
		ids, err := task.EncodePrompt(tok, p)
		if err != nil {
			return res, err
		}
		tasks[i] = wire.Task{TaskID: p.ID, QuestionID: p.ID, Prompt: p.Prompt, Answer: "0", Kind: task.KindArith, Samples: 1,
			MaxNew: cfg.Tokens, Temp: 1, Seed: int64(i), PromptTokens: ids}
	}
	backend := func(url string) (*actor.Engine, error) {
		ec := actor.DefaultEngineConfig(cfg.API, url)
		ec.Client.MaxInFlight, ec.MaxTasks, ec.IgnoreEOS, ec.WeightsDir = cfg.InFlight, cfg.InFlight, true, filepath.Join(dir, "w")
		ec.TopLogProbs = cfg.TopLogProbs
		if cfg.TopLogProbs > 0 {
			ec.EntropyKind = wire.EntropyTopKLower
		}
		e, err := actor.NewEngine(ctx, ec, nil)
		if err != nil {
			return nil, err
		}
		return e, e.LoadProbe(ctx, 1, ck.Bytes(), &probe)
	}

	// Phase 1: the real engine, InFlight requests at once.
	e, err := backend(hs.URL)
	if err != nil {
		return res, err
	}
	lat := make([]time.Duration, len(tasks))
	sem := make(chan struct{}, cfg.InFlight)
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for i := range tasks {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			if _, err := e.SampleTask(ctx, tasks[i]); err != nil {
				failed.Store(err)
			}
			lat[i] = time.Since(t0)
		})
	}
	wg.Wait()
	res.EngineWall = time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		return res, fmt.Errorf("engine phase: %w", err)
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	res.EnginePerTraj = sum / time.Duration(len(lat))
	if len(rec.gens) != len(tasks) {
		return res, fmt.Errorf("recorded %d answers for %d requests", len(rec.gens), len(tasks))
	}
	// The replay serves the answers in arrival order: each is a valid
	// completion of some prompt of the run, and the actor does not check
	// which (it cannot: ids are all it gets).
	for _, g := range rec.gens {
		res.AnswerBytes += len(g)
	}
	res.AnswerBytes /= len(rec.gens)

	// Phase 2: the same answers from a stand-in that only writes them.
	var next atomic.Int64
	stand := http.NewServeMux()
	stand.Handle("/", srv.Handler()) // models, health, detokenize, probe scoring, control
	replay := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"prompt_logprobs"`)) || bytes.Contains(body, []byte(`"logprob_start_len":1`)) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			srv.Handler().ServeHTTP(w, r)
			return
		}
		g := rec.gens[int(next.Add(1)-1)%len(rec.gens)]
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(g)
	}
	stand.HandleFunc("/inference/v1/generate", replay)
	stand.HandleFunc("/generate", replay)
	hs2 := httptest.NewServer(stand)
	defer hs2.Close()
	e2, err := backend(hs2.URL)
	if err != nil {
		return res, err
	}
	runtime.GC()
	cpu0 := cpuTime()
	t0 := time.Now()
	for i := range tasks {
		cs, err := e2.SampleTask(ctx, tasks[i])
		if err != nil {
			return res, fmt.Errorf("replay phase: %w", err)
		}
		c := cs[0]
		tr := wire.Trajectory{RunID: "bench", ID: tasks[i].TaskID + "/0", TaskID: tasks[i].TaskID, QuestionID: tasks[i].QuestionID,
			PolicyVersion: 1, ActorID: "bench", PromptTokens: c.PromptTokens, Tokens: c.Tokens, LogProbs: c.LogProbs,
			Entropies: c.Entropies, Text: c.Text, Finish: c.Finish, Answer: tasks[i].Answer, Kind: tasks[i].Kind, EntropyKind: c.EntropyKind}
		data, err := wire.Encode(&tr)
		if err != nil {
			return res, err
		}
		res.TrajectoryBytes += len(data)
	}
	elapsed := time.Since(t0)
	res.ActorCPUPerTraj = (cpuTime() - cpu0) / time.Duration(len(tasks))
	res.ActorPerTraj = elapsed / time.Duration(len(tasks))
	res.TrajectoryBytes /= len(tasks)
	res.OverheadOfRollout = float64(res.ActorPerTraj) / float64(res.EnginePerTraj+res.ActorPerTraj)
	return res, nil
}
