package engine

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// fixtureServer answers each path with a testdata file (or a literal body).
func fixtureServer(t *testing.T, routes map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := routes[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if filepath.Ext(body) == ".json" {
			data, err := os.ReadFile(filepath.Join("testdata", body))
			if err != nil {
				t.Error(err)
				w.WriteHeader(500)
				return
			}
			body = string(data)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func fixtureClient(t *testing.T, api, endpoint string, routes map[string]string) Client {
	t.Helper()
	srv := fixtureServer(t, routes)
	cfg := DefaultConfig(api, srv.URL)
	cfg.Endpoint, cfg.Vocab, cfg.Attempts = endpoint, 100, 1
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

var fixtureRequest = Request{Prompt: []int32{1, 11, 12}, N: 1, Temperature: 1, TopP: 1, MaxTokens: 3, Seed: 5,
	StopTokenIDs: []int32{2}, TopLogProbs: 2}

// TestFixtures parses the engines' answers as transcribed in testdata/ (see
// its README for sources and versions): old and new vLLM token shapes,
// completions, SGLang single and n=2 answers.
func TestFixtures(t *testing.T) {
	models := "vllm_models.json"
	three := Completion{Tokens: []int32{17, 42, 2}, LogProbs: []float32{-0.25, -2.5, -0.125}, Finish: FinishEOS,
		Top: [][]TokenLogProb{{{17, -0.25}, {9, -1.75}}, {{42, -2.5}, {3, -0.5}}, {{2, -0.125}, {5, -3}}}}
	cases := []struct {
		name, api, endpoint string
		routes              map[string]string
		req                 Request
		want                []Completion
	}{
		{"vllm generate, token_id:N strings", APIVLLM, EndpointGenerate,
			map[string]string{"/v1/models": models, "/inference/v1/generate": "vllm_generate_old.json", "/detokenize": `{"prompt": "\\boxed{5}"}`},
			fixtureRequest, []Completion{withText(three, `\boxed{5}`)}},
		{"vllm generate, integer token_id", APIVLLM, EndpointGenerate,
			map[string]string{"/v1/models": models, "/inference/v1/generate": "vllm_generate_new.json", "/detokenize": `{"prompt": "ab"}`},
			withMax(fixtureRequest, 2), []Completion{{Tokens: []int32{17, 42}, LogProbs: []float32{-0.25, -2.5}, Finish: FinishLength, Text: "ab",
				Top: [][]TokenLogProb{{{17, -0.25}, {9, -1.75}}, {{42, -2.5}, {3, -0.5}}}}}},
		{"vllm completions", APIVLLM, EndpointCompletions,
			map[string]string{"/v1/models": models, "/v1/completions": "vllm_completions.json"},
			fixtureRequest, []Completion{withText(sortedTop(three), `\boxed{5}<|im_end|>`)}},
		{"sglang generate", APISGLang, "",
			map[string]string{"/v1/models": models, "/generate": "sglang_generate.json"},
			fixtureRequest, []Completion{withVersion(withText(sglTop(three), `\boxed{5}<|im_end|>`), "4")}},
		{"sglang generate n=2", APISGLang, "",
			map[string]string{"/v1/models": models, "/generate": "sglang_generate_n2.json"},
			withN(withMax(withK(fixtureRequest, 0), 2), 2), []Completion{
				{Tokens: []int32{7, 2}, LogProbs: []float32{-0.5, -0.25}, Finish: FinishEOS, Text: "7", WeightVersion: "4"},
				{Tokens: []int32{8, 8}, LogProbs: []float32{-1.5, -1.25}, Finish: FinishLength, Text: "88", WeightVersion: "4"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fixtureClient(t, tc.api, tc.endpoint, tc.routes)
			got, err := c.Generate(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	t.Run("vllm prompt log-probs", func(t *testing.T) {
		c := fixtureClient(t, APIVLLM, EndpointGenerate, map[string]string{"/v1/models": models,
			"/inference/v1/generate": "vllm_generate_prompt_logprobs.json"})
		// The last prompt token sits at vLLM's -9999 clamp: a prompt
		// log-prob may (it is not a sampled token).
		got, err := c.Score(context.Background(), []int32{1, 11, 12, 13}, 1, "")
		if err != nil {
			t.Fatal(err)
		}
		if want := []float32{-3.5, -0.75, -9999}; !reflect.DeepEqual(got, want) {
			t.Fatalf("scores %v, want %v", got, want)
		}
		if _, err := c.Score(context.Background(), []int32{1, 11, 99, 13}, 1, ""); !errors.Is(err, ErrBadAnswer) {
			t.Fatalf("scores for other tokens: %v, want ErrBadAnswer", err)
		}
	})
	t.Run("vllm raw log-probs refused", func(t *testing.T) {
		srv := fixtureServer(t, map[string]string{"/v1/models": models, "/server_info": "vllm_server_info_raw.json"})
		cfg := DefaultConfig(APIVLLM, srv.URL)
		cfg.Vocab = 100
		c, _ := New(cfg)
		if _, err := c.Start(context.Background()); !errors.Is(err, ErrLogprobsMode) {
			t.Fatalf("Start against raw_logprobs: %v, want ErrLogprobsMode", err)
		}
	})
	t.Run("vllm vocabulary unknown", func(t *testing.T) {
		srv := fixtureServer(t, map[string]string{"/v1/models": models})
		c, _ := New(DefaultConfig(APIVLLM, srv.URL))
		if _, err := c.Start(context.Background()); !errors.Is(err, ErrConfig) {
			t.Fatalf("Start without a vocabulary size: %v, want ErrConfig", err)
		}
	})
}

func withText(c Completion, s string) Completion    { c.Text = s; return c }
func withMax(r Request, n int) Request              { r.MaxTokens = n; return r }
func withVersion(c Completion, v string) Completion { c.WeightVersion = v; return c }
func withN(r Request, n int) Request                { r.N = n; return r }
func withK(r Request, k int) Request                { r.TopLogProbs = k; return r }

// sortedTop is c with each top list by log-prob (completions' JSON objects
// carry no order, the client sorts them).
func sortedTop(c Completion) Completion {
	c.Top = [][]TokenLogProb{{{17, -0.25}, {9, -1.75}}, {{3, -0.5}, {42, -2.5}}, {{2, -0.125}, {5, -3}}}
	return c
}

// sglTop is c with SGLang's top lists (by rank, the sampled token not first).
func sglTop(c Completion) Completion { return sortedTop(c) }

// badServer answers generate with body (status code) or misbehaves.
func badClient(t *testing.T, api string, handler http.HandlerFunc) Client {
	t.Helper()
	mux := http.NewServeMux()
	data, _ := os.ReadFile("testdata/vllm_models.json")
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(data) })
	mux.HandleFunc("/detokenize", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"prompt":"x"}`)) })
	mux.HandleFunc("/inference/v1/generate", handler)
	mux.HandleFunc("/generate", handler)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cfg := DefaultConfig(api, srv.URL)
	cfg.Vocab, cfg.Attempts, cfg.Backoff, cfg.RequestTimeout = 100, 2, time.Millisecond, 300*time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func body(s string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(s)) }
}

// vllmAnswer builds a one-choice generate answer.
func vllmAnswer(ids, lps, finish string) string {
	return `{"choices":[{"index":0,"finish_reason":` + finish + `,"token_ids":` + ids + `,"logprobs":{"content":` + lps + `}}]}`
}

// TestBadAnswers: every engine answer that fails a check is an error of the
// right kind, never a completion: bad values wrap ErrBadAnswer, transport
// failures (5xx, timeouts, a connection cut mid-answer) ErrUnavailable after
// the retries, 4xx ErrRejected.
func TestBadAnswers(t *testing.T) {
	req := withK(withMax(fixtureRequest, 3), 0)
	e := func(id int, lp string) string {
		return `{"token":"token_id:` + itoa(id) + `","logprob":` + lp + `,"top_logprobs":[]}`
	}
	ok2 := "[" + e(17, "-0.5") + "," + e(2, "-0.25") + "]"
	cases := []struct {
		name    string
		api     string
		handler http.HandlerFunc
		want    error
	}{
		{"good answer", APIVLLM, body(vllmAnswer("[17,2]", ok2, `"stop"`)), nil},
		{"NaN log-prob", APIVLLM, body(vllmAnswer("[17,2]", "["+e(17, "NaN")+","+e(2, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"positive log-prob", APIVLLM, body(vllmAnswer("[17,2]", "["+e(17, "0.5")+","+e(2, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"clamped sampled log-prob", APIVLLM, body(vllmAnswer("[17,2]", "["+e(17, "-9999.0")+","+e(2, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"fewer log-probs than tokens", APIVLLM, body(vllmAnswer("[17,42,2]", ok2, `"stop"`)), ErrBadAnswer},
		{"log-prob of another token", APIVLLM, body(vllmAnswer("[17,3]", ok2, `"stop"`)), ErrBadAnswer},
		{"token outside the vocabulary", APIVLLM, body(vllmAnswer("[170,2]", "["+e(170, "-0.5")+","+e(2, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"negative token id", APIVLLM, body(vllmAnswer("[-1,2]", "["+e(-1, "-0.5")+","+e(2, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"unknown finish reason", APIVLLM, body(vllmAnswer("[17,2]", ok2, `"abort"`)), ErrBadAnswer},
		{"no finish reason", APIVLLM, body(vllmAnswer("[17,2]", ok2, `null`)), ErrBadAnswer},
		{"stop without a stop token", APIVLLM, body(vllmAnswer("[17,3]", "["+e(17, "-0.5")+","+e(3, "-0.25")+"]", `"stop"`)), ErrBadAnswer},
		{"length before max tokens", APIVLLM, body(vllmAnswer("[17,3]", "["+e(17, "-0.5")+","+e(3, "-0.25")+"]", `"length"`)), ErrBadAnswer},
		{"more tokens than max", APIVLLM, body(vllmAnswer("[17,3,4,5]", "["+e(17, "-0.5")+","+e(3, "-0.25")+","+e(4, "-1")+","+e(5, "-1")+"]", `"length"`)), ErrBadAnswer},
		{"two choices for n=1", APIVLLM, body(`{"choices":[{"index":0,"finish_reason":"stop","token_ids":[17,2],"logprobs":{"content":` + ok2 + `}},{"index":1,"finish_reason":"stop","token_ids":[17,2],"logprobs":{"content":` + ok2 + `}}]}`), ErrBadAnswer},
		{"not JSON", APIVLLM, body(`<html>gateway</html>`), ErrBadAnswer},
		{"sglang NaN", APISGLang, body(`{"text":"x","output_ids":[17,2],"meta_info":{"finish_reason":{"type":"stop"},"output_token_logprobs":[[NaN,17,null],[-0.1,2,null]]}}`), ErrBadAnswer},
		{"sglang abort", APISGLang, body(`{"text":"x","output_ids":[17],"meta_info":{"finish_reason":{"type":"abort","message":"x"},"output_token_logprobs":[[-0.5,17,null]]}}`), ErrBadAnswer},
		{"sglang length mismatch", APISGLang, body(`{"text":"x","output_ids":[17,2],"meta_info":{"finish_reason":{"type":"stop"},"output_token_logprobs":[[-0.5,17,null]]}}`), ErrBadAnswer},
		{"HTTP 500", APIVLLM, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, ErrUnavailable},
		{"HTTP 400", APIVLLM, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(400) }, ErrRejected},
		{"timeout", APIVLLM, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, ErrUnavailable},
		{"engine dies mid-answer", APIVLLM, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write([]byte(`{"choices":[{"index":0,`))
			if hj, ok := w.(http.Hijacker); ok {
				conn, _, _ := hj.Hijack()
				_ = conn.Close()
			}
		}, ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := badClient(t, tc.api, tc.handler)
			got, err := c.Generate(context.Background(), req)
			if tc.want == nil {
				if err != nil || len(got) != 1 {
					t.Fatalf("good answer: %v, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if got != nil {
				t.Fatalf("a bad answer returned completions %+v", got)
			}
		})
	}
}

func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestEntropyBounds: on a known distribution the lower bound is at most the
// entropy and the upper bound at least it (exact to 1e-9 when the top list
// is the whole distribution).
func TestEntropyBounds(t *testing.T) {
	p := []float64{0.5, 0.2, 0.1, 0.1, 0.05, 0.05}
	var h float64
	for _, x := range p {
		h -= x * math.Log(x)
	}
	mk := func(ids ...int) []TokenLogProb {
		var l []TokenLogProb
		for _, i := range ids {
			l = append(l, TokenLogProb{int32(i), float32(math.Log(p[i]))})
		}
		return l
	}
	cases := []struct {
		name    string
		top     []TokenLogProb
		sampled int32
	}{
		{"top 2", mk(0, 1), 0},
		{"sampled outside the top, listed first", mk(4, 0, 1), 4},
		{"top 3", mk(0, 1, 2), 1},
		{"duplicate entry", mk(0, 0, 1), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lo := topKEntropy(tc.top, tc.sampled, "topk-lower", len(p))
			hi := topKEntropy(tc.top, tc.sampled, "topk-upper", len(p))
			if lo > h+1e-6 || hi < h-1e-6 {
				t.Fatalf("bounds [%v, %v] do not hold H = %v", lo, hi, h)
			}
		})
	}
	all := mk(0, 1, 2, 3, 4, 5)
	for _, k := range []string{"topk-lower", "topk-upper"} {
		if got := topKEntropy(all, 0, k, len(p)); math.Abs(got-h) > 1e-6 {
			t.Fatalf("%s over the whole distribution = %v, want %v", k, got, h)
		}
	}
}
