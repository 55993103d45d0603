package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmark workloads: the RL shapes (prompts of 16–20 tokens, responses of
// 48) at two model sizes. Vocabulary 100 (about the built-in tokenizer's).
var benchSizes = []struct {
	name string
	cfg  Config
}{
	{"small", Config{Vocab: 100, Context: 128, Layers: 2, Width: 64, Heads: 4, Tied: true}},
	{"medium", Config{Vocab: 100, Context: 128, Layers: 4, Width: 128, Heads: 4, Tied: true}},
}

func benchSeqs(cfg Config, b, prompt, resp int, rng *rand.Rand) []Seq {
	seqs := make([]Seq, b)
	for i := range seqs {
		toks := make([]int32, prompt+resp)
		toks[0] = bosID
		for j := 1; j < len(toks); j++ {
			toks[j] = int32(numSpecial + rng.IntN(cfg.Vocab-numSpecial))
		}
		seqs[i] = Seq{Tokens: toks, PromptLen: prompt}
	}
	return seqs
}

// BenchmarkTrainStep: Forward + Backward (dL/dlogp and dL/dentropy) + AdamW
// on 32 sequences of 16 prompt + 48 response tokens; reports tokens/s.
func BenchmarkTrainStep(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			m, _ := New(sz.cfg, rng)
			opt, _ := NewAdamW(DefaultAdamW(), m)
			seqs := benchSeqs(sz.cfg, 32, 16, 48, rng)
			dl, de := make([][]float32, len(seqs)), make([][]float32, len(seqs))
			for i := range seqs {
				dl[i], de[i] = make([]float32, 48), make([]float32, 48)
				for j := range dl[i] {
					dl[i][j], de[i][j] = -1e-3, 1e-4
				}
			}
			ProfileMatmuls(true)
			b.ResetTimer()
			for b.Loop() {
				ps, err := m.Forward(seqs)
				if err != nil {
					b.Fatal(err)
				}
				if err := ps.Backward(dl, de); err != nil {
					b.Fatal(err)
				}
				opt.Step(m)
			}
			st := ProfileMatmuls(false)
			b.ReportMetric(float64(b.N*32*64)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(st.GFLOPS(), "matmul-GFLOP/s")
		})
	}
}

// BenchmarkSample: 64 prompts of 20 tokens, 48 new tokens each (EOS off),
// T=1; reports generated tokens/s.
func BenchmarkSample(b *testing.B) {
	for _, sz := range benchSizes {
		for _, batch := range []int{64, 256} {
			b.Run(fmt.Sprintf("%s/B=%d", sz.name, batch), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				m, _ := New(sz.cfg, rng)
				prompts := make([][]int32, batch)
				for i, s := range benchSeqs(sz.cfg, batch, 20, 0, rng) {
					prompts[i] = s.Tokens
				}
				opts := SampleOptions{Temperature: 1, MaxNew: 48, EOS: -1}
				ProfileMatmuls(true)
				b.ResetTimer()
				for b.Loop() {
					if _, err := m.Sample(prompts, opts, rng); err != nil {
						b.Fatal(err)
					}
				}
				st := ProfileMatmuls(false)
				b.ReportMetric(float64(b.N*batch*48)/b.Elapsed().Seconds(), "tokens/s")
				b.ReportMetric(st.GFLOPS(), "matmul-GFLOP/s")
			})
		}
	}
}

// BenchmarkSgemm: the backend's peak on a large square product.
func BenchmarkSgemm(b *testing.B) {
	for _, n := range []int{256, 1024} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a, x, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
			for i := range a {
				a[i], x[i] = float32(i%7)*0.1, float32(i%5)*0.1
			}
			for b.Loop() {
				Sgemm(false, true, n, n, n, a, n, x, n, 0, c, n)
			}
			b.ReportMetric(2*float64(n*n*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkScore: log-probs and entropies of 64 sequences of 20 prompt + 48
// response tokens (what the learner and replay ask for); reports tokens/s
// over all 4,352 tokens.
func BenchmarkScore(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			m, _ := New(sz.cfg, rng)
			seqs := benchSeqs(sz.cfg, 64, 20, 48, rng)
			for b.Loop() {
				if _, _, err := m.Score(seqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*64*68)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
