package evaluate

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/task"
)

// scriptedEngine is a vLLM-shaped server whose i-th completion of every
// request is token 5 then EOS for even i and token 9 then EOS for odd i;
// /detokenize spells token t as \boxed{t}. /tokenize counts the user text.
func scriptedEngine(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"data":[{"id":"m","max_model_len":64,"vocab_size":16}]}`)
	})
	mux.HandleFunc("/tokenize", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"tokens":[1,3,4]}`)
	})
	mux.HandleFunc("/detokenize", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Tokens []int `json:"tokens"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		fmt.Fprintf(w, `{"prompt":"\\boxed{%d}"}`, req.Tokens[0])
	})
	mux.HandleFunc("/inference/v1/generate", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			SP struct {
				N         int     `json:"n"`
				TopP      float32 `json:"top_p"`
				MaxTokens int     `json:"max_tokens"`
			} `json:"sampling_params"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.SP.TopP != 0.95 || req.SP.MaxTokens != 20 {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"message":"top_p %v, max_tokens %d"}`, req.SP.TopP, req.SP.MaxTokens)
			return
		}
		var ch []string
		for i := range req.SP.N {
			tok := 5 + 4*(i%2)
			ch = append(ch, fmt.Sprintf(`{"index":%d,"finish_reason":"stop","token_ids":[%d,2],"logprobs":{"content":[{"token":"token_id:%d","logprob":-0.5},{"token":"token_id:2","logprob":-0.1}]}}`, i, tok, tok))
		}
		fmt.Fprintf(w, `{"choices":[%s]}`, strings.Join(ch, ","))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestAvgAtKPerSource: avg@k per data source with the per-source k, the
// mean over sources, and every sampling parameter sent.
func TestAvgAtKPerSource(t *testing.T) {
	srv := scriptedEngine(t)
	c, err := engine.New(engine.DefaultConfig(engine.APIVLLM, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	problems := []task.Problem{
		{ID: "a1", Prompt: "q", Answer: "5", Kind: "math", Source: "aime24"},
		{ID: "a2", Prompt: "q", Answer: "9", Kind: "math", Source: "aime24"},
		{ID: "a3", Prompt: "q", Answer: "7", Kind: "math", Source: "aime24"},
		{ID: "m1", Prompt: "q", Answer: "5", Kind: "math", Source: "math500"},
		{ID: "m2", Prompt: "q", Answer: "9", Kind: "math", Source: "math500"},
	}
	cfg := DefaultConfig()
	cfg.KPerSource = PaperKPerSource()
	cfg.TopP, cfg.MaxTokens = 0.95, 20
	var calls int
	rep, err := Run(context.Background(), c, info, EngineTokenizer(c), problems, cfg, func(done, total int) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	// aime24, k=32: half the samples say 5, half 9 -> (0.5 + 0.5 + 0) / 3.
	// math500, k=1: the first sample says 5 -> (1 + 0) / 2.
	want := map[string]SourceScore{
		"aime24":  {Source: "aime24", Questions: 3, K: 32, AvgAtK: 1.0 / 3, PassAtK: 2.0 / 3},
		"math500": {Source: "math500", Questions: 2, K: 1, AvgAtK: 0.5, PassAtK: 0.5},
	}
	if len(rep.Sources) != 2 || calls != len(problems) {
		t.Fatalf("report %+v after %d progress calls", rep, calls)
	}
	for _, s := range rep.Sources {
		w := want[s.Source]
		if s.Questions != w.Questions || s.K != w.K || math.Abs(s.AvgAtK-w.AvgAtK) > 1e-12 || math.Abs(s.PassAtK-w.PassAtK) > 1e-12 {
			t.Fatalf("%s: %+v, want %+v", s.Source, s, w)
		}
	}
	if math.Abs(rep.Mean-(1.0/3+0.5)/2) > 1e-12 {
		t.Fatalf("mean %v", rep.Mean)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil || !strings.Contains(b.String(), "aime24") {
		t.Fatalf("table %q, %v", b.String(), err)
	}
}
