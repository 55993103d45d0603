package torch

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/trainertest"
)

// TestCrossCheckGoTrainer: the built-in task's model shape (policy.
// DefaultConfig: 2 layers, width 64, context 128), same weights and batch,
// the torch worker against the Go trainer (trainer.Builtin): log-probs and
// entropies within 1e-5, parameter gradients within 1e-4 relative to each
// tensor's largest, weights after one AdamW update within 1e-5; a step in
// micro-batches of at most 300 tokens equals the single-batch step (1e-5);
// at T = 1 and T = 0.5. The figures are logged.
func TestCrossCheckGoTrainer(t *testing.T) {
	needPython(t)
	ctx := context.Background()
	tok := task.BuiltinTokenizer()
	m, err := policy.New(policy.DefaultConfig(tok.Size()), rand.New(rand.NewPCG(11, 1)))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 2))
	for i := range m.Params {
		m.Params[i] += float32(rng.NormFloat64() * 0.02)
	}
	ck := policy.Checkpoint{Model: m, Tokenizer: tok}
	adam := policy.DefaultAdamW()
	adam.LR, adam.Eps = 1e-3, 1e-6 // see trainertest.Run on eps
	seqs := trainertest.Batch(21, m.Config, 16)

	for _, temp := range []float32{1, 0.5} {
		goTr, err := trainer.NewBuiltin(m.Clone(), tok, adam, trainer.BuiltinOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pyTr := startBuiltin(t, ck, adam, 0)
		pyMicro := startBuiltin(t, ck, adam, 300)
		dlp, dent := trainertest.Upstream(5, seqs)

		glp, gen, err := goTr.Forward(ctx, seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		plp, pen, err := pyTr.Forward(ctx, seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		dLP, dEnt := trainertest.MaxDiff(glp, plp), trainertest.MaxDiff(gen, pen)
		if dLP > 1e-5 || dEnt > 1e-5 {
			t.Errorf("T=%v: log-probs differ by %g, entropies by %g (tolerance 1e-5)", temp, dLP, dEnt)
		}
		if err := goTr.Backward(ctx, dlp, dent); err != nil {
			t.Fatal(err)
		}
		if err := pyTr.Backward(ctx, dlp, dent); err != nil {
			t.Fatal(err)
		}
		gg, _ := goTr.Gradients(ctx)
		pg, err := pyTr.Gradients(ctx)
		if err != nil {
			t.Fatal(err)
		}
		worst := gradRel(m, gg, pg)
		if worst > 1e-4 {
			t.Errorf("T=%v: gradients differ by %g relative (tolerance 1e-4)", temp, worst)
		}
		gi, _ := goTr.Step(ctx)
		pi, err := pyTr.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gw, _ := goTr.Weights(ctx)
		pw, err := pyTr.Weights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dW := maxAbs(gw.Params, pw.Params)
		if dW > 1e-5 {
			t.Errorf("T=%v: weights after one AdamW update differ by %g (tolerance 1e-5)", temp, dW)
		}
		if math.Abs(gi.GradNorm-pi.GradNorm) > 1e-4*gi.GradNorm {
			t.Errorf("T=%v: grad norm %g (Go) vs %g (torch)", temp, gi.GradNorm, pi.GradNorm)
		}

		// The same step in micro-batches of at most 300 tokens, as the
		// learner streams it (upstream gradients cut to each micro-batch).
		var lo, n, parts int
		flush := func(hi int) {
			if hi == lo {
				return
			}
			if _, _, err := pyMicro.Forward(ctx, seqs[lo:hi], temp); err != nil {
				t.Fatal(err)
			}
			if err := pyMicro.Backward(ctx, dlp[lo:hi], dent[lo:hi]); err != nil {
				t.Fatal(err)
			}
			lo, n = hi, 0
			parts++
		}
		for i, s := range seqs {
			if n+len(s.Tokens) > pyMicro.Info().MicroBatchTokens {
				flush(i)
			}
			n += len(s.Tokens)
		}
		flush(len(seqs))
		if _, err := pyMicro.Step(ctx); err != nil {
			t.Fatal(err)
		}
		mw, err := pyMicro.Weights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dMicro := maxAbs(mw.Params, pw.Params)
		if parts < 3 || dMicro > 1e-5 {
			t.Errorf("T=%v: %d micro-batches; weights differ from the single-batch step by %g (tolerance 1e-5)", temp, parts, dMicro)
		}
		t.Logf("T=%v: %d tokens; max |dlogp| %.2g, |dH| %.2g; gradients %.2g relative; grad norm %.6g vs %.6g; weights after AdamW %.2g; %d micro-batches vs one %.2g",
			temp, trainer.Responses(seqs), dLP, dEnt, worst, gi.GradNorm, pi.GradNorm, dW, parts, dMicro)
		pyTr.Close()
		pyMicro.Close()
	}
}

func maxAbs(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// gradRel is the largest per-tensor max |a−b| / max |a|.
func gradRel(m *policy.Model, a, b []float32) float64 {
	names, shapes := m.TensorNames()
	off, worst := 0, 0.0
	for i := range names {
		n := 1
		for _, d := range shapes[i] {
			n *= d
		}
		scale, d := 0.0, 0.0
		for j := off; j < off+n; j++ {
			scale = math.Max(scale, math.Abs(float64(a[j])))
			d = math.Max(d, math.Abs(float64(a[j])-float64(b[j])))
		}
		if scale > 0 {
			worst = math.Max(worst, d/scale)
		}
		off += n
	}
	return worst
}
