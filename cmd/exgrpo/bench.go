package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/exgrpo/exgrpo/bench"
	"github.com/exgrpo/exgrpo/weights"
)

// benchTarget is one `exgrpo bench <name>` target: its summary and a
// function that parses its flags into the bench package's Config and runs
// it, writing to w. Adding a target: a file in bench/ with the harness, an
// entry here with its flags.
type benchTarget struct {
	summary string
	run     func(ctx context.Context, w io.Writer, args []string) error
}

var benchTargets = map[string]benchTarget{
	"endurance": {"roles as processes under repeated kill -9 for --duration: ledger, pool, memory, streams, step rate (not in bench all)", benchEndurance},
	"dataplane": {"trajectories/s through actor -> ROLLOUTS -> verifier -> SCORED verdicts -> learner join -> replay fetch vs bare JetStream", benchDataplane},
	"learner":   {"step-time overhead of experience management: ExGRPO step / on-policy step at equal batch (paper: +19%)", benchLearner},
	"policy":    {"policy training and sampling tokens/s, matmul GFLOP/s vs SGEMM peak, vs PyTorch CPU", benchPolicy},
	"replay":    {"experience pool: sample 64 questions (goal 100 us), fold a 128x8x1024 report (goal 5 ms), snapshot MB/s", benchReplay},
	"verifier":  {"answers/s per core on typical boxed answers (goal 20k) and worst-case time per item (bound 50 ms)", benchVerifier},
	"trainer":   {"one training step: Go trainer vs the PyTorch worker, and the worker protocol's overhead", benchTrainer},
	"weights":   {"delta versions of a 1.5B bf16 model after an AdamW step (bytes, GB/s per core), and N actors holding a version vs one full get", benchWeights},
}

const benchAllSummary = "every other benchmark target in turn (--quick: their short forms, about 10 minutes), then one summary table"

func init() {
	register("bench", "measure a part against its anchor (bench <target> [flags])", runBench)
}

func benchNames() []string {
	names := make([]string, 0, len(benchTargets)+1)
	for n := range benchTargets {
		names = append(names, n)
	}
	names = append(names, "all")
	sort.Strings(names)
	return names
}

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(os.Stderr, "usage: exgrpo bench <target> [flags]\n\ntargets:\n")
		for _, n := range benchNames() {
			s := benchAllSummary
			if t, ok := benchTargets[n]; ok {
				s = t.summary
			}
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, s)
		}
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	var err error
	if args[0] == "all" {
		err = benchAll(ctx, os.Stdout, args[1:])
	} else if t, ok := benchTargets[args[0]]; ok {
		err = t.run(ctx, os.Stdout, args[1:])
	} else {
		return fmt.Errorf("%w: unknown benchmark %q (see exgrpo bench -h)", errUsage, args[0])
	}
	if errors.Is(err, bench.ErrConfig) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

func benchAll(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("bench all", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "every target's short form (--quick)")
	skip := fs.String("skip", "", "comma-separated targets to leave out")
	only := fs.String("only", "", "comma-separated targets to run (default all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// endurance runs for half an hour by design: only with --only.
	skipped := map[string]bool{"all": true, "endurance": true}
	for _, n := range expList(*skip) {
		skipped[n] = true
	}
	var names []string
	if *only != "" {
		for _, n := range expList(*only) {
			if _, ok := benchTargets[n]; !ok {
				return fmt.Errorf("%w: --only: unknown benchmark %q (see exgrpo bench -h)", errUsage, n)
			}
			names = append(names, n)
		}
	} else {
		for _, n := range benchNames() {
			if !skipped[n] {
				names = append(names, n)
			}
		}
	}
	cfg := bench.AllConfig{Quick: *quick, Args: strings.Join(args, " "), Commit: buildCommit()}
	for _, n := range names {
		cfg.Targets = append(cfg.Targets, bench.Target{Name: n, Run: benchTargets[n].run})
	}
	return bench.All(ctx, w, cfg)
}

func benchDataplane(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultDataplane()
	fs := flag.NewFlagSet("bench dataplane", flag.ContinueOnError)
	fs.IntVar(&c.N, "n", c.N, "trajectories per measurement")
	fs.IntVar(&c.Tokens, "tokens", c.Tokens, "response tokens per trajectory")
	fs.IntVar(&c.Reps, "reps", c.Reps, "repetitions of each measurement (best is reported)")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "short run (n=500, reps=1)")
	fs.IntVar(&c.VerifierConcurrency, "verifier-concurrency", c.VerifierConcurrency, "verifier worker concurrency")
	fs.BoolVar(&c.Memory, "memory", c.Memory, "memory storage for every stream (default file storage)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", c.CPUProfile, "write a CPU profile of the whole run (server included) to this file")
	fs.StringVar(&c.Phase, "phase", c.Phase, "what to run: both, bare or pipeline (one phase alone, e.g. to profile it)")
	fs.BoolVar(&c.Skeleton, "skeleton", c.Skeleton, "also measure the pipeline's message flow alone (no codecs, no grading) for its CPU floor")
	fs.BoolVar(&c.Ops, "ops", c.Ops, "also measure each JetStream operation of the data path alone (CPU per message) and their sums")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Dataplane(ctx, w, c)
}

