package engine

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// vLLM's wire shapes (vllm/entrypoints/serve/disagg/protocol.py for the
// token-in/token-out endpoint; vllm/entrypoints/openai/.../protocol.py for
// completions; fixtures in testdata/ say which version each shape is from).

// vllmSampling is vLLM's SamplingParams as JSON; every field is sent so
// that nothing falls back to the model's generation_config.
type vllmSampling struct {
	N                 int     `json:"n"`
	Temperature       float32 `json:"temperature"`
	TopP              float32 `json:"top_p"`
	TopK              int     `json:"top_k"`
	MinP              float32 `json:"min_p"`
	Seed              int64   `json:"seed"`
	MaxTokens         int     `json:"max_tokens"`
	StopTokenIDs      []int32 `json:"stop_token_ids"`
	SkipSpecialTokens bool    `json:"skip_special_tokens"`
	IgnoreEOS         bool    `json:"ignore_eos"`
	Logprobs          *int    `json:"logprobs"`
	PromptLogprobs    *int    `json:"prompt_logprobs,omitempty"`
	Detokenize        bool    `json:"detokenize"`
}

type vllmGenerateRequest struct {
	Model          string       `json:"model,omitempty"`
	TokenIDs       []int32      `json:"token_ids"`
	SamplingParams vllmSampling `json:"sampling_params"`
	CacheSalt      string       `json:"cache_salt,omitempty"`
	Stream         bool         `json:"stream"`
}

// vllmLogProbEntry is one token of logprobs.content: "token" is
// "token_id:N" (return_tokens_as_token_ids, and always on the generate
// endpoint); newer builds also give the integer "token_id".
type vllmLogProbEntry struct {
	Token       string             `json:"token"`
	TokenID     *int64             `json:"token_id"`
	LogProb     *float64           `json:"logprob"`
	TopLogProbs []vllmLogProbEntry `json:"top_logprobs"`
}

