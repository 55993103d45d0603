package policy

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// maxDiff is the largest |a−b| over two ragged arrays.
func maxDiff(t *testing.T, a, b [][]float32) float64 {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("lengths %d and %d", len(a), len(b))
	}
	d := 0.0
	for i := range a {
		if len(a[i]) != len(b[i]) {
			t.Fatalf("row %d: lengths %d and %d", i, len(a[i]), len(b[i]))
		}
		for j := range a[i] {
			d = math.Max(d, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	return d
}

func samplePrompts(rng *rand.Rand, cfg Config, n int) [][]int32 {
	prompts := make([][]int32, n)
	for i := range prompts {
		p := []int32{bosID}
		for range 1 + rng.IntN(6) {
			p = append(p, int32(numSpecial+rng.IntN(cfg.Vocab-numSpecial)))
		}
		prompts[i] = p
	}
	return prompts
}

// TestSampleAgreesWithRecompute checks the KV-cache sampler against two full
// recomputations of the same sequences without a cache at the sampling
// temperature: ScoreAt (the inference kernels, one pass over the whole
// sequence) and ForwardAt (the training kernels). Tolerance 1e-5 absolute on
// log-probs and entropies. At T != 1 it also checks that the records are not
// those of T = 1 (they differ by more than 1e-2 somewhere), which is what
// the sampler recorded before the temperature fix.
func TestSampleAgreesWithRecompute(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		opts SampleOptions
	}{
		{"T=1 tied", tinyConfig(true), SampleOptions{Temperature: 1, MaxNew: 9, EOS: eosID}},
		{"T=0.6 untied", tinyConfig(false), SampleOptions{Temperature: 0.6, MaxNew: 9, EOS: eosID}},
		{"T=0.5 top-p 1 tied", tinyConfig(true), SampleOptions{Temperature: 0.5, TopP: 1, MaxNew: 9, EOS: eosID}},
		{"T=1.5 no EOS", tinyConfig(true), SampleOptions{Temperature: 1.5, MaxNew: 8, EOS: -1}},
		{"wide", Config{Vocab: 20, Context: 40, Layers: 3, Width: 48, Heads: 4}, SampleOptions{MaxNew: 30, EOS: eosID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestModel(t, tc.cfg, 11)
			rng := rand.New(rand.NewPCG(5, 6))
			prompts := samplePrompts(rng, tc.cfg, 13)
			out, err := m.Sample(prompts, tc.opts, rng)
			if err != nil {
				t.Fatal(err)
			}
			seqs := make([]Seq, len(out))
			var lp, en [][]float32
			eos, length := 0, 0
			for i, s := range out {
				if len(s.Tokens) != len(s.LogProbs) || len(s.Tokens) != len(s.Entropies) || len(s.Tokens) == 0 {
					t.Fatalf("sample %d: %d tokens, %d logprobs, %d entropies", i, len(s.Tokens), len(s.LogProbs), len(s.Entropies))
				}
				switch s.Finish {
				case FinishEOS:
					eos++
					if s.Tokens[len(s.Tokens)-1] != tc.opts.EOS || slices.Contains(s.Tokens[:len(s.Tokens)-1], tc.opts.EOS) {
						t.Errorf("sample %d finished eos but tokens are %v", i, s.Tokens)
					}
				case FinishLength:
					length++
					if len(s.Tokens) != tc.opts.MaxNew {
						t.Errorf("sample %d finished length with %d tokens, MaxNew %d", i, len(s.Tokens), tc.opts.MaxNew)
					}
				default:
					t.Errorf("sample %d: finish %q", i, s.Finish)
				}
				seqs[i] = Seq{Tokens: append(slices.Clone(prompts[i]), s.Tokens...), PromptLen: len(prompts[i])}
				lp, en = append(lp, s.LogProbs), append(en, s.Entropies)
			}
			if tc.opts.EOS < 0 && eos > 0 {
				t.Errorf("%d samples stopped at EOS with EOS disabled", eos)
			}
			temp := tc.opts.Temperature
			if temp == 0 {
				temp = 1
			}
			slp, sen, err := m.ScoreAt(seqs, temp)
			if err != nil {
				t.Fatal(err)
			}
			if temp != 1 {
				lp1, _, err := m.Score(seqs)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxDiff(t, lp, lp1); d < 1e-2 {
					t.Errorf("records at T=%v are within %g of the T=1 log-probs: the temperature is not reflected", temp, d)
				}
			}
			if d := maxDiff(t, lp, slp); d > 1e-5 {
				t.Errorf("Sample vs Score log-probs differ by %g", d)
			}
			if d := maxDiff(t, en, sen); d > 1e-5 {
				t.Errorf("Sample vs Score entropies differ by %g", d)
			}
			ps, err := m.ForwardAt(seqs, temp)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(t, lp, ps.LogProbs); d > 1e-5 {
				t.Errorf("Sample vs Forward log-probs differ by %g", d)
			}
			if d := maxDiff(t, en, ps.Entropies); d > 1e-5 {
				t.Errorf("Sample vs Forward entropies differ by %g", d)
			}
		})
	}
}

// TestScoreChunking scores more tokens than one chunk holds and compares
// with per-sequence scoring (tolerance 1e-6).
func TestScoreChunking(t *testing.T) {
	cfg := Config{Vocab: 9, Context: 64, Layers: 1, Width: 8, Heads: 2, Tied: true}
	m := newTestModel(t, cfg, 2)
	rng := rand.New(rand.NewPCG(1, 1))
	var lens, prompts []int
	total := 0
	for total <= 2*scoreChunkTokens {
		n := 2 + rng.IntN(62)
		lens, prompts = append(lens, n), append(prompts, 1+rng.IntN(n-1))
		total += n
	}
	seqs := randomSeqs(rng, cfg, lens, prompts)
	lp, en, err := m.Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, len(seqs) / 2, len(seqs) - 1} {
		l1, e1, err := m.Score(seqs[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(t, lp[i:i+1], l1); d > 1e-6 {
			t.Errorf("seq %d: log-probs differ by %g", i, d)
		}
		if d := maxDiff(t, en[i:i+1], e1); d > 1e-6 {
			t.Errorf("seq %d: entropies differ by %g", i, d)
		}
	}
}

func TestSampleDeterministic(t *testing.T) {
	cfg := tinyConfig(true)
	m := newTestModel(t, cfg, 3)
	prompts := samplePrompts(rand.New(rand.NewPCG(9, 9)), cfg, 20)
	opts := SampleOptions{Temperature: 0.8, MaxNew: 8, EOS: eosID}
	a, err := m.Sample(prompts, opts, rand.New(rand.NewPCG(4, 4)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Clone().Sample(prompts, opts, rand.New(rand.NewPCG(4, 4)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if !slices.Equal(a[i].Tokens, b[i].Tokens) || !slices.Equal(a[i].LogProbs, b[i].LogProbs) || a[i].Finish != b[i].Finish {
			t.Fatalf("sample %d differs between runs with the same seed", i)
		}
	}
}

// TestDrawFrequencies: every token appears with its softmax probability
// (tolerance 0.02 absolute on frequencies from 20000 draws).
func TestDrawFrequencies(t *testing.T) {
	z := []float32{0.1, 2, 1.9, -1, 0.5}
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float64, len(z))
	counts := make([]int, len(z))
	_, sum, _ := softmaxFill(z, w)
	for range 20000 {
		counts[drawWeighted(w, sum, rng.Float64())]++
	}
	_, _, lse := softmaxStats(z, -1)
	for v := range z {
		p := math.Exp(float64(z[v]) - lse)
		if f := float64(counts[v]) / 20000; math.Abs(f-p) > 0.02 {
			t.Errorf("token %d: frequency %.3f, probability %.3f", v, f, p)
		}
	}
}

func TestSampleRejectsBadInput(t *testing.T) {
	m := newTestModel(t, tinyConfig(true), 1)
	rng := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct {
		name    string
		prompts [][]int32
		opts    SampleOptions
	}{
		{"empty prompt", [][]int32{{}}, SampleOptions{MaxNew: 2}},
		{"too long", [][]int32{make([]int32, 10)}, SampleOptions{MaxNew: 7}},
		{"bad token", [][]int32{{1, 99}}, SampleOptions{MaxNew: 2}},
		{"negative temperature", [][]int32{{1}}, SampleOptions{Temperature: -1, MaxNew: 2}},
		{"top-p above 1", [][]int32{{1}}, SampleOptions{TopP: 1.5, MaxNew: 2}},
		{"top-p below 1 refused", [][]int32{{1}}, SampleOptions{TopP: 0.9, MaxNew: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := m.Sample(tc.prompts, tc.opts, rng); err == nil {
				t.Error("no error")
			}
		})
	}
}
