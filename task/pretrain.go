package task

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/exgrpo/exgrpo/policy"
)

// PretrainConfig configures the supervised warm-up: teacher-forced
// next-token training on worked solutions of the training distribution,
// which turns a random network into a weak base model for RL. Start from
// DefaultPretrainConfig; zero fields take its values, except Warmup and
// WeightDecay, where 0 means none.
type PretrainConfig struct {
	Model       policy.Config `json:"model"`        // policy shape; zero value = ModelConfig()
	Data        Spec          `json:"data"`         // training distribution; zero value (no Levels) = TrainSpec()
	Steps       int           `json:"steps"`        // optimiser steps; default 520
	Batch       int           `json:"batch"`        // sequences (fresh questions) per step; default 32
	LR          float64       `json:"lr"`           // peak AdamW learning rate; default 3e-3
	Warmup      int           `json:"warmup"`       // linear learning-rate warm-up, in steps; default 30 (0 = none)
	MinLRFrac   float64       `json:"min_lr_frac"`  // cosine decay ends at LR*MinLRFrac; default 0.1
	WeightDecay float64       `json:"weight_decay"` // AdamW decoupled decay of matrices; default 0.01
	Seed        uint64        `json:"seed"`         // initialisation and data order; default 1
}

// DefaultPretrainConfig is the warm-up behind the default base model of
// `exgrpo run`: on the held-out split it lands at pass@1 (T=1) of about
// 0.4, with every bucket 1..7 of K = 8 occupied, in well under a minute on
// the shared 2-core machine (docs/benchmarks/task.md has the figures). The
// result is steep in Steps (400: 0.21, 450: 0.28, 520: 0.40). 520 rather
// than 450 because RL needs a base whose correct answers mostly follow its
// worked steps: at 450 only about half of them do (the rest box a lucky
// digit), and RL on that base gains almost nothing in ten minutes, while
// from 520 it gains more than 10 points (docs/benchmarks/rl-tuning.md).
func DefaultPretrainConfig() PretrainConfig {
	return PretrainConfig{
		Model:       ModelConfig(),
		Data:        TrainSpec(),
		Steps:       520,
		Batch:       32,
		LR:          3e-3,
		Warmup:      30,
		MinLRFrac:   0.1,
		WeightDecay: 0.01,
		Seed:        1,
	}
}

// WeakPretrainConfig is a shorter warm-up giving a weaker base model
// (held-out pass@1 about 0.08, near the 0.1 of guessing a digit, and no
// question above k = 4),
// for the weak-base experiments (the paper's Llama setting).
func WeakPretrainConfig() PretrainConfig {
	c := DefaultPretrainConfig()
	c.Steps = 150
	return c
}

// ErrPretrain wraps warm-up failures; invalid configs wrap ErrSpec or
// policy.ErrConfig as well.
var ErrPretrain = errors.New("task: pretrain")

// withDefaults fills zero fields from DefaultPretrainConfig.
func (c PretrainConfig) withDefaults() PretrainConfig {
	d := DefaultPretrainConfig()
	if c.Model == (policy.Config{}) {
		c.Model = d.Model
	}
	if len(c.Data.Levels) == 0 {
		c.Data = d.Data
	}
	c.Data = c.Data.withDefaults()
	if c.Steps == 0 {
		c.Steps = d.Steps
	}
	if c.Batch == 0 {
		c.Batch = d.Batch
	}
	if c.LR == 0 {
		c.LR = d.LR
	}
	if c.MinLRFrac == 0 {
		c.MinLRFrac = d.MinLRFrac
	}
	if c.Seed == 0 {
		c.Seed = d.Seed
	}
	return c
}

