// Package server serves the built-in policy over HTTP in the request and
// response shapes of vLLM (token-in/token-out generate, completions with
// token-id prompts, weight reload through collective_rpc, pause/resume,
// prefix-cache reset) or SGLang (/generate with input_ids,
// update_weights_from_disk, pause/continue_generation, flush_cache, weight
// version), so that the engine clients and engine actors run end to end
// against a real server generating with a real model (GPU.md "Testing
// without GPUs").
//
// Like vLLM, the server keeps a prefix cache that a weight reload does not
// drop: here it caches prompt log-probs, keyed by the request's cache salt and
// prompt ids. A client that neither resets the cache nor salts its requests
// with the weight version is served numbers computed under the old weights,
// which is the failure the engine actors' probe and cache handling guard
// against.
//
// Generation runs on Workers clones of the model, one request at a time
// each. A request with n completions and seed s draws them in one batch
// from the random stream actor.Builtin's SampleTask uses for a task of seed
// s, so a run through the server reproduces a run on the built-in actor.
package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exgrpo/exgrpo/policy"
)

// APIs the server speaks.
const (
	APIVLLM   = "vllm"
	APISGLang = "sglang"
)

// SampleStream is the PCG stream of a request's random numbers: the one
// actor.Builtin.SampleTask draws a task from (its seedStream + 1), so that
// the same seed gives the same completions through the server.
const SampleStream = 0x6163746f72 + 1

// ErrServer marks a bad configuration or checkpoint.
var ErrServer = errors.New("engine server")

// Config of a Server.
type Config struct {
	API        string // APIVLLM or APISGLang: which endpoints are served
	Checkpoint string // policy checkpoint file (or a directory holding one)
	Addr       string // listen address for Run, e.g. 127.0.0.1:8000 (":0" picks a port)
	Model      string // model name in /v1/models; default "exgrpo-builtin"
	// Workers bounds generations running at once (each on its own model
	// clone); more requests queue. Default GOMAXPROCS.
	Workers int
	// LogprobsMode is what /server_info reports (vLLM's --logprobs-mode);
	// default "processed_logprobs".
	LogprobsMode string
	// StaleReload makes every reload answer success but keep the old
	// weights: the reported vLLM bug the engine actors' probe catches. For
	// tests.
	StaleReload bool
}

// DefaultConfig returns the defaults above.
func DefaultConfig(api, checkpoint string) Config {
	return Config{API: api, Checkpoint: checkpoint, Addr: "127.0.0.1:8000", Model: "exgrpo-builtin",
		Workers: runtime.GOMAXPROCS(0), LogprobsMode: "processed_logprobs"}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	switch {
	case c.API != APIVLLM && c.API != APISGLang:
		return fmt.Errorf("%w: --api %q (want vllm or sglang)", ErrServer, c.API)
	case c.Checkpoint == "":
		return fmt.Errorf("%w: no checkpoint (--checkpoint FILE)", ErrServer)
	case c.Workers < 1:
		return fmt.Errorf("%w: workers %d < 1", ErrServer, c.Workers)
	case c.Model == "":
		return fmt.Errorf("%w: empty model name", ErrServer)
	}
	return nil
}

// Server is one engine. Build with New; serve Handler() or Run.
type Server struct {
	cfg Config

	mu      sync.RWMutex // weights: generations hold it shared, a reload exclusively
	ck      policy.Checkpoint
	version string
	gen     int64 // bumped by every reload; workers re-clone when behind

	pool chan *worker

	pmu     sync.Mutex
	resumed chan struct{} // closed while not paused

	cmu   sync.Mutex
	cache map[string][]float32 // salt + prompt -> prompt log-probs (see the package comment)
	hits  atomic.Int64

	requests atomic.Int64
	reloads  atomic.Int64
}

type worker struct {
	gen int64
	m   *policy.Model
}

// New loads the checkpoint and returns a server that is not paused.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ck, err := loadCheckpoint(cfg.Checkpoint)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ck: ck, version: ck.Meta["exgrpo.version"], pool: make(chan *worker, cfg.Workers),
		resumed: make(chan struct{}), cache: map[string][]float32{}}
	if s.version == "" {
		s.version = "0"
	}
	close(s.resumed)
	for range cfg.Workers {
		s.pool <- &worker{gen: -1}
	}
	return s, nil
}

