package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomTokens returns n ids drawn from the non-special tokens.
func randomTokens(rng *rand.Rand, cfg Config, n int) []int32 {
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32(numSpecial + rng.IntN(cfg.Vocab-numSpecial))
	}
	return toks
}

// scoreConcat is the reference for ScoreShared: Score on every
// prompt+response sequence.
func scoreConcat(t *testing.T, m *Model, prompt []int32, responses [][]int32) (logps, ents [][]float32) {
	t.Helper()
	seqs := make([]Seq, len(responses))
	for i, r := range responses {
		seqs[i] = Seq{Tokens: append(slices.Clone(prompt), r...), PromptLen: len(prompt)}
	}
	logps, ents, err := m.Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	return logps, ents
}

// TestScoreSharedMatchesScore compares ScoreShared with Score on the
// concatenated sequences, tolerance 1e-5 absolute on log-probs and
// entropies, for prompts of one token (BOS alone) up to most of the
// context, responses of one token, responses that fill the context, and
// mixed lengths in one call.
func TestScoreSharedMatchesScore(t *testing.T) {
	const tol = 1e-5
	configs := []struct {
		name string
		cfg  Config
	}{
		{"tiny tied", tinyConfig(true)},
		{"tiny untied", tinyConfig(false)},
		{"wide", Config{Vocab: 20, Context: 40, Layers: 3, Width: 48, Heads: 4}},
		{"builtin", Config{Vocab: 99, Context: 74, Layers: 2, Width: 64, Heads: 4, Tied: true}}, // task.ModelConfig()
	}
	for ci, c := range configs {
		m := newTestModel(t, c.cfg, uint64(20+ci))
		T := c.cfg.Context
		rng := rand.New(rand.NewPCG(uint64(ci), 7))
		prompt := func(n int) []int32 { return append([]int32{bosID}, randomTokens(rng, c.cfg, n-1)...) }
		resps := func(lens ...int) [][]int32 {
			out := make([][]int32, len(lens))
			for i, n := range lens {
				out[i] = randomTokens(rng, c.cfg, n)
			}
			return out
		}
		mixed := func(p, n int) [][]int32 {
			lens := make([]int, n)
			for i := range lens {
				lens[i] = 1 + rng.IntN(T-p)
			}
			lens[0], lens[n-1] = 1, T-p // a length-1 response and one at the context limit
			return resps(lens...)
		}
		for _, tc := range []struct {
			name      string
			prompt    []int32
			responses [][]int32
		}{
			{"BOS only, one token each", prompt(1), resps(1, 1, 1)},
			{"BOS only, mixed", prompt(1), mixed(1, 5)},
			{"one candidate at the limit", prompt(3), resps(T - 3)},
			{"one length-1 candidate", prompt(4), resps(1)},
			{"mixed, 32 candidates", prompt(T / 4), mixed(T/4, 32)},
			{"long prompt", prompt(T - 2), resps(1, 2, 2, 1)},
			{"duplicates", prompt(5), func() [][]int32 { r := resps(4, 6); return [][]int32{r[0], r[1], r[0]} }()},
		} {
			t.Run(fmt.Sprintf("%s/%s", c.name, tc.name), func(t *testing.T) {
				wantLp, wantEn := scoreConcat(t, m, tc.prompt, tc.responses)
				promptCopy := slices.Clone(tc.prompt)
				lp, en, err := m.ScoreShared(tc.prompt, tc.responses)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxDiff(t, wantLp, lp); d > tol {
					t.Errorf("log-probs differ from Score by %g (tol %g)", d, tol)
				}
				if d := maxDiff(t, wantEn, en); d > tol {
					t.Errorf("entropies differ from Score by %g (tol %g)", d, tol)
				}
				if !slices.Equal(promptCopy, tc.prompt) {
					t.Error("ScoreShared changed the prompt")
				}
			})
		}
	}
}

