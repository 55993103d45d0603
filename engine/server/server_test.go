package server_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/engine/server"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
)

// writeCheckpoint saves a random built-in model (seed) and returns its path.
func writeCheckpoint(t *testing.T, dir string, seed uint64) (string, *policy.Model) {
	t.Helper()
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.safetensors")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.WriteCheckpoint(f, policy.Checkpoint{Model: m, Tokenizer: task.BuiltinTokenizer()}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, m
}

type setup struct {
	srv    *server.Server
	client engine.Client
	model  *policy.Model
	url    string
}

func start(t *testing.T, api, endpoint string, mutate func(*server.Config)) setup {
	t.Helper()
	path, m := writeCheckpoint(t, t.TempDir(), 7)
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
	ecfg := engine.DefaultConfig(api, hs.URL)
	if endpoint != "" {
		ecfg.Endpoint = endpoint
	}
	c, err := engine.New(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	return setup{srv: s, client: c, model: m, url: hs.URL}
}

var apis = []struct{ name, api, endpoint string }{
	{"vllm generate", engine.APIVLLM, engine.EndpointGenerate},
	{"vllm completions", engine.APIVLLM, engine.EndpointCompletions},
	{"sglang", engine.APISGLang, ""},
}

func prompt(t *testing.T) []int32 {
	ids, err := task.EncodePrompt(task.BuiltinTokenizer(), task.Problem{ID: "q", Prompt: "12+34"})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestClientsAgainstServer runs each client against the real server: the
// answers validate, the same seed gives the same completions and another
// seed others, max tokens is honoured (the server's own default is 16),
// prompt log-probs equal the model's Score (tolerance 1e-5), and top-k
// entropy bounds bracket the exact entropy.
func TestClientsAgainstServer(t *testing.T) {
	ctx := context.Background()
	for _, a := range apis {
		t.Run(a.name, func(t *testing.T) {
			st := start(t, a.api, a.endpoint, nil)
			info, err := st.client.Start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cfg := task.ModelConfig()
			if info.MaxModelLen != cfg.Context || info.Vocab != cfg.Vocab {
				t.Fatalf("info %+v for context %d, vocab %d", info, cfg.Context, cfg.Vocab)
			}
			if err := st.client.Health(ctx); err != nil {
				t.Fatal(err)
			}
			p := prompt(t)
			req := engine.Request{Prompt: p, N: 4, Temperature: 1, TopP: 1, MaxTokens: 40, Seed: 11,
				StopTokenIDs: []int32{task.BuiltinTokenizer().EOS()}, TopLogProbs: 3}
			a1, err := st.client.Generate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			a2, err := st.client.Generate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a1, a2) {
				t.Fatal("the same seed gave different completions")
			}
			req.Seed = 12
			b, err := st.client.Generate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if reflect.DeepEqual(a1, b) {
				t.Fatal("another seed gave the same completions")
			}
			long := false
			for _, c := range a1 {
				long = long || len(c.Tokens) > 16
				seq := policy.Seq{Tokens: append(append([]int32(nil), p...), c.Tokens...), PromptLen: len(p)}
				_, ents, err := st.model.Score([]policy.Seq{seq})
				if err != nil {
					t.Fatal(err)
				}
				lo, err := engine.Entropies(c, wire.EntropyTopKLower, cfg.Vocab)
				if err != nil {
					t.Fatal(err)
				}
				hi, _ := engine.Entropies(c, wire.EntropyTopKUpper, cfg.Vocab)
				for j := range c.Tokens {
					if lo[j] > ents[0][j]+1e-4 || hi[j] < ents[0][j]-1e-4 {
						t.Fatalf("token %d: bounds [%v, %v] do not hold the entropy %v", j, lo[j], hi[j], ents[0][j])
					}
				}
			}
			if !long {
				t.Fatal("no completion longer than 16 tokens: max_tokens not honoured?")
			}
			seq := append(append([]int32(nil), p...), a1[0].Tokens...)
			got, err := st.client.Score(ctx, seq, len(p), "")
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := st.model.Score([]policy.Seq{{Tokens: seq, PromptLen: len(p)}})
			for j := range got {
				if math.Abs(float64(got[j]-want[0][j])) > 1e-5 {
					t.Fatalf("score %d: engine %v, model %v", j, got[j], want[0][j])
				}
			}
		})
	}
}

// TestLogProbsAtTaskTemperature: the recorded log-probs are those of the
// sampling distribution softmax(logits/T), what the trainer computes at the
// task's temperature (tolerance 1e-4). At T != 1 this needs policy.Sample
// to record log-probs at the sampling temperature.
func TestLogProbsAtTaskTemperature(t *testing.T) {
	ctx := context.Background()
	for _, temp := range []float32{1, 0.6} {
		for _, a := range apis {
			t.Run(a.name+"/T="+ftoa(temp), func(t *testing.T) {
				st := start(t, a.api, a.endpoint, nil)
				if _, err := st.client.Start(ctx); err != nil {
					t.Fatal(err)
				}
				p := prompt(t)
				cs, err := st.client.Generate(ctx, engine.Request{Prompt: p, N: 2, Temperature: temp, TopP: 1, MaxTokens: 30, Seed: 3,
					StopTokenIDs: []int32{task.BuiltinTokenizer().EOS()}})
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					seq := policy.Seq{Tokens: append(append([]int32(nil), p...), c.Tokens...), PromptLen: len(p)}
					dist, err := st.model.LogSoftmax([]policy.Seq{seq}, temp)
					if err != nil {
						t.Fatal(err)
					}
					for j, id := range c.Tokens {
						if d := math.Abs(float64(c.LogProbs[j] - dist[0][j][id])); d > 1e-4 {
							t.Fatalf("token %d: recorded %v, trainer at T=%v %v", j, c.LogProbs[j], temp, dist[0][j][id])
						}
					}
				}
			})
		}
	}
}

