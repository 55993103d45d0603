// Package engine is the client side of the inference engines an engine actor
// drives (GPU.md "Engine actors"): vLLM, token-in/token-out through
// POST /inference/v1/generate or, on older builds, /v1/completions with
// token-id prompts; and SGLang, POST /generate with input_ids. A Client sends
// every sampling parameter explicitly, keeps up to MaxInFlight requests in
// flight so that the engine batches them, retries transport failures with
// backoff, and checks every answer (ids in the vocabulary, log-probs finite
// and <= 0, lengths that agree, a known finish reason) before it returns it:
// a bad answer is an error wrapping ErrBadAnswer, never a completion.
//
// The package has no NATS and no policy: it speaks HTTP and JSON. Package
// engine/server serves the built-in model in both request shapes, so the
// clients run end to end against a real server generating with a real model.
package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// APIs a Client speaks.
const (
	APIVLLM   = "vllm"
	APISGLang = "sglang"
)

// vLLM endpoints (Config.Endpoint).
const (
	EndpointGenerate    = "generate"    // POST /inference/v1/generate (vLLM >= 0.12)
	EndpointCompletions = "completions" // POST /v1/completions with return_token_ids (vLLM >= 0.10.2)
)

// Finish reasons of a Completion.
const (
	FinishEOS    = "eos"    // a stop token was sampled (it is the last token)
	FinishLength = "length" // MaxTokens reached
)

// Errors; test with errors.Is.
var (
	// ErrBadAnswer: the engine answered, but the answer fails validation
	// (or does not parse). The request may be retried; it is never a
	// completion.
	ErrBadAnswer = errors.New("engine: bad answer")
	// ErrUnavailable: no answer after every attempt (connection refused or
	// reset, timeout, HTTP 5xx or 429).
	ErrUnavailable = errors.New("engine: unavailable")
	// ErrRejected: the engine refused the request (HTTP 4xx other than 429).
	ErrRejected = errors.New("engine: request rejected")
	// ErrConfig: a Config or Request that cannot work.
	ErrConfig = errors.New("engine: bad configuration")
	// ErrLogprobsMode: the server reports log-probs that are not those of
	// the sampling distribution (vLLM without --logprobs-mode
	// processed_logprobs).
	ErrLogprobsMode = errors.New("engine: server log-probs are not the sampling distribution's")
)

// Config says how to reach and drive one engine.
type Config struct {
	API string // APIVLLM or APISGLang
	URL string // base URL, e.g. http://127.0.0.1:8000
	// Endpoint (vLLM only): EndpointGenerate (default) or EndpointCompletions.
	Endpoint string
	// Model is the model name sent to vLLM; empty takes the first model of
	// GET /v1/models.
	Model string
	// MaxInFlight bounds the requests this client has open at once (callers
	// beyond it wait for a slot); default 64.
	MaxInFlight int
	// RequestTimeout bounds one attempt of one request; default 10m (a
	// long response on a busy engine).
	RequestTimeout time.Duration
	// ControlTimeout bounds one attempt of a control call (health, pause,
	// reload, ...); default 2m.
	ControlTimeout time.Duration
	// Attempts per request, the first included; default 3. Only transport
	// failures (ErrUnavailable) are retried here; a bad answer is returned
	// to the caller, which decides.
	Attempts int
	// Backoff is the delay before the second attempt, doubled after each;
	// default 250ms.
	Backoff time.Duration
	// Vocab is the vocabulary size answers are checked against; 0 takes it
	// from GET /v1/models when the server reports it ("vocab_size"), and
	// Start fails when it cannot be known.
	Vocab int
}

// DefaultConfig returns the defaults above for api at url.
func DefaultConfig(api, url string) Config {
	return Config{API: api, URL: url, Endpoint: EndpointGenerate, MaxInFlight: 64, RequestTimeout: 10 * time.Minute,
		ControlTimeout: 2 * time.Minute, Attempts: 3, Backoff: 250 * time.Millisecond}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	switch c.API {
	case APIVLLM, APISGLang:
	default:
		return fmt.Errorf("%w: API %q (want %q or %q)", ErrConfig, c.API, APIVLLM, APISGLang)
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: URL %q is not an http(s) URL with a host", ErrConfig, c.URL)
	}
	if c.API == APIVLLM && c.Endpoint != EndpointGenerate && c.Endpoint != EndpointCompletions {
		return fmt.Errorf("%w: vLLM endpoint %q (want %q or %q)", ErrConfig, c.Endpoint, EndpointGenerate, EndpointCompletions)
	}
	if c.MaxInFlight < 1 || c.Attempts < 1 {
		return fmt.Errorf("%w: MaxInFlight and Attempts must be >= 1 (start from DefaultConfig)", ErrConfig)
	}
	if c.RequestTimeout <= 0 || c.ControlTimeout <= 0 || c.Backoff <= 0 {
		return fmt.Errorf("%w: timeouts and backoff must be positive (start from DefaultConfig)", ErrConfig)
	}
	if c.Vocab < 0 {
		return fmt.Errorf("%w: Vocab %d < 0", ErrConfig, c.Vocab)
	}
	return nil
}

