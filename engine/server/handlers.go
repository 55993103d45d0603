package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/exgrpo/exgrpo/task"
)

// maxRequestBytes caps a request body.
const maxRequestBytes = 16 << 20

// Handler serves the endpoints of the configured API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	if s.cfg.API == APIVLLM {
		mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
		mux.HandleFunc("GET /server_info", s.serverInfo)
		mux.HandleFunc("POST /inference/v1/generate", s.vllmGenerate)
		mux.HandleFunc("POST /v1/completions", s.vllmCompletions)
		mux.HandleFunc("POST /detokenize", s.detokenize)
		mux.HandleFunc("POST /tokenize", s.tokenize)
		mux.HandleFunc("POST /pause", func(w http.ResponseWriter, r *http.Request) { s.pause(); writeJSON(w, map[string]any{}) })
		mux.HandleFunc("POST /resume", func(w http.ResponseWriter, r *http.Request) { s.resume(); writeJSON(w, map[string]any{}) })
		mux.HandleFunc("POST /collective_rpc", s.collectiveRPC)
		mux.HandleFunc("POST /reset_prefix_cache", func(w http.ResponseWriter, r *http.Request) { s.flush(); w.WriteHeader(http.StatusOK) })
	} else {
		mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
		mux.HandleFunc("GET /health_generate", s.healthGenerate)
		mux.HandleFunc("POST /generate", s.sglangGenerate)
		mux.HandleFunc("POST /pause_generation", func(w http.ResponseWriter, r *http.Request) { s.pause(); writeJSON(w, map[string]any{}) })
		mux.HandleFunc("POST /continue_generation", func(w http.ResponseWriter, r *http.Request) { s.resume(); writeJSON(w, map[string]any{}) })
		mux.HandleFunc("POST /update_weights_from_disk", s.updateWeights)
		mux.HandleFunc("POST /flush_cache", func(w http.ResponseWriter, r *http.Request) { s.flush(); w.WriteHeader(http.StatusOK) })
		mux.HandleFunc("GET /get_weight_version", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]string{"weight_version": s.Stats().Version})
		})
		mux.HandleFunc("GET /get_model_info", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"model_path": s.cfg.Checkpoint, "is_generation": true, "weight_version": s.Stats().Version})
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers an error as the engines do ({"object":"error",...} / {"error":...}).
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "error", "message": err.Error(), "code": code})
}

func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		return badRequest("read body: %v", err)
	}
	if len(data) > maxRequestBytes {
		return badRequest("body over %d bytes", maxRequestBytes)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return badRequest("bad JSON: %v", err)
	}
	return nil
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	cfg := s.ck.Model.Config
	s.mu.RUnlock()
	writeJSON(w, map[string]any{"object": "list", "data": []map[string]any{{
		"id": s.cfg.Model, "object": "model", "owned_by": "exgrpo", "root": s.cfg.Model,
		"max_model_len": cfg.Context, "vocab_size": cfg.Vocab}}})
}

func (s *Server) serverInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	cfg := s.ck.Model.Config
	s.mu.RUnlock()
	writeJSON(w, map[string]any{"vllm_config": map[string]any{"model_config": map[string]any{
		"model": s.cfg.Model, "logprobs_mode": s.cfg.LogprobsMode, "max_model_len": cfg.Context}}})
}