// Validate checks c (after defaults) and says how to fix it.
func (c PretrainConfig) Validate() error {
	c = c.withDefaults()
	if err := c.Model.Validate(); err != nil {
		return fmt.Errorf("%w: model: %w", ErrPretrain, err)
	}
	if err := c.Data.Validate(); err != nil {
		return fmt.Errorf("%w: data: %w", ErrPretrain, err)
	}
	switch {
	case c.Model.Vocab != BuiltinTokenizer().Size():
		return fmt.Errorf("%w: model vocab %d, but the built-in tokenizer has %d tokens (set Model.Vocab = BuiltinTokenizer().Size())", ErrPretrain, c.Model.Vocab, BuiltinTokenizer().Size())
	case c.Model.Context < 1+MaxPromptChars+len(PromptSeparator)+MaxResponseChars+1:
		return fmt.Errorf("%w: model context %d cannot hold a built-in prompt and solution (%d tokens)", ErrPretrain, c.Model.Context, 1+MaxPromptChars+len(PromptSeparator)+MaxResponseChars+1)
	case c.Steps < 0:
		return fmt.Errorf("%w: steps %d < 0", ErrPretrain, c.Steps)
	case c.Batch < 1:
		return fmt.Errorf("%w: batch %d < 1", ErrPretrain, c.Batch)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("%w: learning rate %v must be positive and finite", ErrPretrain, c.LR)
	case c.Warmup < 0:
		return fmt.Errorf("%w: warmup %d < 0", ErrPretrain, c.Warmup)
	case !(c.MinLRFrac > 0 && c.MinLRFrac <= 1):
		return fmt.Errorf("%w: min_lr_frac %v outside (0, 1]", ErrPretrain, c.MinLRFrac)
	case !(c.WeightDecay >= 0):
		return fmt.Errorf("%w: weight decay %v < 0", ErrPretrain, c.WeightDecay)
	}
	return nil
}

// schedule is the learning-rate multiplier at step s: linear warm-up to 1,
// then cosine decay to MinLRFrac at the last step.
func (c PretrainConfig) schedule(s int) float64 {
	if s < c.Warmup {
		return float64(s+1) / float64(c.Warmup)
	}
	span := c.Steps - c.Warmup
	if span <= 1 {
		return 1
	}
	frac := math.Min(1, float64(s-c.Warmup)/float64(span-1))
	return c.MinLRFrac + (1-c.MinLRFrac)*0.5*(1+math.Cos(math.Pi*frac))
}

// PretrainProgress is reported after every optimiser step.
type PretrainProgress struct {
	Step, Steps int     // steps done, total
	Loss        float64 // this step's mean token negative log-likelihood (nats)
	SmoothLoss  float64 // exponential moving average of Loss (decay 0.95, bias-corrected)
	LR          float64
}

// PretrainResult summarises a warm-up.
type PretrainResult struct {
	Steps     int
	Tokens    int       // response tokens trained on
	FirstLoss float64   // loss of the first step (≈ ln V for a fresh model)
	FinalLoss float64   // smoothed loss at the end
	Losses    []float64 // per step
}

// Pretrain runs the warm-up from a fresh model: every step draws Batch fresh
// training questions, encodes prompt and worked solution, and minimises the
// mean negative log-likelihood of the solution tokens (EOS included) with
// dL/dlogp = -1/N per response token, N the batch's response tokens.
// progress (may be nil) is called after each step. It stops early with
// ctx.Err() wrapped when ctx is done. Deterministic given cfg.Seed (the
// policy's kernels are deterministic for a fixed GOMAXPROCS).
func Pretrain(ctx context.Context, cfg PretrainConfig, progress func(PretrainProgress)) (*policy.Model, PretrainResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, PretrainResult{}, err
	}
	cfg = cfg.withDefaults()
	tok := BuiltinTokenizer()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x7072657472616e)) // "pretran"
	m, err := policy.New(cfg.Model, rng)
	if err != nil {
		return nil, PretrainResult{}, fmt.Errorf("%w: %w", ErrPretrain, err)
	}
	res, err := Train(ctx, m, tok, cfg, rng, progress)
	return m, res, err
}