func ftoa(f float32) string {
	if f == 1 {
		return "1"
	}
	return "0.6"
}

// TestServerControl: reload from a directory changes the weights and the
// version; pause holds new requests until resume; the prefix cache serves
// the same salt and prompt from before a reload (as vLLM's does) until it is
// reset, and a new salt misses it.
func TestServerControl(t *testing.T) {
	ctx := context.Background()
	for _, a := range []struct{ name, api string }{{"vllm", engine.APIVLLM}, {"sglang", engine.APISGLang}} {
		t.Run(a.name, func(t *testing.T) {
			st := start(t, a.api, "", nil)
			if _, err := st.client.Start(ctx); err != nil {
				t.Fatal(err)
			}
			p := prompt(t)
			old, err := st.client.Score(ctx, p, 1, "v0")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			_, m2 := writeCheckpoint(t, dir, 99)
			if err := st.client.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := st.client.Score(ctx, p, 1, "other"); done <- err }()
			select {
			case err := <-done:
				t.Fatalf("a request was served while paused (%v)", err)
			default:
			}
			if err := st.client.Reload(ctx, dir, 5); err != nil {
				t.Fatal(err)
			}
			if err := st.client.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if a.api == engine.APISGLang {
				if v, err := st.client.WeightVersion(ctx); err != nil || v != "5" {
					t.Fatalf("weight version %q, %v; want 5", v, err)
				}
			}
			want, _, _ := m2.Score([]policy.Seq{{Tokens: p, PromptLen: 1}})
			stale, err := st.client.Score(ctx, p, 1, "v0")
			if err != nil {
				t.Fatal(err)
			}
			if a.api == engine.APIVLLM && !reflect.DeepEqual(stale, old) {
				t.Fatal("the same salt after a reload missed the prefix cache (the server should behave like vLLM)")
			}
			fresh, err := st.client.Score(ctx, p, 1, "v5")
			if err != nil {
				t.Fatal(err)
			}
			if a.api == engine.APIVLLM && !close(fresh, want[0]) {
				t.Fatalf("a new salt was served stale log-probs %v, want %v", fresh, want[0])
			}
			if err := st.client.ResetCache(ctx); err != nil {
				t.Fatal(err)
			}
			after, err := st.client.Score(ctx, p, 1, "v0")
			if err != nil {
				t.Fatal(err)
			}
			if !close(after, want[0]) {
				t.Fatalf("after a cache reset: %v, want the new weights' %v", after, want[0])
			}
		})
	}
}

func close(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-5 {
			return false
		}
	}
	return true
}

// TestServerRefusesWhatItCannotServe: top_k, min_p, other stop ids and a
// prompt past max_model_len are rejected (4xx), not silently ignored.
func TestServerRefusesWhatItCannotServe(t *testing.T) {
	st := start(t, engine.APIVLLM, "", nil)
	ctx := context.Background()
	if _, err := st.client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p := prompt(t)
	for name, r := range map[string]engine.Request{
		"stop id not EOS":  {Prompt: p, N: 1, Temperature: 1, TopP: 1, MaxTokens: 4, StopTokenIDs: []int32{5}},
		"past the context": {Prompt: p, N: 1, Temperature: 1, TopP: 1, MaxTokens: 500, StopTokenIDs: []int32{2}},
		"id outside vocab": {Prompt: []int32{1, 999}, N: 1, Temperature: 1, TopP: 1, MaxTokens: 4, StopTokenIDs: []int32{2}},
	} {
		if _, err := st.client.Generate(ctx, r); !errors.Is(err, engine.ErrRejected) {
			t.Errorf("%s: %v, want ErrRejected", name, err)
		}
	}
	raw := start(t, engine.APIVLLM, "", func(c *server.Config) { c.LogprobsMode = "raw_logprobs" })
	if _, err := raw.client.Start(ctx); !errors.Is(err, engine.ErrLogprobsMode) {
		t.Fatalf("raw_logprobs server: %v, want ErrLogprobsMode", err)
	}
}
