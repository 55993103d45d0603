package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/engine/evaluate"
	"github.com/exgrpo/exgrpo/internal/progress"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// engineEvalFlags are eval's flags for an engine (the paper's protocol).
type engineEvalFlags struct {
	topP       float64
	maxTokens  int
	kPerSource string
	parallel   int
	system     string
	thinkGate  bool
}

func addEngineEvalFlags(fs *flag.FlagSet) *engineEvalFlags {
	d := evaluate.DefaultConfig()
	f := &engineEvalFlags{}
	fs.Float64Var(&f.topP, "top-p", float64(d.TopP), "nucleus mass (with --engine)")
	fs.IntVar(&f.maxTokens, "max-tokens", d.MaxTokens, "response token cap (with --engine; clipped to the context)")
	fs.StringVar(&f.kPerSource, "k-per-source", "paper", "samples per question by data_source, e.g. aime24=32,amc=32; 'paper': avg@32 on aime24, aime25, amc; 'none' (with --engine)")
	fs.IntVar(&f.parallel, "parallel", d.Parallel, "questions in flight (with --engine)")
	fs.StringVar(&f.system, "system-prompt", "", "system prompt of every problem: 'paper' or the text (with --engine)")
	fs.BoolVar(&f.thinkGate, "think-gate", false, "grade only the text after the last </think> (with --engine)")
	return f
}

type engineEvalArgs struct {
	datasets  []string
	k         int
	kSet      bool
	temp      float64
	tempSet   bool
	seed      int64
	kind      string
	asJSON    bool
	tokenizer string
}

func parseKPerSource(s string) (map[string]int, error) {
	switch s {
	case "paper":
		return evaluate.PaperKPerSource(), nil
	case "none", "":
		return nil, nil
	}
	out := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return nil, fmt.Errorf("%w: --k-per-source item %q (want source=k)", errUsage, kv)
		}
		out[name] = n
	}
	return out, nil
}

// runEngineEval is `exgrpo eval --engine ...`: avg@k per data_source of
// the model an engine serves, with a progress bar, as a table or JSON.
func runEngineEval(ctx context.Context, ef *engineFlags, ev *engineEvalFlags, a engineEvalArgs) error {
	if len(a.datasets) == 0 {
		return fmt.Errorf("%w: --engine evaluation needs --dataset FILE[,FILE] (parquet or JSONL)", errUsage)
	}
	ecfg, err := ef.config()
	if err != nil {
		return err
	}
	cfg := evaluate.DefaultConfig()
	if a.kSet {
		cfg.K = a.k
	}
	if a.tempSet {
		cfg.Temperature = float32(a.temp)
	}
	cfg.TopP, cfg.MaxTokens, cfg.Seed, cfg.StopIDs, cfg.Parallel = float32(ev.topP), ev.maxTokens, a.seed, ecfg.StopTokenIDs, ev.parallel
	if cfg.KPerSource, err = parseKPerSource(ev.kPerSource); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := task.DatasetOptions{System: ev.system, ThinkGate: ev.thinkGate}
	if opts.System == "paper" {
		opts.System = task.PaperSystemPrompt
	}
	var problems []task.Problem
	for _, path := range a.datasets {
		ds, err := task.LoadFile(path, opts)
		if err != nil {
			return err
		}
		for _, p := range ds.Problems {
			if p.Source == "" {
				p.Source = ds.Name
			}
			if a.kind != "" {
				p.Kind = a.kind
			}
			problems = append(problems, p)
		}
	}
	c, err := engine.New(ecfg.Client)
	if err != nil {
		return err
	}
	info, err := c.Start(ctx)
	if err != nil {
		return err
	}
	tokenize := evaluate.EngineTokenizer(c)
	if a.tokenizer != "" { // the built-in format, from a checkpoint's tokenizer
		ck, err := policy.LoadFile(a.tokenizer)
		if err != nil {
			return err
		}
		tokenize = func(_ context.Context, p task.Problem) ([]int32, error) { return task.EncodePrompt(ck.Tokenizer, p) }
	}
	bar := progress.New(os.Stderr, "evaluating", int64(len(problems)), 30)
	rep, err := evaluate.Run(ctx, c, info, tokenize, problems, cfg, func(done, total int) {
		bar.Set(int64(done), fmt.Sprintf("%d/%d questions", done, total))
	})
	bar.Finish()
	if err != nil {
		return err
	}
	if a.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(os.Stdout)
}