func (s *Server) healthGenerate(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	eos := s.ck.Tokenizer.EOS()
	bos := s.ck.Tokenizer.BOS()
	s.mu.RUnlock()
	if _, _, err := s.generate(r.Context(), genRequest{prompt: []int32{bos}, n: 1, temp: 1, topP: 1, maxTokens: 1, stopIDs: []int32{eos}}); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// vllmSamplingParams is vLLM's SamplingParams; fields the client leaves out
// take vLLM's defaults (max_tokens 16!), as on a real server.
type vllmSamplingParams struct {
	N              *int     `json:"n"`
	Temperature    *float32 `json:"temperature"`
	TopP           *float32 `json:"top_p"`
	TopK           *int     `json:"top_k"`
	MinP           *float32 `json:"min_p"`
	Seed           *int64   `json:"seed"`
	MaxTokens      *int     `json:"max_tokens"`
	StopTokenIDs   []int32  `json:"stop_token_ids"`
	IgnoreEOS      bool     `json:"ignore_eos"`
	Logprobs       *int     `json:"logprobs"`
	PromptLogprobs *int     `json:"prompt_logprobs"`
}

func (p vllmSamplingParams) request(prompt []int32, salt string) (genRequest, error) {
	r := genRequest{prompt: prompt, n: 1, temp: 1, topP: 1, maxTokens: 16, salt: salt, vllmTopKDup: true, topK: -1}
	if p.N != nil {
		r.n = *p.N
	}
	if p.Temperature != nil {
		r.temp = *p.Temperature
	}
	if p.TopP != nil {
		r.topP = *p.TopP
	}
	if p.TopK != nil && *p.TopK != -1 && *p.TopK != 0 {
		return r, badRequest("top_k %d: not supported (send -1)", *p.TopK)
	}
	if p.MinP != nil && *p.MinP != 0 {
		return r, badRequest("min_p %v: not supported (send 0)", *p.MinP)
	}
	if p.Seed != nil {
		r.seed = *p.Seed
	} else {
		r.seed = int64(s64())
	}
	if p.MaxTokens != nil {
		r.maxTokens = *p.MaxTokens
	}
	r.stopIDs, r.ignoreEOS = p.StopTokenIDs, p.IgnoreEOS
	if p.Logprobs != nil {
		r.topK = *p.Logprobs
	}
	r.promptLP = p.PromptLogprobs != nil
	return r, nil
}

var seedCounter atomic.Int64

// s64 stands in for an unseeded request's random seed.
func s64() int64 { return seedCounter.Add(1) * 0x9e3779b9 }

func tokenName(id int32) string { return "token_id:" + strconv.Itoa(int(id)) }

// promptLogprobsJSON is vLLM's prompt_logprobs: null, then {id: Logprob}.
func promptLogprobsJSON(prompt []int32, lps []float32) []any {
	out := make([]any, len(prompt))
	for j := 1; j < len(prompt) && j-1 < len(lps); j++ {
		out[j] = map[string]any{strconv.Itoa(int(prompt[j])): map[string]any{"logprob": lps[j-1], "rank": nil, "decoded_token": tokenName(prompt[j])}}
	}
	return out
}

func (s *Server) vllmGenerate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TokenIDs       []int32            `json:"token_ids"`
		SamplingParams vllmSamplingParams `json:"sampling_params"`
		CacheSalt      string             `json:"cache_salt"`
		Stream         bool               `json:"stream"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Stream {
		fail(w, badRequest("stream is not served"))
		return
	}
	gr, err := req.SamplingParams.request(req.TokenIDs, req.CacheSalt)
	if err != nil {
		fail(w, err)
		return
	}
	outs, plp, err := s.generate(r.Context(), gr)
	if err != nil {
		fail(w, err)
		return
	}
	choices := make([]map[string]any, len(outs))
	for i, o := range outs {
		var content []map[string]any
		if gr.topK >= 0 {
			content = make([]map[string]any, len(o.tokens))
			for j, id := range o.tokens {
				e := map[string]any{"token": tokenName(id), "logprob": o.logProbs[j], "top_logprobs": []any{}}
				if o.top != nil {
					top := make([]map[string]any, len(o.top[j]))
					for t, te := range o.top[j] {
						top[t] = map[string]any{"token": tokenName(te.id), "logprob": te.lp}
					}
					e["top_logprobs"] = top
				}
				content[j] = e
			}
		}
		ch := map[string]any{"index": i, "token_ids": o.tokens, "finish_reason": o.finish}
		if content != nil {
			ch["logprobs"] = map[string]any{"content": content}
		}
		choices[i] = ch
	}
	resp := map[string]any{"request_id": fmt.Sprintf("generate-tokens-%d", s.requests.Load()), "choices": choices}
	if gr.promptLP {
		resp["prompt_logprobs"] = promptLogprobsJSON(req.TokenIDs, plp)
	}
	writeJSON(w, resp)
}

func (s *Server) vllmCompletions(w http.ResponseWriter, r *http.Request) {
	var req struct {
		vllmSamplingParams
		Prompt                 []int32 `json:"prompt"`
		ReturnTokenIDs         bool    `json:"return_token_ids"`
		ReturnTokensAsTokenIDs bool    `json:"return_tokens_as_token_ids"`
		Echo                   bool    `json:"echo"`
		CacheSalt              string  `json:"cache_salt"`
		Stream                 bool    `json:"stream"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Stream || req.Echo {
		fail(w, badRequest("stream and echo are not served"))
		return
	}
	gr, err := req.vllmSamplingParams.request(req.Prompt, req.CacheSalt)
	if err != nil {
		fail(w, err)
		return
	}
	outs, plp, err := s.generate(r.Context(), gr)
	if err != nil {
		fail(w, err)
		return
	}
	s.mu.RLock()
	tok := s.ck.Tokenizer
	s.mu.RUnlock()
	name := func(id int32) string {
		if req.ReturnTokensAsTokenIDs {
			return tokenName(id)
		}
		return tok.Decode([]int32{id})
	}
	choices := make([]map[string]any, len(outs))
	for i, o := range outs {
		ch := map[string]any{"index": i, "text": o.text, "finish_reason": o.finish, "stop_reason": nil}
		if gr.topK >= 0 {
			tokens := make([]string, len(o.tokens))
			offs := make([]int, len(o.tokens))
			var tops []map[string]float32
			for j, id := range o.tokens {
				tokens[j] = name(id)
				if o.top != nil {
					m := map[string]float32{}
					for _, te := range o.top[j] {
						m[name(te.id)] = te.lp
					}
					tops = append(tops, m)
				}
			}
			ch["logprobs"] = map[string]any{"tokens": tokens, "token_logprobs": o.logProbs, "top_logprobs": tops, "text_offset": offs}
		}
		if req.ReturnTokenIDs {
			ch["token_ids"] = o.tokens
			ch["prompt_token_ids"] = req.Prompt
		}
		if gr.promptLP {
			ch["prompt_logprobs"] = promptLogprobsJSON(req.Prompt, plp)
		}
		choices[i] = ch
	}
	writeJSON(w, map[string]any{"id": fmt.Sprintf("cmpl-%d", s.requests.Load()), "object": "text_completion", "model": s.cfg.Model, "choices": choices})
}