// Request asks for N completions of one prompt. Every field is sent.
type Request struct {
	Prompt       []int32 // prompt token ids, BOS included (engines add none)
	N            int     // completions, >= 1
	Temperature  float32 // > 0
	TopP         float32 // in (0, 1]; actors send 1 (the trainer applies no nucleus filter, GPU.md), evaluation may not
	MaxTokens    int     // response token cap, >= 1
	Seed         int64   // the request's seed: the same seed, weights and prompt give the same completions
	StopTokenIDs []int32 // every EOS id; a completion ends after sampling one
	TopLogProbs  int     // top-k log-probs per token to return besides the sampled one (0: none)
	CacheSalt    string  // prefix-cache salt (vLLM cache_salt); empty: none
	// IgnoreEOS generates MaxTokens tokens whatever is sampled (vLLM and
	// SGLang ignore_eos): for benchmarks only, never for training.
	IgnoreEOS bool
}

func (r Request) validate() error {
	switch {
	case len(r.Prompt) == 0:
		return fmt.Errorf("%w: empty prompt", ErrConfig)
	case r.N < 1:
		return fmt.Errorf("%w: N %d < 1", ErrConfig, r.N)
	case !(r.Temperature > 0):
		return fmt.Errorf("%w: temperature %v must be > 0", ErrConfig, r.Temperature)
	case !(r.TopP > 0 && r.TopP <= 1):
		return fmt.Errorf("%w: top_p %v outside (0, 1]", ErrConfig, r.TopP)
	case r.MaxTokens < 1:
		return fmt.Errorf("%w: max tokens %d < 1", ErrConfig, r.MaxTokens)
	case len(r.StopTokenIDs) == 0:
		return fmt.Errorf("%w: no stop token ids (the engine would fall back to its generation config)", ErrConfig)
	case r.TopLogProbs < 0:
		return fmt.Errorf("%w: top log-probs %d < 0", ErrConfig, r.TopLogProbs)
	}
	return nil
}

// TokenLogProb is one entry of a top-k list.
type TokenLogProb struct {
	ID      int32
	LogProb float32
}

// Completion is one validated answer. LogProbs are the engine's log-probs
// of the sampled tokens under the sampling distribution (temperature
// applied); Top, when asked for, the top-k entries per token.
type Completion struct {
	Tokens   []int32 // response ids, the stop token included when sampled
	LogProbs []float32
	Top      [][]TokenLogProb // nil unless Request.TopLogProbs > 0
	Text     string           // the engine's detokenized response (special tokens kept)
	Finish   string           // FinishEOS or FinishLength
	// WeightVersion is the weight version the engine says answered (SGLang
	// meta_info.weight_version); "" when it does not say.
	WeightVersion string
}

// Info is what the server says about itself.
type Info struct {
	Model       string
	MaxModelLen int // prompt + response tokens
	Vocab       int // 0 when the server does not say
	// LogprobsMode is vLLM's --logprobs-mode when the server reports it
	// (GET /server_info, dev mode); empty when it cannot be known.
	LogprobsMode string
}

// Client drives one engine. Implementations are safe for concurrent use.
type Client interface {
	// Start reads the server's Info, fills what the Config left open
	// (model, vocabulary) and refuses a server whose log-probs are not the
	// sampling distribution's (ErrLogprobsMode), where that can be told.
	Start(ctx context.Context) (Info, error)
	// Health returns nil when the engine can generate.
	Health(ctx context.Context) error
	// Generate returns r.N validated completions, in order.
	Generate(ctx context.Context, r Request) ([]Completion, error)
	// Score returns the temperature-1 log-probs of tokens[start:], each
	// given the tokens before it (prompt log-probs), validated; start >= 1.
	Score(ctx context.Context, tokens []int32, start int, salt string) ([]float32, error)
	// Pause stops generation (requests in flight finish first, where the
	// engine can), Resume restarts it.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Reload loads the weights in dir and names them version.
	Reload(ctx context.Context, dir string, version int64) error
	// ResetCache drops the prefix cache.
	ResetCache(ctx context.Context) error
	// WeightVersion is the version the engine says it holds; "" when it
	// cannot say.
	WeightVersion(ctx context.Context) (string, error)
	// Tokenize applies the served model's chat template to messages (with
	// the generation prompt) and returns the token ids: vLLM's
	// POST /tokenize. For evaluation; training prompts come from the
	// learner's tokenizer.
	Tokenize(ctx context.Context, messages []Message) ([]int32, error)
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// New returns the client of cfg.API. Call Start before Generate.
func New(cfg Config) (Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := newTransport(cfg)
	if cfg.API == APIVLLM {
		return &vllm{t: t, cfg: cfg, vocab: cfg.Vocab}, nil
	}
	return &sglang{t: t, cfg: cfg, vocab: cfg.Vocab}, nil
}