// loadCheckpoint reads a checkpoint file, or the one *.safetensors file of a
// directory (model.safetensors first).
func loadCheckpoint(path string) (policy.Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return policy.Checkpoint{}, fmt.Errorf("%w: %v", ErrServer, err)
	}
	if st.IsDir() {
		file := filepath.Join(path, "model.safetensors")
		if _, err := os.Stat(file); err != nil {
			matches, _ := filepath.Glob(filepath.Join(path, "*.safetensors"))
			if len(matches) != 1 {
				return policy.Checkpoint{}, fmt.Errorf("%w: %s holds %d .safetensors files and no model.safetensors", ErrServer, path, len(matches))
			}
			file = matches[0]
		}
		path = file
	}
	ck, err := policy.LoadFile(path)
	if err != nil {
		return policy.Checkpoint{}, fmt.Errorf("%w: %w", ErrServer, err)
	}
	if ck.Tokenizer == nil {
		return policy.Checkpoint{}, fmt.Errorf("%w: %s carries no tokenizer", ErrServer, path)
	}
	return ck, nil
}

// Run serves on cfg.Addr until ctx ends. ready, when not nil, receives the
// bound address once listening.
func (s *Server) Run(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("engine server: listen %s: %w", s.cfg.Addr, err)
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then closes it.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("engine server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	<-errc
	return nil
}

// Stats are counters for tests and logs.
type Stats struct {
	Requests  int64 // generation and scoring requests served
	CacheHits int64 // prompt log-probs answered from the prefix cache
	Reloads   int64 // weight reloads answered with success
	Version   string
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.RLock()
	v := s.version
	s.mu.RUnlock()
	return Stats{Requests: s.requests.Load(), CacheHits: s.hits.Load(), Reloads: s.reloads.Load(), Version: v}
}

// waitResumed blocks while the server is paused.
func (s *Server) waitResumed(ctx context.Context) error {
	s.pmu.Lock()
	ch := s.resumed
	s.pmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pause stops new generations and waits for those running to finish.
func (s *Server) pause() {
	s.pmu.Lock()
	select {
	case <-s.resumed:
		s.resumed = make(chan struct{})
	default: // already paused
	}
	s.pmu.Unlock()
	s.mu.Lock() // waits for running generations
	s.mu.Unlock()
}

func (s *Server) resume() {
	s.pmu.Lock()
	select {
	case <-s.resumed:
	default:
		close(s.resumed)
	}
	s.pmu.Unlock()
}

// reload installs the checkpoint at path under version ("" keeps the
// checkpoint's own, else the old one plus one).
func (s *Server) reload(path, version string) error {
	ck, err := loadCheckpoint(path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ck.Model.Config != ck.Model.Config {
		return fmt.Errorf("%w: %s has shape %+v, the server %+v", ErrServer, path, ck.Model.Config, s.ck.Model.Config)
	}
	if version == "" {
		version = ck.Meta["exgrpo.version"]
	}
	if version == "" {
		n, _ := strconv.Atoi(s.version)
		version = strconv.Itoa(n + 1)
	}
	s.version = version
	s.reloads.Add(1)
	if s.cfg.StaleReload {
		return nil // the fault: success, new name, old weights
	}
	s.ck = ck
	s.gen++
	return nil
}

func (s *Server) flush() {
	s.cmu.Lock()
	s.cache = map[string][]float32{}
	s.cmu.Unlock()
}

// genRequest is a generation in the server's own terms.
type genRequest struct {
	prompt      []int32
	n           int
	temp, topP  float32
	maxTokens   int
	seed        int64
	stopIDs     []int32
	ignoreEOS   bool // generate maxTokens tokens whatever is sampled
	topK        int  // top log-probs per token (0: none)
	promptLP    bool // return prompt log-probs
	salt        string
	vllmTopKDup bool // vLLM lists the sampled token first among its top log-probs
}

type genOut struct {
	tokens   []int32
	logProbs []float32
	top      [][]topEntry
	text     string
	finish   string // "stop" or "length"
}

type topEntry struct {
	id int32
	lp float32
}

// httpError carries a status for the handlers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// generate runs one request: n completions of the prompt in one batch.
func (s *Server) generate(ctx context.Context, r genRequest) ([]genOut, []float32, error) {
	if err := s.waitResumed(ctx); err != nil {
		return nil, nil, err
	}
	var w *worker
	select {
	case w = <-s.pool:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer func() { s.pool <- w }()
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.requests.Add(1)
	if w.gen != s.gen {
		w.m, w.gen = s.ck.Model.Clone(), s.gen
	}
	tok := s.ck.Tokenizer
	cfg := w.m.Config
	if len(r.prompt) == 0 {
		return nil, nil, badRequest("empty prompt")
	}
	for i, id := range r.prompt {
		if id < 0 || int(id) >= cfg.Vocab {
			return nil, nil, badRequest("prompt token %d: id %d outside the vocabulary of %d", i, id, cfg.Vocab)
		}
	}
	if r.n < 1 {
		return nil, nil, badRequest("n %d < 1", r.n)
	}
	if r.maxTokens < 1 || len(r.prompt)+r.maxTokens > cfg.Context {
		return nil, nil, badRequest("prompt of %d tokens plus max tokens %d exceed max_model_len %d", len(r.prompt), r.maxTokens, cfg.Context)
	}
	if !(r.temp > 0) {
		return nil, nil, badRequest("temperature %v: only sampling (> 0) is served", r.temp)
	}
	if !(r.topP > 0 && r.topP <= 1) {
		return nil, nil, badRequest("top_p %v outside (0, 1]", r.topP)
	}
	eos := int32(-1)
	for _, id := range r.stopIDs {
		if id != tok.EOS() {
			return nil, nil, badRequest("stop token id %d: only the tokenizer's EOS (%d) is supported", id, tok.EOS())
		}
		eos = id
	}
	if r.ignoreEOS {
		eos = -1
	}
	var plp []float32
	if r.promptLP {
		var err error
		if plp, err = s.promptLogProbs(w.m, r.salt, r.prompt); err != nil {
			return nil, nil, err
		}
	}
	prompts := make([][]int32, r.n)
	for i := range prompts {
		prompts[i] = r.prompt
	}
	rng := rand.New(rand.NewPCG(uint64(r.seed), SampleStream))
	sampled, err := w.m.Sample(prompts, policy.SampleOptions{Temperature: r.temp, TopP: r.topP, MaxNew: r.maxTokens, EOS: eos}, rng)
	if err != nil {
		return nil, nil, badRequest("%v", err)
	}
	outs := make([]genOut, len(sampled))
	var dists [][][]float32
	if r.topK > 0 {
		seqs := make([]policy.Seq, len(sampled))
		for i, sm := range sampled {
			seqs[i] = policy.Seq{Tokens: append(append([]int32(nil), r.prompt...), sm.Tokens...), PromptLen: len(r.prompt)}
		}
		if dists, err = w.m.LogSoftmax(seqs, r.temp); err != nil {
			return nil, nil, err
		}
	}
	for i, sm := range sampled {
		o := genOut{tokens: sm.Tokens, logProbs: sm.LogProbs, text: tok.Decode(sm.Tokens), finish: "length"}
		if sm.Finish == policy.FinishEOS {
			o.finish = "stop"
		}
		if dists != nil {
			o.top = make([][]topEntry, len(sm.Tokens))
			for j, row := range dists[i] {
				o.top[j] = topOf(row, r.topK, sm.Tokens[j], r.vllmTopKDup)
			}
		}
		outs[i] = o
	}
	return outs, plp, nil
}

// topOf lists the k most likely tokens of a log-distribution, highest
// first. vLLM-style (sampledFirst): the sampled token first, then the top
// tokens without it, k entries in all.
func topOf(row []float32, k int, sampled int32, sampledFirst bool) []topEntry {
	idx := make([]int, len(row))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
	out := make([]topEntry, 0, k)
	if sampledFirst {
		out = append(out, topEntry{sampled, row[sampled]})
	}
	for _, v := range idx {
		if len(out) == k {
			break
		}
		if sampledFirst && int32(v) == sampled {
			continue
		}
		out = append(out, topEntry{int32(v), row[v]})
	}
	return out
}

// promptLogProbs returns the log-probs of prompt[1:] (T=1), from the
// prefix cache when the same salt and prompt were scored before.
func (s *Server) promptLogProbs(m *policy.Model, salt string, prompt []int32) ([]float32, error) {
	var b strings.Builder
	b.WriteString(salt)
	b.WriteByte('|')
	for _, id := range prompt {
		b.WriteString(strconv.Itoa(int(id)))
		b.WriteByte(',')
	}
	key := b.String()
	s.cmu.Lock()
	lp, ok := s.cache[key]
	s.cmu.Unlock()
	if ok {
		s.hits.Add(1)
		return lp, nil
	}
	if len(prompt) < 2 {
		return nil, nil
	}
	lps, _, err := m.Score([]policy.Seq{{Tokens: prompt, PromptLen: 1}})
	if err != nil {
		return nil, badRequest("%v", err)
	}
	s.cmu.Lock()
	if len(s.cache) > 1<<16 { // bounded: drop everything rather than grow
		s.cache = map[string][]float32{}
	}
	s.cache[key] = lps[0]
	s.cmu.Unlock()
	return lps[0], nil
}