func (s *Server) detokenize(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tokens []int32 `json:"tokens"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	s.mu.RLock()
	text := s.ck.Tokenizer.Decode(req.Tokens)
	s.mu.RUnlock()
	writeJSON(w, map[string]string{"prompt": text})
}

// tokenize is vLLM's /tokenize with chat messages: the built-in model's
// chat template is task.EncodePrompt (BOS, the user message, the
// separator; it has no system part).
func (s *Server) tokenize(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
		Prompt *string `json:"prompt"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	s.mu.RLock()
	tok := s.ck.Tokenizer
	ctxLen := s.ck.Model.Config.Context
	s.mu.RUnlock()
	var ids []int32
	var err error
	if req.Prompt != nil {
		ids, err = tok.Encode(*req.Prompt)
	} else {
		user := ""
		for _, m := range req.Messages {
			if m.Role == "user" {
				user = m.Content
			}
		}
		ids, err = task.EncodePrompt(tok, task.Problem{Prompt: user})
	}
	if err != nil {
		fail(w, badRequest("%v", err))
		return
	}
	writeJSON(w, map[string]any{"count": len(ids), "max_model_len": ctxLen, "tokens": ids})
}

func (s *Server) collectiveRPC(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Method string `json:"method"`
		Kwargs struct {
			WeightsPath string `json:"weights_path"`
		} `json:"kwargs"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Method != "reload_weights" {
		fail(w, badRequest("method %q is not served", req.Method))
		return
	}
	if err := s.reload(req.Kwargs.WeightsPath, ""); err != nil {
		fail(w, badRequest("%v", err))
		return
	}
	writeJSON(w, map[string]any{"results": []any{nil}})
}

func (s *Server) updateWeights(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ModelPath     string `json:"model_path"`
		WeightVersion string `json:"weight_version"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if err := s.reload(req.ModelPath, req.WeightVersion); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"success": false, "message": err.Error()})
		return
	}
	writeJSON(w, map[string]any{"success": true, "message": "Succeeded to update model weights."})
}

// sglangLP is [logprob, token_id, null].
func sglangLP(lp float32, id int32) []any { return []any{lp, id, nil} }