type vllmGenerateResponse struct {
	Choices []struct {
		Index        int     `json:"index"`
		TokenIDs     []int32 `json:"token_ids"`
		FinishReason *string `json:"finish_reason"`
		Text         *string `json:"text"` // absent from vLLM's answer; our server fills it
		Logprobs     *struct {
			Content []vllmLogProbEntry `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	PromptLogprobs []map[string]vllmPromptLogProb `json:"prompt_logprobs"`
}

// vllmPromptLogProb is vLLM's Logprob (prompt_logprobs entries are
// {token id: Logprob}, the first entry null).
type vllmPromptLogProb struct {
	LogProb *float64 `json:"logprob"`
	Rank    *int     `json:"rank"`
}

type vllmCompletionsRequest struct {
	Model                   string  `json:"model,omitempty"`
	Prompt                  []int32 `json:"prompt"`
	N                       int     `json:"n"`
	Temperature             float32 `json:"temperature"`
	TopP                    float32 `json:"top_p"`
	TopK                    int     `json:"top_k"`
	MinP                    float32 `json:"min_p"`
	Seed                    int64   `json:"seed"`
	MaxTokens               int     `json:"max_tokens"`
	StopTokenIDs            []int32 `json:"stop_token_ids"`
	SkipSpecialTokens       bool    `json:"skip_special_tokens"`
	IgnoreEOS               bool    `json:"ignore_eos"`
	Logprobs                int     `json:"logprobs"`
	PromptLogprobs          *int    `json:"prompt_logprobs,omitempty"`
	Echo                    bool    `json:"echo"`
	ReturnTokenIDs          bool    `json:"return_token_ids"`
	ReturnTokensAsTokenIDs  bool    `json:"return_tokens_as_token_ids"`
	IncludeStopStrInOutput  bool    `json:"include_stop_str_in_output"`
	CacheSalt               string  `json:"cache_salt,omitempty"`
	Stream                  bool    `json:"stream"`
	SpacesBetweenSpecialTok bool    `json:"spaces_between_special_tokens"`
}

type vllmCompletionsResponse struct {
	Choices []struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		TokenIDs     []int32 `json:"token_ids"`
		FinishReason *string `json:"finish_reason"`
		Logprobs     *struct {
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []*float64           `json:"token_logprobs"`
			TopLogprobs   []map[string]float64 `json:"top_logprobs"`
		} `json:"logprobs"`
		PromptLogprobs []map[string]vllmPromptLogProb `json:"prompt_logprobs"`
		PromptTokenIDs []int32                        `json:"prompt_token_ids"`
	} `json:"choices"`
}

type vllmModels struct {
	Data []struct {
		ID          string `json:"id"`
		MaxModelLen int    `json:"max_model_len"`
		VocabSize   int    `json:"vocab_size"` // not in vLLM's answer; our server adds it
	} `json:"data"`
}

type vllm struct {
	t     *transport
	cfg   Config
	model string
	vocab int // set by Start, read-only after
}

// tokenOf reads a token id from an entry: the integer token_id when
// present, else "token_id:N".
func tokenOf(token string, id *int64) (int32, error) {
	if id != nil {
		if *id < 0 || *id > 1<<31-1 {
			return 0, fmt.Errorf("token_id %d out of range", *id)
		}
		return int32(*id), nil
	}
	rest, ok := strings.CutPrefix(token, "token_id:")
	if !ok {
		return 0, fmt.Errorf("token %q is not \"token_id:N\" (start vLLM with --return-tokens-as-token-ids or use the generate endpoint)", clip([]byte(token)))
	}
	n, err := strconv.ParseInt(rest, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("token %q: bad id", clip([]byte(token)))
	}
	return int32(n), nil
}

func (v *vllm) Start(ctx context.Context) (Info, error) {
	var ms vllmModels
	if err := v.t.call(ctx, http.MethodGet, "/v1/models", nil, &ms, v.cfg.ControlTimeout); err != nil {
		return Info{}, fmt.Errorf("engine: vllm models: %w", err)
	}
	if len(ms.Data) == 0 {
		return Info{}, fmt.Errorf("%w: vllm /v1/models lists no model", ErrBadAnswer)
	}
	m := ms.Data[0]
	if v.cfg.Model != "" {
		found := false
		for _, d := range ms.Data {
			if d.ID == v.cfg.Model {
				m, found = d, true
			}
		}
		if !found {
			return Info{}, fmt.Errorf("%w: vllm serves no model %q", ErrConfig, v.cfg.Model)
		}
	}
	info := Info{Model: m.ID, MaxModelLen: m.MaxModelLen, Vocab: m.VocabSize}
	if info.MaxModelLen <= 0 {
		return Info{}, fmt.Errorf("%w: vllm model %q has max_model_len %d", ErrBadAnswer, m.ID, m.MaxModelLen)
	}
	v.model = m.ID
	if v.vocab == 0 {
		v.vocab = info.Vocab
	}
	if v.vocab == 0 {
		return Info{}, fmt.Errorf("%w: the server does not report its vocabulary size: set it (--engine-vocab)", ErrConfig)
	}
	info.Vocab = v.vocab
	// The log-probs mode is visible only in dev mode (GET /server_info).
	var si struct {
		Config struct {
			ModelConfig struct {
				LogprobsMode string `json:"logprobs_mode"`
			} `json:"model_config"`
		} `json:"vllm_config"`
	}
	if err := v.t.call(ctx, http.MethodGet, "/server_info?config_format=json", nil, &si, v.cfg.ControlTimeout); err == nil {
		info.LogprobsMode = si.Config.ModelConfig.LogprobsMode
		if info.LogprobsMode != "" && info.LogprobsMode != "processed_logprobs" {
			return info, fmt.Errorf("%w: vllm reports --logprobs-mode %s; start it with --logprobs-mode processed_logprobs", ErrLogprobsMode, info.LogprobsMode)
		}
	}
	return info, nil
}

func (v *vllm) Health(ctx context.Context) error {
	if err := v.t.call(ctx, http.MethodGet, "/health", nil, nil, v.cfg.ControlTimeout); err != nil {
		return fmt.Errorf("engine: vllm health: %w", err)
	}
	return nil
}

func (v *vllm) sampling(r Request) vllmSampling {
	k := r.TopLogProbs // 0: the sampled token's log-prob only
	return vllmSampling{N: r.N, Temperature: r.Temperature, TopP: r.TopP, TopK: -1, MinP: 0, Seed: r.Seed,
		MaxTokens: r.MaxTokens, StopTokenIDs: r.StopTokenIDs, Logprobs: &k, Detokenize: true, IgnoreEOS: r.IgnoreEOS}
}

func (v *vllm) Generate(ctx context.Context, r Request) ([]Completion, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	var raws []rawCompletion
	var err error
	if v.cfg.Endpoint == EndpointCompletions {
		raws, err = v.completions(ctx, r)
	} else {
		raws, err = v.generate(ctx, r)
	}
	if err != nil {
		return nil, err
	}
	return validateAll(r, v.vocab, raws)
}

func (v *vllm) generate(ctx context.Context, r Request) ([]rawCompletion, error) {
	req := vllmGenerateRequest{Model: v.model, TokenIDs: r.Prompt, SamplingParams: v.sampling(r), CacheSalt: r.CacheSalt}
	var resp vllmGenerateResponse
	if err := v.t.call(ctx, http.MethodPost, "/inference/v1/generate", req, &resp, v.cfg.RequestTimeout); err != nil {
		return nil, fmt.Errorf("engine: vllm generate: %w", err)
	}
	raws := make([]rawCompletion, len(resp.Choices))
	for i, ch := range resp.Choices {
		if ch.Index != i {
			return nil, fmt.Errorf("%w: vllm choice %d has index %d", ErrBadAnswer, i, ch.Index)
		}
		c := rawCompletion{tokens: ch.TokenIDs, finish: "(none)"}
		if ch.FinishReason != nil {
			c.finish = finishOf(*ch.FinishReason)
		}
		if ch.Logprobs == nil {
			return nil, fmt.Errorf("%w: vllm choice %d has no logprobs", ErrBadAnswer, i)
		}
		for j, e := range ch.Logprobs.Content {
			id, err := tokenOf(e.Token, e.TokenID)
			if err != nil {
				return nil, fmt.Errorf("%w: vllm choice %d token %d: %v", ErrBadAnswer, i, j, err)
			}
			if j < len(c.tokens) && id != c.tokens[j] {
				return nil, fmt.Errorf("%w: vllm choice %d: log-prob %d is for token %d, token_ids has %d", ErrBadAnswer, i, j, id, c.tokens[j])
			}
			if e.LogProb == nil {
				return nil, fmt.Errorf("%w: vllm choice %d token %d has no log-prob", ErrBadAnswer, i, j)
			}
			c.logProbs = append(c.logProbs, *e.LogProb)
			if r.TopLogProbs > 0 {
				list := make([]TokenLogProb, 0, len(e.TopLogProbs))
				for _, te := range e.TopLogProbs {
					tid, err := tokenOf(te.Token, te.TokenID)
					if err != nil || te.LogProb == nil {
						return nil, fmt.Errorf("%w: vllm choice %d token %d: bad top log-prob entry", ErrBadAnswer, i, j)
					}
					list = append(list, TokenLogProb{ID: tid, LogProb: float32(*te.LogProb)})
				}
				c.top = append(c.top, list)
			}
		}
		if ch.Text != nil {
			c.text = *ch.Text
		} else if len(c.tokens) > 0 {
			text, err := v.detokenize(ctx, c.tokens)
			if err != nil {
				return nil, err
			}
			c.text = text
		}
		raws[i] = c
	}
	return raws, nil
}

func (v *vllm) detokenize(ctx context.Context, ids []int32) (string, error) {
	var out struct {
		Prompt *string `json:"prompt"`
	}
	req := struct {
		Model  string  `json:"model,omitempty"`
		Tokens []int32 `json:"tokens"`
	}{v.model, ids}
	if err := v.t.call(ctx, http.MethodPost, "/detokenize", req, &out, v.cfg.ControlTimeout); err != nil {
		return "", fmt.Errorf("engine: vllm detokenize: %w", err)
	}
	if out.Prompt == nil {
		return "", fmt.Errorf("%w: vllm detokenize answered no text", ErrBadAnswer)
	}
	return *out.Prompt, nil
}

func (v *vllm) completionsRequest(r Request) vllmCompletionsRequest {
	return vllmCompletionsRequest{Model: v.model, Prompt: r.Prompt, N: r.N, Temperature: r.Temperature, TopP: r.TopP, TopK: -1,
		Seed: r.Seed, MaxTokens: r.MaxTokens, StopTokenIDs: r.StopTokenIDs, Logprobs: r.TopLogProbs,
		ReturnTokenIDs: true, ReturnTokensAsTokenIDs: true, IncludeStopStrInOutput: true, CacheSalt: r.CacheSalt, IgnoreEOS: r.IgnoreEOS}
}

func (v *vllm) completions(ctx context.Context, r Request) ([]rawCompletion, error) {
	var resp vllmCompletionsResponse
	if err := v.t.call(ctx, http.MethodPost, "/v1/completions", v.completionsRequest(r), &resp, v.cfg.RequestTimeout); err != nil {
		return nil, fmt.Errorf("engine: vllm completions: %w", err)
	}
	raws := make([]rawCompletion, len(resp.Choices))
	for i, ch := range resp.Choices {
		if ch.Index != i {
			return nil, fmt.Errorf("%w: vllm choice %d has index %d", ErrBadAnswer, i, ch.Index)
		}
		c := rawCompletion{tokens: ch.TokenIDs, text: ch.Text, finish: "(none)"}
		if ch.FinishReason != nil {
			c.finish = finishOf(*ch.FinishReason)
		}
		if ch.Logprobs == nil {
			return nil, fmt.Errorf("%w: vllm choice %d has no logprobs", ErrBadAnswer, i)
		}
		lp := ch.Logprobs
		if len(lp.Tokens) != len(lp.TokenLogprobs) {
			return nil, fmt.Errorf("%w: vllm choice %d: %d tokens, %d token_logprobs", ErrBadAnswer, i, len(lp.Tokens), len(lp.TokenLogprobs))
		}
		if c.tokens == nil { // builds without return_token_ids: the ids are in the tokens
			c.tokens = make([]int32, 0, len(lp.Tokens))
		}
		for j, tok := range lp.Tokens {
			id, err := tokenOf(tok, nil)
			if err != nil {
				return nil, fmt.Errorf("%w: vllm choice %d token %d: %v", ErrBadAnswer, i, j, err)
			}
			if ch.TokenIDs == nil {
				c.tokens = append(c.tokens, id)
			} else if j >= len(c.tokens) || c.tokens[j] != id {
				return nil, fmt.Errorf("%w: vllm choice %d: logprobs token %d is %d, token_ids disagree", ErrBadAnswer, i, j, id)
			}
			if lp.TokenLogprobs[j] == nil {
				return nil, fmt.Errorf("%w: vllm choice %d token %d has no log-prob", ErrBadAnswer, i, j)
			}
			c.logProbs = append(c.logProbs, *lp.TokenLogprobs[j])
		}
		if r.TopLogProbs > 0 {
			for j, m := range lp.TopLogprobs {
				list := make([]TokenLogProb, 0, len(m))
				for tok, l := range m {
					id, err := tokenOf(tok, nil)
					if err != nil {
						return nil, fmt.Errorf("%w: vllm choice %d token %d top: %v", ErrBadAnswer, i, j, err)
					}
					list = append(list, TokenLogProb{ID: id, LogProb: float32(l)})
				}
				sortTop(list)
				c.top = append(c.top, list)
			}
		}
		raws[i] = c
	}
	return raws, nil
}

// promptScores reads prompt_logprobs ({id: Logprob} per position, the
// first null) for tokens[start:].
func promptScores(pl []map[string]vllmPromptLogProb, tokens []int32, start int) ([]float32, error) {
	if len(pl) != len(tokens) {
		return nil, fmt.Errorf("%w: %d prompt_logprobs entries for %d prompt tokens", ErrBadAnswer, len(pl), len(tokens))
	}
	lps := make([]float64, 0, len(tokens)-start)
	for j := start; j < len(tokens); j++ {
		e, ok := pl[j][strconv.Itoa(int(tokens[j]))]
		if !ok || e.LogProb == nil {
			return nil, fmt.Errorf("%w: prompt_logprobs %d lacks the prompt token %d", ErrBadAnswer, j, tokens[j])
		}
		lps = append(lps, *e.LogProb)
	}
	return checkScores(tokens, start, nil, lps)
}

func (v *vllm) Tokenize(ctx context.Context, messages []Message) ([]int32, error) {
	req := struct {
		Model               string    `json:"model,omitempty"`
		Messages            []Message `json:"messages"`
		AddGenerationPrompt bool      `json:"add_generation_prompt"`
		AddSpecialTokens    bool      `json:"add_special_tokens"`
	}{v.model, messages, true, false}
	var out struct {
		Tokens []int32 `json:"tokens"`
	}
	if err := v.t.call(ctx, http.MethodPost, "/tokenize", req, &out, v.cfg.ControlTimeout); err != nil {
		return nil, fmt.Errorf("engine: vllm tokenize: %w", err)
	}
	if len(out.Tokens) == 0 {
		return nil, fmt.Errorf("%w: vllm tokenize gave no tokens", ErrBadAnswer)
	}
	for _, id := range out.Tokens {
		if id < 0 || (v.vocab > 0 && int(id) >= v.vocab) {
			return nil, fmt.Errorf("%w: vllm tokenize gave id %d outside the vocabulary", ErrBadAnswer, id)
		}
	}
	return out.Tokens, nil
}

func (v *vllm) Score(ctx context.Context, tokens []int32, start int, salt string) ([]float32, error) {
	if start < 1 || start >= len(tokens) {
		return nil, fmt.Errorf("%w: score start %d of %d tokens", ErrConfig, start, len(tokens))
	}
	zero := 0
	r := Request{Prompt: tokens, N: 1, Temperature: 1, TopP: 1, MaxTokens: 1, StopTokenIDs: []int32{}, CacheSalt: salt}
	if v.cfg.Endpoint == EndpointCompletions {
		req := v.completionsRequest(r)
		req.PromptLogprobs = &zero
		var resp vllmCompletionsResponse
		if err := v.t.call(ctx, http.MethodPost, "/v1/completions", req, &resp, v.cfg.RequestTimeout); err != nil {
			return nil, fmt.Errorf("engine: vllm score: %w", err)
		}
		if len(resp.Choices) != 1 {
			return nil, fmt.Errorf("%w: vllm score: %d choices", ErrBadAnswer, len(resp.Choices))
		}
		return promptScores(resp.Choices[0].PromptLogprobs, tokens, start)
	}
	sp := v.sampling(r)
	sp.PromptLogprobs = &zero
	var resp vllmGenerateResponse
	req := vllmGenerateRequest{Model: v.model, TokenIDs: tokens, SamplingParams: sp, CacheSalt: salt}
	if err := v.t.call(ctx, http.MethodPost, "/inference/v1/generate", req, &resp, v.cfg.RequestTimeout); err != nil {
		return nil, fmt.Errorf("engine: vllm score: %w", err)
	}
	return promptScores(resp.PromptLogprobs, tokens, start)
}

func (v *vllm) Pause(ctx context.Context) error {
	return v.control(ctx, "/pause?mode=wait", nil)
}

func (v *vllm) Resume(ctx context.Context) error { return v.control(ctx, "/resume", nil) }

func (v *vllm) Reload(ctx context.Context, dir string, version int64) error {
	body := map[string]any{"method": "reload_weights", "kwargs": map[string]any{"weights_path": dir, "is_checkpoint_format": true}}
	return v.control(ctx, "/collective_rpc", body)
}

func (v *vllm) ResetCache(ctx context.Context) error {
	return v.control(ctx, "/reset_prefix_cache", nil)
}

// WeightVersion: vLLM names no weight version.
func (v *vllm) WeightVersion(ctx context.Context) (string, error) { return "", nil }

func (v *vllm) control(ctx context.Context, path string, body any) error {
	// Answers vary by version (empty, {}, {"results": ...}): only the
	// status counts.
	if err := v.t.call(ctx, http.MethodPost, path, body, nil, v.cfg.ControlTimeout); err != nil {
		return fmt.Errorf("engine: vllm %s: %w", path, err)
	}
	return nil
}
