// Package trainertest is the conformance suite every trainer.Trainer
// passes: the built-in Go trainer and the PyTorch worker's client run the
// same checks against the built-in Go model as the reference (policy's
// ScoreAt, ForwardAt/Backward and AdamW on a copy of the same weights).
package trainertest

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
)

// Factory builds the trainer under test from a checkpoint (weights and
// tokenizer), AdamW settings and a micro-batch token budget (0 = none). The
// factory registers the trainer's Close with t.Cleanup or the suite does:
// the suite closes every trainer it gets.
type Factory func(t *testing.T, ck policy.Checkpoint, adam policy.AdamWConfig, microBatchTokens int) trainer.Trainer

// Tolerances of the suite (absolute, fp32 maths on both sides).
const (
	ScoreTol  = 1e-5 // log-probs and entropies
	WeightTol = 1e-5 // parameters after AdamW updates
	GradRel   = 1e-4 // gradients, relative to the largest |gradient| of the tensor
)

// Model returns the suite's reference checkpoint: a small built-in model
// (2 layers, width 32, the built-in task's tokenizer) with weights
// perturbed away from the initialisation so that every path carries
// gradient.
func Model(t testing.TB, tied bool) policy.Checkpoint {
	t.Helper()
	tok := task.BuiltinTokenizer()
	cfg := policy.Config{Vocab: tok.Size(), Context: 48, Layers: 2, Width: 32, Heads: 4, Tied: tied}
	m, err := policy.New(cfg, rand.New(rand.NewPCG(7, 1)))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 2))
	for i := range m.Params {
		m.Params[i] += float32(rng.NormFloat64() * 0.1)
	}
	return policy.Checkpoint{Model: m, Tokenizer: tok}
}

// Batch returns n random prompt+response sequences of the reference model.
func Batch(seed uint64, cfg policy.Config, n int) []policy.Seq {
	rng := rand.New(rand.NewPCG(seed, 3))
	seqs := make([]policy.Seq, n)
	for i := range seqs {
		p := 2 + rng.IntN(10)
		k := 1 + rng.IntN(cfg.Context-p)
		toks := []int32{1}
		for range p + k - 1 {
			toks = append(toks, int32(3+rng.IntN(cfg.Vocab-3)))
		}
		seqs[i] = policy.Seq{Tokens: toks, PromptLen: p}
	}
	return seqs
}

// Upstream returns random dL/dlogp and dL/dH of the shape of seqs'
// response tokens.
func Upstream(seed uint64, seqs []policy.Seq) (dlp, dent [][]float32) {
	rng := rand.New(rand.NewPCG(seed, 4))
	for _, s := range seqs {
		k := len(s.Tokens) - s.PromptLen
		a, b := make([]float32, k), make([]float32, k)
		for j := range a {
			a[j] = float32(rng.NormFloat64() * 0.05)
			b[j] = float32(rng.NormFloat64() * 0.01)
		}
		dlp, dent = append(dlp, a), append(dent, b)
	}
	return dlp, dent
}

// MaxDiff is the largest |a−b| over two ragged arrays (+Inf on a shape
// mismatch).
func MaxDiff(a, b [][]float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return math.Inf(1)
		}
		for j := range a[i] {
			d = math.Max(d, math.Abs(float64(a[i][j])-float64(b[i][j])))
		}
	}
	return d
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// referenceStep runs, on a clone of ck's model, Forward/Backward over the
// micro-batches (in order) and one AdamW step, returning the gradients
// before the step, the step info and the model after it.
func referenceStep(t *testing.T, ck policy.Checkpoint, adam policy.AdamWConfig, micro [][]policy.Seq, temp float32, seed uint64) ([]float32, policy.StepInfo, *policy.Model) {
	t.Helper()
	m := ck.Model.Clone()
	opt, err := policy.NewAdamW(adam, m)
	if err != nil {
		t.Fatal(err)
	}
	for i, mb := range micro {
		ps, err := m.ForwardAt(mb, temp)
		if err != nil {
			t.Fatal(err)
		}
		dlp, dent := Upstream(seed+uint64(i), mb)
		if err := ps.Backward(dlp, dent); err != nil {
			t.Fatal(err)
		}
	}
	grads := append([]float32(nil), m.Grads...)
	info := opt.Step(m)
	return grads, info, m
}

