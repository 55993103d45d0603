package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

func init() {
	register("eval", "pass@1 / pass@K of a checkpoint on held-out, OOD or imported datasets", runEval)
}

func runEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	ckPath := fs.String("checkpoint", "", "checkpoint file (safetensors) to evaluate (required without --engine; with it, the built-in tokenizer to make prompts with)")
	datasets := fs.String("dataset", "", "comma-separated JSONL dataset files (fields id, problem|prompt|question, answer|solution; kind defaults to math)")
	sets := fs.String("set", "", "comma-separated built-in sets (see exgrpo tasks --list); default heldout when no --dataset")
	k := fs.Int("k", 8, "samples per question")
	temp := fs.Float64("temperature", 1, "sampling temperature")
	seed := fs.Uint64("seed", 1, "sampling seed")
	kind := fs.String("kind", "", "verifier kind for every problem, overriding the file's (e.g. arith or math)")
	asJSON := fs.Bool("json", false, "print the reports as JSON")
	perQuestion := fs.Bool("per-question", false, "with --json, include each question's k")
	ef := addEngineFlags(fs)
	ev := addEngineEvalFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if ef.api != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		return runEngineEval(ctx, ef, ev, engineEvalArgs{datasets: splitList(*datasets), k: *k, kSet: set["k"],
			temp: *temp, tempSet: set["temperature"], seed: int64(*seed), kind: *kind, asJSON: *asJSON, tokenizer: *ckPath})
	}
	if *ckPath == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: need --checkpoint FILE (and no positional arguments)", errUsage)
	}
	if *k < 1 {
		return fmt.Errorf("%w: --k %d < 1", errUsage, *k)
	}
	ck, err := policy.LoadFile(*ckPath)
	if err != nil {
		return err
	}
	if err := ck.Model.CheckFinite(); err != nil {
		return fmt.Errorf("checkpoint %s: %w", *ckPath, err)
	}
	var all []task.Dataset
	for _, name := range splitList(*sets) {
		ds, err := task.Builtin(name)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		all = append(all, ds)
	}
	for _, path := range splitList(*datasets) {
		ds, err := readDatasetFile(path)
		if err != nil {
			return err
		}
		all = append(all, ds)
	}
	if len(all) == 0 {
		ds, err := task.Builtin("heldout")
		if err != nil {
			return err
		}
		all = append(all, ds)
	}
	out := evalOutput{Checkpoint: *ckPath, Params: ck.Model.NumParams()}
	for i, ds := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(ds.Problems) == 0 {
			return fmt.Errorf("%w: dataset %q has no problems", errUsage, ds.Name)
		}
		if *kind != "" {
			for j := range ds.Problems {
				ds.Problems[j].Kind = *kind
			}
		}
		start := time.Now()
		rep, err := task.Evaluate(ck.Model, ck.Tokenizer, ds, *k, float32(*temp), rand.New(rand.NewPCG(*seed, uint64(i))))
		if err != nil {
			return fmt.Errorf("eval %s: %w", ds.Name, err)
		}
		if !*perQuestion {
			rep.Questions = nil
		}
		out.Reports = append(out.Reports, rep)
		if !*asJSON {
			if i > 0 {
				fmt.Println()
			}
			fmt.Printf("== %s (%d questions, %.1f s)\n", ds.Name, len(ds.Problems), time.Since(start).Seconds())
			if err := rep.WriteTable(os.Stdout); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return nil
}

type evalOutput struct {
	Checkpoint string            `json:"checkpoint"`
	Params     int               `json:"params"`
	Reports    []task.EvalReport `json:"reports"`
}

// readDatasetFile loads a JSONL dataset named after its file.
func readDatasetFile(path string) (task.Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return task.Dataset{}, err
	}
	defer f.Close()
	ds, err := task.ReadJSONL(f)
	if err != nil {
		return ds, fmt.Errorf("%s: %w", path, err)
	}
	ds.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return ds, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
