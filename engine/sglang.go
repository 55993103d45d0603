package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// SGLang's wire shapes (python/sglang/srt/managers/io_struct.py
// GenerateReqInput; the answer's meta_info from tokenizer_manager.py;
// fixtures in testdata/).

type sglangSampling struct {
	MaxNewTokens      int     `json:"max_new_tokens"`
	Temperature       float32 `json:"temperature"`
	TopP              float32 `json:"top_p"`
	TopK              int     `json:"top_k"`
	MinP              float32 `json:"min_p"`
	StopTokenIDs      []int32 `json:"stop_token_ids"`
	SkipSpecialTokens bool    `json:"skip_special_tokens"`
	NoStopTrim        bool    `json:"no_stop_trim"`
	IgnoreEOS         bool    `json:"ignore_eos"`
	N                 int     `json:"n"`
	SamplingSeed      int64   `json:"sampling_seed"`
}

type sglangRequest struct {
	InputIDs             []int32        `json:"input_ids"`
	SamplingParams       sglangSampling `json:"sampling_params"`
	ReturnLogprob        bool           `json:"return_logprob"`
	LogprobStartLen      int            `json:"logprob_start_len"`
	TopLogprobsNum       int            `json:"top_logprobs_num"`
	ReturnTextInLogprobs bool           `json:"return_text_in_logprobs"`
	Stream               bool           `json:"stream"`
}

// sglangLogProb is [logprob, token_id, text|null].
type sglangLogProb struct {
	LogProb *float64
	ID      int64
}

func (e *sglangLogProb) UnmarshalJSON(b []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return err
	}
	if len(parts) < 2 {
		return fmt.Errorf("log-prob entry %s is not [logprob, id, text]", clip(b))
	}
	if !bytes.Equal(bytes.TrimSpace(parts[0]), []byte("null")) {
		var lp float64
		if err := json.Unmarshal(parts[0], &lp); err != nil {
			return fmt.Errorf("log-prob %s: %w", clip(parts[0]), err)
		}
		e.LogProb = &lp
	}
	return json.Unmarshal(parts[1], &e.ID)
}

type sglangAnswer struct {
	Text      string  `json:"text"`
	OutputIDs []int32 `json:"output_ids"`
	MetaInfo  struct {
		FinishReason *struct {
			Type string `json:"type"`
		} `json:"finish_reason"`
		OutputTokenLogprobs []sglangLogProb   `json:"output_token_logprobs"`
		OutputTopLogprobs   [][]sglangLogProb `json:"output_top_logprobs"`
		InputTokenLogprobs  []sglangLogProb   `json:"input_token_logprobs"`
		WeightVersion       string            `json:"weight_version"`
	} `json:"meta_info"`
}

type sglang struct {
	t     *transport
	cfg   Config
	vocab int // set by Start, read-only after
}

func (s *sglang) Start(ctx context.Context) (Info, error) {
	// /v1/models carries max_model_len (OpenAI-compatible layer).
	var ms vllmModels
	if err := s.t.call(ctx, http.MethodGet, "/v1/models", nil, &ms, s.cfg.ControlTimeout); err != nil {
		return Info{}, fmt.Errorf("engine: sglang models: %w", err)
	}
	if len(ms.Data) == 0 || ms.Data[0].MaxModelLen <= 0 {
		return Info{}, fmt.Errorf("%w: sglang /v1/models gives no model with max_model_len", ErrBadAnswer)
	}
	m := ms.Data[0]
	if s.vocab == 0 {
		s.vocab = m.VocabSize
	}
	if s.vocab == 0 {
		return Info{}, fmt.Errorf("%w: the server does not report its vocabulary size: set it (--engine-vocab)", ErrConfig)
	}
	// SGLang's log-probs follow the sampling temperature (no mode to check).
	return Info{Model: m.ID, MaxModelLen: m.MaxModelLen, Vocab: s.vocab}, nil
}

func (s *sglang) Health(ctx context.Context) error {
	if err := s.t.call(ctx, http.MethodGet, "/health_generate", nil, nil, s.cfg.ControlTimeout); err != nil {
		return fmt.Errorf("engine: sglang health: %w", err)
	}
	return nil
}

func (s *sglang) request(r Request) sglangRequest {
	return sglangRequest{InputIDs: r.Prompt, SamplingParams: sglangSampling{MaxNewTokens: r.MaxTokens, Temperature: r.Temperature,
		TopP: r.TopP, TopK: -1, StopTokenIDs: r.StopTokenIDs, NoStopTrim: true, IgnoreEOS: r.IgnoreEOS, N: r.N, SamplingSeed: r.Seed},
		ReturnLogprob: true, LogprobStartLen: -1, TopLogprobsNum: r.TopLogProbs}
}

// answers reads one answer object or, for n > 1, a list of them.
func answers(data json.RawMessage) ([]sglangAnswer, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var list []sglangAnswer
		err := json.Unmarshal(data, &list)
		return list, err
	}
	var one sglangAnswer
	if err := json.Unmarshal(data, &one); err != nil {
		return nil, err
	}
	return []sglangAnswer{one}, nil
}