// Run runs the suite against the trainers newTrainer builds.
func Run(t *testing.T, newTrainer Factory) {
	ctx := context.Background()
	adam := policy.DefaultAdamW()
	adam.LR = 1e-3 // an update moves weights by up to 1e-3, 100 times the tolerance
	// AdamW's first update is lr·g/(|g|+eps): for a gradient element near
	// eps it amplifies float32 rounding of g (summation order differs
	// between backends and between micro-batchings) into a visible weight
	// difference. eps = 1e-6 keeps elements of |g| ~ 1e-8 from moving by more
	// than 1% of lr, so the weight tolerance tests the update, not rounding.
	adam.Eps = 1e-6
	build := func(t *testing.T, ck policy.Checkpoint, adam policy.AdamWConfig, mb int) trainer.Trainer {
		tr := newTrainer(t, policy.Checkpoint{Model: ck.Model.Clone(), Tokenizer: ck.Tokenizer}, adam, mb)
		t.Cleanup(func() { tr.Close() })
		return tr
	}

	t.Run("Info", func(t *testing.T) {
		ck := Model(t, true)
		tr := build(t, ck, adam, 0)
		in := tr.Info()
		if in.Params != ck.Model.NumParams() || in.Vocab != ck.Model.Config.Vocab || in.Context != ck.Model.Config.Context || in.Arch != "builtin" {
			t.Errorf("Info %+v, want %d params, vocab %d, context %d, arch builtin", in, ck.Model.NumParams(), ck.Model.Config.Vocab, ck.Model.Config.Context)
		}
	})

	for _, tc := range []struct {
		name string
		tied bool
		temp float32
	}{{"T=1 tied", true, 1}, {"T=0.5 tied", true, 0.5}, {"T=0.7 untied", false, 0.7}, {"T=1.3 untied", false, 1.3}} {
		t.Run("Score "+tc.name, func(t *testing.T) {
			ck := Model(t, tc.tied)
			tr := build(t, ck, adam, 0)
			seqs := Batch(1, ck.Model.Config, 7)
			rlp, ren, err := ck.Model.ScoreAt(seqs, tc.temp)
			if err != nil {
				t.Fatal(err)
			}
			lp, en, err := tr.Score(ctx, seqs, tc.temp)
			if err != nil {
				t.Fatal(err)
			}
			if d := MaxDiff(lp, rlp); d > ScoreTol {
				t.Errorf("Score log-probs differ from the reference by %g (tolerance %g)", d, ScoreTol)
			}
			if d := MaxDiff(en, ren); d > ScoreTol {
				t.Errorf("Score entropies differ from the reference by %g", d)
			}
			flp, fen, err := tr.Forward(ctx, seqs, tc.temp)
			if err != nil {
				t.Fatal(err)
			}
			if d := MaxDiff(flp, rlp); d > ScoreTol {
				t.Errorf("Forward log-probs differ from the reference by %g", d)
			}
			if d := MaxDiff(fen, ren); d > ScoreTol {
				t.Errorf("Forward entropies differ from the reference by %g", d)
			}
			prompt := seqs[0].Tokens[:seqs[0].PromptLen]
			var responses [][]int32
			var shared []policy.Seq
			for _, s := range seqs {
				r := s.Tokens[s.PromptLen:]
				if len(prompt)+len(r) <= ck.Model.Config.Context {
					responses = append(responses, r)
					shared = append(shared, policy.Seq{Tokens: append(slices.Clone(prompt), r...), PromptLen: len(prompt)})
				}
			}
			slp, sen, err := tr.ScoreShared(ctx, prompt, responses, tc.temp)
			if err != nil {
				t.Fatal(err)
			}
			xlp, xen, err := ck.Model.ScoreAt(shared, tc.temp)
			if err != nil {
				t.Fatal(err)
			}
			if d := MaxDiff(slp, xlp); d > ScoreTol {
				t.Errorf("ScoreShared log-probs differ from the reference by %g", d)
			}
			if d := MaxDiff(sen, xen); d > ScoreTol {
				t.Errorf("ScoreShared entropies differ from the reference by %g", d)
			}
		})
	}

	// The temperature fix (issue 12 item 4): what the built-in actor
	// records when it samples at T = 0.5 is what the trainer scores at
	// T = 0.5. Before the fix the sampler recorded T = 1 values, which
	// differ from these by far more than the tolerance (checked too).
	t.Run("SampleRecordsMatchScoresAtT0.5", func(t *testing.T) {
		ck := Model(t, true)
		tr := build(t, ck, adam, 0)
		tok := ck.Tokenizer
		var prompts [][]int32
		for i := range 6 {
			ids, err := task.EncodePrompt(tok, task.Problem{ID: "q", Prompt: []string{"12+7", "3*4", "9-2", "5+5", "8*1", "6-6"}[i]})
			if err != nil {
				t.Fatal(err)
			}
			prompts = append(prompts, ids)
		}
		const T = 0.5
		out, err := ck.Model.Sample(prompts, policy.SampleOptions{Temperature: T, MaxNew: 20, EOS: tok.EOS()}, rand.New(rand.NewPCG(3, 3)))
		if err != nil {
			t.Fatal(err)
		}
		var seqs []policy.Seq
		var rec, recEnt [][]float32
		for i, s := range out {
			seqs = append(seqs, policy.Seq{Tokens: append(slices.Clone(prompts[i]), s.Tokens...), PromptLen: len(prompts[i])})
			rec, recEnt = append(rec, s.LogProbs), append(recEnt, s.Entropies)
		}
		lp, en, err := tr.Score(ctx, seqs, T)
		if err != nil {
			t.Fatal(err)
		}
		if d := MaxDiff(rec, lp); d > ScoreTol {
			t.Errorf("recorded log-probs at T=0.5 differ from the trainer's scores at T=0.5 by %g (tolerance %g)", d, ScoreTol)
		}
		if d := MaxDiff(recEnt, en); d > ScoreTol {
			t.Errorf("recorded entropies at T=0.5 differ from the trainer's at T=0.5 by %g", d)
		}
		lp1, _, err := tr.Score(ctx, seqs, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d := MaxDiff(lp1, lp); d < 1e-2 {
			t.Errorf("scores at T=1 and T=0.5 differ by only %g: the temperature is ignored", d)
		}
	})

	for _, tc := range []struct {
		name string
		temp float32
		mb   int // micro-batches the batch is split into
		tied bool
	}{{"T=1 one batch", 1, 1, true}, {"T=1 three micro-batches", 1, 3, true}, {"T=0.5 untied two micro-batches", 0.5, 2, false}} {
		t.Run("Step "+tc.name, func(t *testing.T) {
			ck := Model(t, tc.tied)
			tr := build(t, ck, adam, 0)
			seqs := Batch(2, ck.Model.Config, 9)
			var micro [][]policy.Seq
			for i := range tc.mb {
				micro = append(micro, seqs[i*len(seqs)/tc.mb:(i+1)*len(seqs)/tc.mb])
			}
			rgrads, rinfo, rm := referenceStep(t, ck, adam, micro, tc.temp, 10)
			for i, mb := range micro {
				if _, _, err := tr.Forward(ctx, mb, tc.temp); err != nil {
					t.Fatal(err)
				}
				dlp, dent := Upstream(10+uint64(i), mb)
				if err := tr.Backward(ctx, dlp, dent); err != nil {
					t.Fatal(err)
				}
			}
			if gr, ok := tr.(trainer.GradientReader); ok {
				g, err := gr.Gradients(ctx)
				if err != nil {
					t.Fatal(err)
				}
				checkGrads(t, ck.Model, g, rgrads)
			}
			info, err := tr.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(info.GradNorm-rinfo.GradNorm) > 1e-4*rinfo.GradNorm || info.Skipped != rinfo.Skipped {
				t.Errorf("step info %+v, reference %+v", info, rinfo)
			}
			w, err := tr.Weights(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(w.Params, rm.Params); d > WeightTol {
				t.Errorf("weights after one AdamW update differ from the reference by %g (tolerance %g)", d, WeightTol)
			}
			if d := maxAbsDiff(w.Params, ck.Model.Params); d < 1e-3 {
				t.Errorf("the update moved no weight by more than %g", d)
			}
			// Gradients are zero after the step: a second step with no
			// backward changes nothing but the moments' decay.
			if gr, ok := tr.(trainer.GradientReader); ok {
				g, _ := gr.Gradients(ctx)
				for i, v := range g {
					if v != 0 {
						t.Fatalf("gradient %d is %g after Step, want 0", i, v)
					}
				}
			}
		})
	}

	t.Run("MicroBatchedStepEqualsSingleBatch", func(t *testing.T) {
		ck := Model(t, true)
		seqs := Batch(5, ck.Model.Config, 8)
		run := func(split int) *policy.Model {
			tr := build(t, ck, adam, 0)
			for i := range split {
				mb := seqs[i*len(seqs)/split : (i+1)*len(seqs)/split]
				// The upstream gradients of the whole batch, cut to the
				// micro-batch, so both runs differentiate one loss.
				dlp, dent := Upstream(77, seqs)
				lo := i * len(seqs) / split
				if _, _, err := tr.Forward(ctx, mb, 0.5); err != nil {
					t.Fatal(err)
				}
				if err := tr.Backward(ctx, dlp[lo:lo+len(mb)], dent[lo:lo+len(mb)]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tr.Step(ctx); err != nil {
				t.Fatal(err)
			}
			w, err := tr.Weights(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return w.Clone()
		}
		one, four := run(1), run(4)
		if d := maxAbsDiff(one.Params, four.Params); d > WeightTol {
			t.Errorf("four micro-batches then one step differ from one batch by %g (tolerance %g)", d, WeightTol)
		}
	})

	t.Run("SkipOnLargeNorm", func(t *testing.T) {
		ck := Model(t, true)
		a := adam
		a.SkipNorm, a.ClipNorm = 1e-9, 1e-9
		tr := build(t, ck, a, 0)
		seqs := Batch(3, ck.Model.Config, 3)
		if _, _, err := tr.Forward(ctx, seqs, 1); err != nil {
			t.Fatal(err)
		}
		dlp, dent := Upstream(3, seqs)
		if err := tr.Backward(ctx, dlp, dent); err != nil {
			t.Fatal(err)
		}
		info, err := tr.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Skipped || !(info.GradNorm > 0) {
			t.Errorf("step info %+v, want a skipped step with a positive norm", info)
		}
		w, _ := tr.Weights(ctx)
		if d := maxAbsDiff(w.Params, ck.Model.Params); d != 0 {
			t.Errorf("a skipped step moved weights by %g", d)
		}
	})

	t.Run("BadCalls", func(t *testing.T) {
		ck := Model(t, true)
		tr := build(t, ck, adam, 0)
		seqs := Batch(4, ck.Model.Config, 2)
		dlp, dent := Upstream(4, seqs)
		if err := tr.Backward(ctx, dlp, dent); err == nil {
			t.Error("Backward without Forward succeeded")
		}
		if _, _, err := tr.Score(ctx, []policy.Seq{{Tokens: []int32{1, 9999}, PromptLen: 1}}, 1); err == nil {
			t.Error("Score of a token outside the vocabulary succeeded")
		}
		if _, _, err := tr.Score(ctx, seqs, 0); err == nil {
			t.Error("Score at temperature 0 succeeded")
		}
		if _, _, err := tr.Forward(ctx, seqs, 1); err != nil {
			t.Fatal(err)
		}
		if err := tr.Backward(ctx, dlp[:1], dent[:1]); err == nil {
			t.Error("Backward with the wrong number of sequences succeeded")
		}
		// The trainer still works after refused calls.
		if _, _, err := tr.Score(ctx, seqs, 1); err != nil {
			t.Errorf("Score after refused calls: %v", err)
		}
	})

	t.Run("CheckpointRoundTrip", func(t *testing.T) {
		ck := Model(t, false)
		seqs := Batch(6, ck.Model.Config, 4)
		step := func(tr trainer.Trainer, seed uint64) {
			t.Helper()
			if _, _, err := tr.Forward(ctx, seqs, 1); err != nil {
				t.Fatal(err)
			}
			dlp, dent := Upstream(seed, seqs)
			if err := tr.Backward(ctx, dlp, dent); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		tr := build(t, ck, adam, 0)
		step(tr, 1)
		w, err := tr.Weights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o, err := tr.Optimizer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		saved := policy.Checkpoint{Model: w.Clone(), Tokenizer: ck.Tokenizer}
		savedOpt := &policy.AdamW{Config: o.Config, M: slices.Clone(o.M), V: slices.Clone(o.V), T: o.T}
		if savedOpt.T != 1 {
			t.Errorf("optimiser step count %d after one update, want 1", savedOpt.T)
		}
		dir := t.TempDir()
		if err := tr.SaveWeights(ctx, dir); err != nil {
			t.Fatal(err)
		}
		onDisk, err := policy.LoadFile(filepath.Join(dir, trainer.BuiltinWeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(onDisk.Model.Params, saved.Model.Params); d != 0 {
			t.Errorf("SaveWeights file differs from Weights by %g", d)
		}
		optPath := filepath.Join(dir, "opt.safetensors")
		if err := tr.SaveOptimizer(ctx, optPath); err != nil {
			t.Fatal(err)
		}
		step(tr, 2)
		want, _ := tr.Weights(ctx)
		want = want.Clone()

		// Restore through the in-memory state into a fresh trainer.
		tr2 := build(t, Model(t, false), adam, 0)
		if err := tr2.Restore(ctx, saved.Model, savedOpt); err != nil {
			t.Fatal(err)
		}
		step(tr2, 2)
		got, _ := tr2.Weights(ctx)
		if d := maxAbsDiff(got.Params, want.Params); d > WeightTol {
			t.Errorf("Restore then a step differs from the uninterrupted run by %g", d)
		}
		// Restore through the files.
		tr3 := build(t, Model(t, false), adam, 0)
		if err := tr3.Restore(ctx, onDisk.Model, nil); err != nil {
			t.Fatal(err)
		}
		if err := tr3.LoadOptimizer(ctx, optPath); err != nil {
			t.Fatal(err)
		}
		step(tr3, 2)
		got3, _ := tr3.Weights(ctx)
		if d := maxAbsDiff(got3.Params, want.Params); d > WeightTol {
			t.Errorf("SaveOptimizer/LoadOptimizer then a step differs from the uninterrupted run by %g", d)
		}
		if err := tr3.LoadOptimizer(ctx, filepath.Join(dir, "missing")); err == nil {
			t.Error("LoadOptimizer of a missing file succeeded")
		}
		if _, err := os.Stat(optPath); err != nil {
			t.Error(err)
		}
	})

	t.Run("Tokenize", func(t *testing.T) {
		ck := Model(t, true)
		tr := build(t, ck, adam, 0)
		texts := []string{"12+7", "3*4"}
		got, err := tr.Tokenize(ctx, texts)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range texts {
			want, err := task.EncodePrompt(ck.Tokenizer, task.Problem{ID: "q", Prompt: s})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[i], want) {
				t.Errorf("Tokenize(%q) = %v, want %v", s, got[i], want)
			}
		}
		if _, err := tr.Tokenize(ctx, []string{"\u2603"}); err == nil {
			t.Error("Tokenize of a character outside the alphabet succeeded")
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		ck := Model(t, true)
		tr := build(t, ck, adam, 0)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := tr.Score(cctx, Batch(1, ck.Model.Config, 1), 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Score with a cancelled context: %v, want context.Canceled", err)
		}
	})
}

// checkGrads compares gradients per tensor, relative to the tensor's
// largest reference magnitude (GradRel).
func checkGrads(t *testing.T, m *policy.Model, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d gradients, want %d", len(got), len(want))
	}
	names, shapes := m.TensorNames()
	off := 0
	for i, name := range names {
		n := 1
		for _, d := range shapes[i] {
			n *= d
		}
		scale, d := 0.0, 0.0
		for j := off; j < off+n; j++ {
			scale = math.Max(scale, math.Abs(float64(want[j])))
			d = math.Max(d, math.Abs(float64(got[j])-float64(want[j])))
		}
		if d > GradRel*scale+1e-9 {
			t.Errorf("%s: gradients differ by %g, %g relative to the largest (tolerance %g)", name, d, d/scale, GradRel)
		}
		off += n
	}
}
