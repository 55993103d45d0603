package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/internal/progress"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

func init() {
	register("pretrain", "supervised warm-up of the built-in policy into a weak base model", runPretrain)
}

func runPretrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pretrain", flag.ContinueOnError)
	def := task.DefaultPretrainConfig()
	out := fs.String("out", "base.safetensors", "checkpoint file to write")
	weak := fs.Bool("weak", false, "weaker base preset (task.WeakPretrainConfig: fewer steps)")
	steps := fs.Int("steps", 0, fmt.Sprintf("optimiser steps (default %d, or %d with --weak)", def.Steps, task.WeakPretrainConfig().Steps))
	batch := fs.Int("batch", def.Batch, "sequences per step")
	lr := fs.Float64("lr", def.LR, "peak learning rate (linear warm-up, cosine decay)")
	seed := fs.Uint64("seed", def.Seed, "seed of initialisation and data order")
	levels := fs.String("levels", "", "training levels (operand counts) with optional weights, e.g. 2:1,3:2,4:3,5:3 (default the built-in mix)")
	layers := fs.Int("layers", def.Model.Layers, "transformer layers")
	width := fs.Int("width", def.Model.Width, "residual width")
	heads := fs.Int("heads", def.Model.Heads, "attention heads")
	evalK := fs.Int("eval-k", 8, "after training, evaluate on the built-in held-out set with this many samples per question (0 = skip)")
	evalSeed := fs.Uint64("eval-seed", 1, "sampling seed of the evaluation")
	quiet := fs.Bool("quiet", false, "no progress bar")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg := def
	if *weak {
		cfg = task.WeakPretrainConfig()
	}
	if *steps > 0 {
		cfg.Steps = *steps
	}
	cfg.Batch, cfg.LR, cfg.Seed = *batch, *lr, *seed
	cfg.Model.Layers, cfg.Model.Width, cfg.Model.Heads = *layers, *width, *heads
	if *levels != "" {
		l, w, err := parseLevelWeights(*levels)
		if err != nil {
			return fmt.Errorf("%w: --levels: %v", errUsage, err)
		}
		cfg.Data.Levels, cfg.Data.Weights = l, w
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	progress, done := pretrainBar(cfg.Steps, *quiet)
	start := time.Now()
	m, res, err := task.Pretrain(ctx, cfg, progress)
	done()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if err := policy.SaveFile(*out, task.BaseCheckpoint(m, cfg, res)); err != nil {
		return err
	}
	summary := pretrainSummary{
		Out: *out, Key: task.PretrainKey(cfg), Params: m.NumParams(), Steps: res.Steps, Tokens: res.Tokens,
		FirstLoss: res.FirstLoss, FinalLoss: res.FinalLoss, Seconds: elapsed.Seconds(),
		TokensPerSec: float64(res.Tokens) / elapsed.Seconds(),
	}
	if *evalK > 0 {
		ds, err := task.Builtin("heldout")
		if err != nil {
			return err
		}
		rep, err := task.Evaluate(m, task.BuiltinTokenizer(), ds, *evalK, 1, rand.New(rand.NewPCG(*evalSeed, 0)))
		if err != nil {
			return err
		}
		rep.Questions = nil
		summary.Eval = &rep
	}
	return summary.write(os.Stdout, *asJSON)
}

type pretrainSummary struct {
	Out          string           `json:"out"`
	Key          string           `json:"key"`
	Params       int              `json:"params"`
	Steps        int              `json:"steps"`
	Tokens       int              `json:"tokens"`
	FirstLoss    float64          `json:"first_loss"`
	FinalLoss    float64          `json:"final_loss"`
	Seconds      float64          `json:"seconds"`
	TokensPerSec float64          `json:"train_tokens_per_sec"`
	Eval         *task.EvalReport `json:"eval,omitempty"`
}

func (s pretrainSummary) write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(w, "wrote %s (config key %s): %d parameters, %d steps, %d response tokens in %.1f s (%.0f tokens/s), loss %.3f -> %.3f\n",
		s.Out, s.Key, s.Params, s.Steps, s.Tokens, s.Seconds, s.TokensPerSec, s.FirstLoss, s.FinalLoss)
	if s.Eval != nil {
		fmt.Fprintln(w)
		return s.Eval.WriteTable(w)
	}
	return nil
}

// pretrainBar returns a progress callback drawing a bar on stderr (nothing
// when quiet) and a function that finishes it.
func pretrainBar(steps int, quiet bool) (func(task.PretrainProgress), func()) {
	if quiet {
		return nil, func() {}
	}
	bar := progress.New(os.Stderr, "warm-up", int64(steps), 30)
	return func(p task.PretrainProgress) {
		bar.Set(int64(p.Step), fmt.Sprintf("loss %.3f", p.SmoothLoss))
	}, bar.Finish
}

// parseLevelWeights reads "2:1,3:2,4" (level[:weight], weight 1 when
// omitted).
func parseLevelWeights(s string) ([]int, []float64, error) {
	var levels []int
	var weights []float64
	for _, part := range strings.Split(s, ",") {
		l, w, hasW := strings.Cut(strings.TrimSpace(part), ":")
		level, err := strconv.Atoi(l)
		if err != nil {
			return nil, nil, fmt.Errorf("level %q: %v", l, err)
		}
		weight := 1.0
		if hasW {
			if weight, err = strconv.ParseFloat(w, 64); err != nil {
				return nil, nil, fmt.Errorf("weight %q: %v", w, err)
			}
		}
		levels = append(levels, level)
		weights = append(weights, weight)
	}
	return levels, weights, nil
}