func benchLearner(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultLearner()
	fs := flag.NewFlagSet("bench learner", flag.ContinueOnError)
	fs.IntVar(&c.Steps, "steps", c.Steps, "step pairs (one on-policy, one ExGRPO, alternating so both see the same load)")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "short run (5 step pairs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Learner(ctx, w, c)
}

func benchPolicy(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultPolicy()
	fs := flag.NewFlagSet("bench policy", flag.ContinueOnError)
	fs.StringVar(&c.Sizes, "sizes", c.Sizes, "model sizes: small (2 layers, width 64), medium (4 layers, width 128)")
	fs.IntVar(&c.Reps, "reps", c.Reps, "repetitions (best is reported)")
	fs.IntVar(&c.Steps, "steps", c.Steps, "training steps per repetition (sampling: max(2, steps/3) calls of the whole batch)")
	fs.IntVar(&c.TrainBatch, "train-batch", c.TrainBatch, "training sequences per step")
	fs.IntVar(&c.SampleBatch, "sample-batch", c.SampleBatch, "prompts per Sample call")
	fs.StringVar(&c.Python, "python", c.Python, "Python with torch for the comparison (empty = skip)")
	fs.StringVar(&c.TorchScript, "torch-script", c.TorchScript, "PyTorch reference script")
	fs.StringVar(&c.TorchThreads, "torch-threads", c.TorchThreads, "PyTorch thread counts to try (best is reported)")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "short run (reps 1, steps 4, small only, torch 1 thread)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Policy(ctx, w, c)
}

func benchReplay(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultReplay()
	fs := flag.NewFlagSet("bench replay", flag.ContinueOnError)
	fs.IntVar(&c.Questions, "questions", c.Questions, "pool size for the sample benchmark")
	fs.Float64Var(&c.Seconds, "seconds", c.Seconds, "wall seconds per measurement")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "short run (pool of 10^5, 0.3 s per measurement)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Replay(ctx, w, c)
}

func benchVerifier(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultVerifier()
	fs := flag.NewFlagSet("bench verifier", flag.ContinueOnError)
	fs.Float64Var(&c.Seconds, "seconds", c.Seconds, "wall seconds per throughput measurement")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "short run (0.3 s per measurement, one pass over the stress items)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Verifier(ctx, w, c)
}

func benchWeights(ctx context.Context, w io.Writer, args []string) error {
	c := bench.DefaultWeights()
	fs := flag.NewFlagSet("bench weights", flag.ContinueOnError)
	fs.IntVar(&c.Layers, "layers", c.Layers, "decoder layers of the Qwen2.5-1.5B-shaped model of the codec measurement (28: all, 1.54B elements)")
	fs.IntVar(&c.Vocab, "vocab", c.Vocab, "vocabulary (embedding rows)")
	fs.IntVar(&c.HoldLayers, "hold-layers", c.HoldLayers, "decoder layers of the model the actors hold (transport measurement)")
	fs.Int64Var(&c.ShardBytes, "shard-bytes", c.ShardBytes, "largest safetensors shard")
	fs.Float64Var(&c.LR, "lr", c.LR, "AdamW learning rate of the simulated step")
	actors := fs.String("actors", "1,4,8", "actor counts N to measure (empty: no transport measurement)")
	comps := fs.String("compressors", "diff-huff,diff-fse,zstd1,s2", "delta encodings to measure (the first is the transport's): diff-huff, diff-fse, zstd1, zstd3, s2, raw")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "random seed of the weights and gradients")
	fs.BoolVar(&c.NoCodec, "no-codec", c.NoCodec, "skip the codec measurement (only N actors holding versions)")
	fs.BoolVar(&c.Quick, "quick", c.Quick, "small model (2 layers, vocab 16384; actors hold 1 layer), N = 1, 4")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.Actors = nil
	if *actors != "" {
		var err error
		if c.Actors, err = intList(*actors); err != nil {
			return fmt.Errorf("%w: --actors: %v", errUsage, err)
		}
	}
	c.Compressors = nil
	for _, n := range expList(*comps) {
		c.Compressors = append(c.Compressors, weights.Compressor(n))
	}
	return bench.Weights(ctx, w, c)
}

// intList parses a comma-separated list of positive integers.
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range expList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list")
	}
	return out, nil
}