// Train continues teacher-forced training of m on cfg.Data for cfg.Steps
// steps, with the optimiser and schedule of cfg (cfg.Model and cfg.Seed are
// ignored; rng draws the questions). Pretrain calls it on a fresh model.
func Train(ctx context.Context, m *policy.Model, tok *policy.Tokenizer, cfg PretrainConfig, rng *rand.Rand, progress func(PretrainProgress)) (PretrainResult, error) {
	cfg.Model = m.Config
	if err := cfg.Validate(); err != nil {
		return PretrainResult{}, err
	}
	cfg = cfg.withDefaults()
	opt, err := policy.NewAdamW(policy.AdamWConfig{
		LR: cfg.LR, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: cfg.WeightDecay,
		ClipNorm: 1, SkipNorm: 500, Schedule: cfg.schedule,
	}, m)
	if err != nil {
		return PretrainResult{}, fmt.Errorf("%w: %w", ErrPretrain, err)
	}
	res := PretrainResult{Losses: make([]float64, 0, cfg.Steps)}
	seqs := make([]policy.Seq, cfg.Batch)
	grads := make([][]float32, cfg.Batch)
	ema, emaW := 0.0, 0.0
	for s := range cfg.Steps {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("%w: stopped at step %d of %d: %w", ErrPretrain, s, cfg.Steps, err)
		}
		n := 0
		for i := range seqs {
			p, err := cfg.Data.Draw(rng)
			if err != nil {
				return res, fmt.Errorf("%w: %w", ErrPretrain, err)
			}
			if seqs[i], err = TrainingSeq(tok, p); err != nil {
				return res, fmt.Errorf("%w: %w", ErrPretrain, err)
			}
			n += len(seqs[i].Tokens) - seqs[i].PromptLen
		}
		pass, err := m.Forward(seqs)
		if err != nil {
			return res, fmt.Errorf("%w: forward: %w", ErrPretrain, err)
		}
		g := float32(-1 / float64(n))
		loss := 0.0
		for i, lp := range pass.LogProbs {
			if cap(grads[i]) < len(lp) {
				grads[i] = make([]float32, len(lp), 2*len(lp))
			}
			grads[i] = grads[i][:len(lp)]
			for j, v := range lp {
				grads[i][j] = g
				loss -= float64(v)
			}
		}
		loss /= float64(n)
		if err := pass.Backward(grads, nil); err != nil {
			return res, fmt.Errorf("%w: backward: %w", ErrPretrain, err)
		}
		info := opt.Step(m)
		if s == 0 {
			res.FirstLoss = loss
		}
		ema = 0.95*ema + 0.05*loss
		emaW = 0.95*emaW + 0.05
		res.Steps, res.Tokens = s+1, res.Tokens+n
		res.Losses = append(res.Losses, loss)
		res.FinalLoss = ema / emaW
		if progress != nil {
			progress(PretrainProgress{Step: s + 1, Steps: cfg.Steps, Loss: loss, SmoothLoss: res.FinalLoss, LR: info.LR})
		}
	}
	return res, nil
}

// TrainingSeq is a problem's prompt and worked solution as one teacher-forced
// sequence (response = solution then EOS).
func TrainingSeq(tok *policy.Tokenizer, p Problem) (policy.Seq, error) {
	if p.Solution == "" {
		return policy.Seq{}, fmt.Errorf("%w: problem %s has no worked solution", ErrEncode, p.ID)
	}
	prompt, err := EncodePrompt(tok, p)
	if err != nil {
		return policy.Seq{}, err
	}
	resp, err := EncodeResponse(tok, p.Solution)
	if err != nil {
		return policy.Seq{}, fmt.Errorf("%w (problem %s)", err, p.ID)
	}
	return policy.Seq{Tokens: append(prompt, resp...), PromptLen: len(prompt)}, nil
}