// TestScoreSharedChunking scores more response rows than one chunk holds
// (so later chunks reuse the cache slots and the prompt's keys and values
// copied once) and compares with Score, tolerance 1e-5.
func TestScoreSharedChunking(t *testing.T) {
	cfg := Config{Vocab: 9, Context: 64, Layers: 2, Width: 8, Heads: 2, Tied: true}
	m := newTestModel(t, cfg, 2)
	rng := rand.New(rand.NewPCG(3, 3))
	prompt := append([]int32{bosID}, randomTokens(rng, cfg, 6)...)
	var responses [][]int32
	for total := 0; total <= 2*scoreChunkTokens; {
		n := 1 + rng.IntN(cfg.Context-len(prompt))
		responses = append(responses, randomTokens(rng, cfg, n))
		total += n
	}
	wantLp, wantEn := scoreConcat(t, m, prompt, responses)
	lp, en, err := m.ScoreShared(prompt, responses)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(t, wantLp, lp); d > 1e-5 {
		t.Errorf("log-probs differ from Score by %g (tol 1e-5)", d)
	}
	if d := maxDiff(t, wantEn, en); d > 1e-5 {
		t.Errorf("entropies differ from Score by %g (tol 1e-5)", d)
	}
}

func TestScoreSharedRejectsBadInput(t *testing.T) {
	cfg := tinyConfig(true) // Vocab 11, Context 16
	m := newTestModel(t, cfg, 1)
	for _, tc := range []struct {
		name      string
		prompt    []int32
		responses [][]int32
	}{
		{"empty prompt", nil, [][]int32{{4}}},
		{"prompt token too large", []int32{bosID, 11}, [][]int32{{4}}},
		{"negative prompt token", []int32{bosID, -1}, [][]int32{{4}}},
		{"empty response", []int32{bosID}, [][]int32{{4}, {}}},
		{"response token too large", []int32{bosID}, [][]int32{{4, 99}}},
		{"negative response token", []int32{bosID}, [][]int32{{-2}}},
		{"over the context", []int32{bosID, 4, 5}, [][]int32{{4}, make([]int32, 14)}},
		{"empty prompt, no responses", []int32{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp, en, err := m.ScoreShared(tc.prompt, tc.responses)
			if !errors.Is(err, ErrInput) {
				t.Fatalf("error %v, want ErrInput", err)
			}
			if lp != nil || en != nil {
				t.Error("results returned with an error")
			}
		})
	}
	// No responses: nothing to score, no error.
	lp, en, err := m.ScoreShared([]int32{bosID, 4}, nil)
	if err != nil || len(lp) != 0 || len(en) != 0 {
		t.Errorf("no responses: %d, %d results, error %v", len(lp), len(en), err)
	}
	// Exactly at the context is accepted.
	if _, _, err := m.ScoreShared([]int32{bosID, 4, 5}, [][]int32{make([]int32, 13)}); err != nil {
		t.Errorf("prompt 3 + response 13 = Context 16 rejected: %v", err)
	}
}

// BenchmarkScoreShared compares Score on the concatenated sequences with
// ScoreShared for the candidates of one replayed question (ALGORITHM.md E7)
// at the built-in task's model size (task.ModelConfig(): vocabulary 99,
// context 74, 2 layers, width 64, 4 heads, tied):
//   - builtin/32x34: 32 candidates (the E7 cap) to a 5-operand training
//     question, BOS + 9 characters + "=" = 11 prompt tokens, each response
//     the 34 tokens of its worked solution with EOS (the most common
//     training question; mean prompt 9, mean response 28);
//   - learner/8x30: BenchmarkStepOverhead's question, 8 candidates of 30
//     tokens after a prompt of 14.
//
// It reports response tokens scored per second.
func BenchmarkScoreShared(b *testing.B) {
	cfg := Config{Vocab: 99, Context: 74, Layers: 2, Width: 64, Heads: 4, Tied: true}
	for _, bc := range []struct {
		name                string
		cands, prompt, resp int
	}{
		{"builtin/32x34", 32, 11, 34},
		{"learner/8x30", 8, 14, 30},
	} {
		rng := rand.New(rand.NewPCG(1, 1))
		m, _ := New(cfg, rng)
		prompt := append([]int32{bosID}, randomTokens(rng, cfg, bc.prompt-1)...)
		responses := make([][]int32, bc.cands)
		seqs := make([]Seq, bc.cands)
		for i := range responses {
			responses[i] = randomTokens(rng, cfg, bc.resp)
			seqs[i] = Seq{Tokens: append(slices.Clone(prompt), responses[i]...), PromptLen: len(prompt)}
		}
		tokens := float64(bc.cands * bc.resp)
		b.Run(bc.name+"/score", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := m.Score(seqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(bc.name+"/shared", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := m.ScoreShared(prompt, responses); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