func (s *sglang) Generate(ctx context.Context, r Request) ([]Completion, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := s.t.call(ctx, http.MethodPost, "/generate", s.request(r), &raw, s.cfg.RequestTimeout); err != nil {
		return nil, fmt.Errorf("engine: sglang generate: %w", err)
	}
	ans, err := answers(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: sglang generate: %v", ErrBadAnswer, err)
	}
	raws := make([]rawCompletion, len(ans))
	for i, a := range ans {
		c := rawCompletion{tokens: a.OutputIDs, text: a.Text, finish: "(none)", version: a.MetaInfo.WeightVersion}
		if fr := a.MetaInfo.FinishReason; fr != nil {
			c.finish = finishOf(fr.Type)
		}
		for j, e := range a.MetaInfo.OutputTokenLogprobs {
			if e.LogProb == nil {
				return nil, fmt.Errorf("%w: sglang answer %d token %d has no log-prob", ErrBadAnswer, i, j)
			}
			if j < len(c.tokens) && int64(c.tokens[j]) != e.ID {
				return nil, fmt.Errorf("%w: sglang answer %d: log-prob %d is for token %d, output_ids has %d", ErrBadAnswer, i, j, e.ID, c.tokens[j])
			}
			c.logProbs = append(c.logProbs, *e.LogProb)
		}
		if r.TopLogProbs > 0 {
			for j, list := range a.MetaInfo.OutputTopLogprobs {
				out := make([]TokenLogProb, 0, len(list))
				for _, e := range list {
					if e.LogProb == nil || e.ID < 0 || e.ID > 1<<31-1 {
						return nil, fmt.Errorf("%w: sglang answer %d token %d: bad top entry", ErrBadAnswer, i, j)
					}
					out = append(out, TokenLogProb{ID: int32(e.ID), LogProb: float32(*e.LogProb)})
				}
				c.top = append(c.top, out)
			}
		}
		raws[i] = c
	}
	return validateAll(r, s.vocab, raws)
}

func (s *sglang) Score(ctx context.Context, tokens []int32, start int, salt string) ([]float32, error) {
	if start < 1 || start >= len(tokens) {
		return nil, fmt.Errorf("%w: score start %d of %d tokens", ErrConfig, start, len(tokens))
	}
	req := s.request(Request{Prompt: tokens, N: 1, Temperature: 1, TopP: 1, MaxTokens: 1, StopTokenIDs: []int32{}})
	req.LogprobStartLen = start
	var raw json.RawMessage
	if err := s.t.call(ctx, http.MethodPost, "/generate", req, &raw, s.cfg.RequestTimeout); err != nil {
		return nil, fmt.Errorf("engine: sglang score: %w", err)
	}
	ans, err := answers(raw)
	if err != nil || len(ans) != 1 {
		return nil, fmt.Errorf("%w: sglang score: %d answers, %v", ErrBadAnswer, len(ans), err)
	}
	in := ans[0].MetaInfo.InputTokenLogprobs
	ids := make([]int32, len(in))
	lps := make([]float64, len(in))
	for j, e := range in {
		if e.LogProb == nil {
			return nil, fmt.Errorf("%w: sglang input log-prob %d is null", ErrBadAnswer, j)
		}
		ids[j], lps[j] = int32(e.ID), *e.LogProb
	}
	return checkScores(tokens, start, ids, lps)
}

// Tokenize: SGLang's HTTP API has no chat-template tokenizer endpoint
// every version serves; give prompts as ids.
func (s *sglang) Tokenize(ctx context.Context, messages []Message) ([]int32, error) {
	return nil, fmt.Errorf("%w: sglang: no /tokenize with a chat template; tokenize with the model's tokenizer", ErrRejected)
}

func (s *sglang) Pause(ctx context.Context) error {
	return s.control(ctx, "/pause_generation", map[string]string{"mode": "abort"})
}

func (s *sglang) Resume(ctx context.Context) error {
	return s.control(ctx, "/continue_generation", map[string]string{})
}

func (s *sglang) Reload(ctx context.Context, dir string, version int64) error {
	var out struct {
		Success *bool  `json:"success"`
		Message string `json:"message"`
	}
	body := map[string]string{"model_path": dir, "weight_version": strconv.FormatInt(version, 10)}
	if err := s.t.call(ctx, http.MethodPost, "/update_weights_from_disk", body, &out, s.cfg.ControlTimeout); err != nil {
		return fmt.Errorf("engine: sglang update weights: %w", err)
	}
	if out.Success == nil || !*out.Success {
		return fmt.Errorf("%w: sglang update weights from %s failed: %s", ErrRejected, dir, out.Message)
	}
	return nil
}

func (s *sglang) ResetCache(ctx context.Context) error { return s.control(ctx, "/flush_cache", nil) }

func (s *sglang) WeightVersion(ctx context.Context) (string, error) {
	var out struct {
		WeightVersion *string `json:"weight_version"`
	}
	if err := s.t.call(ctx, http.MethodGet, "/get_weight_version", nil, &out, s.cfg.ControlTimeout); err != nil {
		return "", fmt.Errorf("engine: sglang weight version: %w", err)
	}
	if out.WeightVersion == nil {
		return "", fmt.Errorf("%w: sglang /get_weight_version gives no weight_version", ErrBadAnswer)
	}
	return *out.WeightVersion, nil
}

func (s *sglang) control(ctx context.Context, path string, body any) error {
	if err := s.t.call(ctx, http.MethodPost, path, body, nil, s.cfg.ControlTimeout); err != nil {
		return fmt.Errorf("engine: sglang %s: %w", path, err)
	}
	return nil
}