func (s *Server) sglangGenerate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		InputIDs       []int32 `json:"input_ids"`
		SamplingParams struct {
			MaxNewTokens *int     `json:"max_new_tokens"`
			Temperature  *float32 `json:"temperature"`
			TopP         *float32 `json:"top_p"`
			TopK         *int     `json:"top_k"`
			MinP         *float32 `json:"min_p"`
			StopTokenIDs []int32  `json:"stop_token_ids"`
			IgnoreEOS    bool     `json:"ignore_eos"`
			N            *int     `json:"n"`
			SamplingSeed *int64   `json:"sampling_seed"`
		} `json:"sampling_params"`
		ReturnLogprob   bool `json:"return_logprob"`
		LogprobStartLen *int `json:"logprob_start_len"`
		TopLogprobsNum  int  `json:"top_logprobs_num"`
		Stream          bool `json:"stream"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Stream {
		fail(w, badRequest("stream is not served"))
		return
	}
	p := req.SamplingParams
	gr := genRequest{prompt: req.InputIDs, n: 1, temp: 1, topP: 1, maxTokens: 128, stopIDs: p.StopTokenIDs, ignoreEOS: p.IgnoreEOS}
	if p.MaxNewTokens != nil {
		gr.maxTokens = *p.MaxNewTokens
	}
	if p.Temperature != nil {
		gr.temp = *p.Temperature
	}
	if p.TopP != nil {
		gr.topP = *p.TopP
	}
	if p.TopK != nil && *p.TopK != -1 {
		fail(w, badRequest("top_k %d: not supported (send -1)", *p.TopK))
		return
	}
	if p.MinP != nil && *p.MinP != 0 {
		fail(w, badRequest("min_p %v: not supported (send 0)", *p.MinP))
		return
	}
	if p.N != nil {
		gr.n = *p.N
	}
	if p.SamplingSeed != nil {
		gr.seed = *p.SamplingSeed
	} else {
		gr.seed = s64()
	}
	start := -1
	if req.LogprobStartLen != nil {
		start = *req.LogprobStartLen
	}
	if req.ReturnLogprob {
		gr.topK = req.TopLogprobsNum
		gr.promptLP = start >= 0
	}
	if start >= len(req.InputIDs) {
		fail(w, badRequest("logprob_start_len %d >= %d input tokens", start, len(req.InputIDs)))
		return
	}
	outs, plp, err := s.generate(r.Context(), gr)
	if err != nil {
		fail(w, err)
		return
	}
	version := s.Stats().Version
	answers := make([]map[string]any, len(outs))
	for i, o := range outs {
		fr := map[string]any{"type": o.finish}
		if o.finish == "stop" {
			fr["matched"] = o.tokens[len(o.tokens)-1]
		} else {
			fr["length"] = len(o.tokens)
		}
		meta := map[string]any{"id": fmt.Sprintf("%d-%d", s.requests.Load(), i), "finish_reason": fr,
			"prompt_tokens": len(req.InputIDs), "completion_tokens": len(o.tokens), "cached_tokens": 0, "weight_version": version}
		if req.ReturnLogprob {
			out := make([]any, len(o.tokens))
			for j, id := range o.tokens {
				out[j] = sglangLP(o.logProbs[j], id)
			}
			meta["output_token_logprobs"] = out
			if o.top != nil {
				tops := make([]any, len(o.top))
				for j, list := range o.top {
					l := make([]any, len(list))
					for t, te := range list {
						l[t] = sglangLP(te.lp, te.id)
					}
					tops[j] = l
				}
				meta["output_top_logprobs"] = tops
			}
			if gr.promptLP {
				in := make([]any, 0, len(req.InputIDs)-start)
				for j := start; j < len(req.InputIDs); j++ {
					if j == 0 {
						in = append(in, []any{nil, req.InputIDs[0], nil})
						continue
					}
					in = append(in, sglangLP(plp[j-1], req.InputIDs[j]))
				}
				meta["input_token_logprobs"] = in
			}
		}
		answers[i] = map[string]any{"text": o.text, "output_ids": o.tokens, "meta_info": meta}
	}
	if len(answers) == 1 {
		writeJSON(w, answers[0])
		return
	}
	writeJSON(w, answers)
}
