// Package trainerbench measures the trainer backends on one training step
// (forward with gradient, backward with given upstream gradients, AdamW):
// the built-in Go trainer, the PyTorch worker through its socket, and the
// same step timed inside the worker with no socket, so that the protocol's
// overhead is (through the socket − inside) / inside. `exgrpo bench
// trainer` prints what Run returns.
package trainerbench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/torch"
)

// Sizes are the model sizes of `exgrpo bench policy` (docs/benchmarks/policy.md).
var Sizes = map[string]policy.Config{
	"small":  {Vocab: 100, Context: 128, Layers: 2, Width: 64, Heads: 4, Tied: true},
	"medium": {Vocab: 100, Context: 128, Layers: 4, Width: 128, Heads: 4, Tied: true},
}

// Config of Run.
type Config struct {
	Size      string  // a key of Sizes; default medium
	Seqs      int     // sequences per step; default 32
	Prompt    int     // prompt tokens per sequence; default 16
	Response  int     // response tokens per sequence; default 48
	Rounds    int     // measurement rounds (each side once per round, interleaved); default 10
	Temp      float32 // scoring temperature; default 1
	Python    string  // worker interpreter ("" = the client's default)
	Threads   int     // torch (and BLAS) threads of the worker; default 1
	SkipTorch bool    // measure the Go trainer only
}

func (c Config) withDefaults() Config {
	if c.Size == "" {
		c.Size = "medium"
	}
	if c.Seqs <= 0 {
		c.Seqs = 32
	}
	if c.Prompt <= 0 {
		c.Prompt = 16
	}
	if c.Response <= 0 {
		c.Response = 48
	}
	if c.Rounds <= 0 {
		c.Rounds = 10
	}
	if c.Temp == 0 {
		c.Temp = 1
	}
	if c.Threads <= 0 {
		c.Threads = 1
	}
	return c
}

// Result holds medians over the rounds, in seconds per step.
type Result struct {
	Size           string
	Params         int
	Tokens         int     // packed tokens per step
	GoStep         float64 // the built-in Go trainer
	TorchStep      float64 // the worker through the socket: Forward, Backward, Step calls
	InsideStep     float64 // the same step timed inside the worker (no socket)
	Ping           float64 // one empty round trip
	Overhead       float64 // (TorchStep − InsideStep) / InsideStep
	PairedOverhead float64 // median over rounds of that round's socket / inside − 1 (each pair ran back to back)
	FixedOverhead  float64 // 3 empty round trips (Forward, Backward, Step) / InsideStep: the protocol's cost without load noise
	GoThreads      string
	TorchThreads   int
	TorchMeasured  bool
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// Run measures the step on one batch; out receives progress lines.
func Run(ctx context.Context, cfg Config, out io.Writer) (Result, error) {
	cfg = cfg.withDefaults()
	mc, ok := Sizes[cfg.Size]
	if !ok {
		return Result{}, fmt.Errorf("trainerbench: unknown size %q (small, medium)", cfg.Size)
	}
	chars := []rune{}
	for r := rune(0x21); len(chars) < mc.Vocab-3; r++ {
		chars = append(chars, r)
	}
	tok := policy.NewCharTokenizer(string(chars))
	m, err := policy.New(mc, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return Result{}, err
	}
	if mc.Context < cfg.Prompt+cfg.Response {
		return Result{}, fmt.Errorf("trainerbench: prompt %d + response %d exceed the context %d", cfg.Prompt, cfg.Response, mc.Context)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	seqs := make([]policy.Seq, cfg.Seqs)
	dl, de := make([][]float32, cfg.Seqs), make([][]float32, cfg.Seqs)
	for i := range seqs {
		t := make([]int32, cfg.Prompt+cfg.Response)
		t[0] = 1
		for j := 1; j < len(t); j++ {
			t[j] = int32(3 + rng.IntN(mc.Vocab-3))
		}
		seqs[i] = policy.Seq{Tokens: t, PromptLen: cfg.Prompt}
		dl[i], de[i] = make([]float32, cfg.Response), make([]float32, cfg.Response)
		for j := range dl[i] {
			dl[i][j], de[i][j] = -1e-3, 1e-4
		}
	}
	adam := policy.DefaultAdamW()
	res := Result{Size: cfg.Size, Params: m.NumParams(), Tokens: cfg.Seqs * (cfg.Prompt + cfg.Response), TorchThreads: cfg.Threads}
	goTr, err := trainer.NewBuiltin(m.Clone(), tok, adam, trainer.BuiltinOptions{})
	if err != nil {
		return res, err
	}
	step := func(tr trainer.Trainer) (float64, error) {
		t0 := time.Now()
		if _, _, err := tr.Forward(ctx, seqs, cfg.Temp); err != nil {
			return 0, err
		}
		if err := tr.Backward(ctx, dl, de); err != nil {
			return 0, err
		}
		if _, err := tr.Step(ctx); err != nil {
			return 0, err
		}
		return time.Since(t0).Seconds(), nil
	}
	var client *torch.Client
	if !cfg.SkipTorch {
		client, err = torch.StartBuiltin(ctx, torch.Options{Python: cfg.Python, Threads: cfg.Threads}, policy.Checkpoint{Model: m, Tokenizer: tok}, adam)
		if err != nil {
			return res, err
		}
		defer client.Close()
		res.TorchMeasured = true
		// Warm-up: the first calls allocate.
		if _, err := step(client); err != nil {
			return res, err
		}
		if _, err := client.BenchStep(ctx, seqs, cfg.Temp, dl, de, 1); err != nil {
			return res, err
		}
	}
	if _, err := step(goTr); err != nil {
		return res, err
	}
	var goT, torchT, insideT, pingT []float64
	for r := range cfg.Rounds {
		t, err := step(goTr)
		if err != nil {
			return res, err
		}
		goT = append(goT, t)
		if client != nil {
			// Alternate which of the two torch measurements goes first, so
			// that neither always follows the Go step.
			for k := range 2 {
				if (k+r)%2 == 0 {
					t, err := step(client)
					if err != nil {
						return res, err
					}
					torchT = append(torchT, t)
				} else {
					in, err := client.BenchStep(ctx, seqs, cfg.Temp, dl, de, 1)
					if err != nil {
						return res, err
					}
					insideT = append(insideT, in...)
				}
			}
			t0 := time.Now()
			if err := client.Ping(ctx); err != nil {
				return res, err
			}
			pingT = append(pingT, time.Since(t0).Seconds())
		}
		if out != nil {
			fmt.Fprintf(out, "round %d/%d: go %.3f s", r+1, cfg.Rounds, goT[len(goT)-1])
			if client != nil {
				fmt.Fprintf(out, ", torch via socket %.3f s, inside the worker %.3f s", torchT[len(torchT)-1], insideT[len(insideT)-1])
			}
			fmt.Fprintln(out)
		}
	}
	res.GoStep = median(goT)
	if client != nil {
		res.TorchStep, res.InsideStep, res.Ping = median(torchT), median(insideT), median(pingT)
		res.Overhead = (res.TorchStep - res.InsideStep) / res.InsideStep
		var paired []float64
		for i := range torchT {
			paired = append(paired, torchT[i]/insideT[i]-1)
		}
		res.PairedOverhead = median(paired)
		res.FixedOverhead = 3 * res.Ping / res.InsideStep
	}
	return res, nil
}

// Report formats r as the lines BENCHMARKS.md quotes.
func (r Result) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "trainer step, %s model (%d parameters), %d packed tokens, medians:\n", r.Size, r.Params, r.Tokens)
	fmt.Fprintf(&b, "  Go trainer (built-in, in process):   %8.1f ms  (%.0f tokens/s)\n", 1e3*r.GoStep, float64(r.Tokens)/r.GoStep)
	if r.TorchMeasured {
		fmt.Fprintf(&b, "  torch worker through the socket:     %8.1f ms  (%.0f tokens/s, %d thread(s))\n", 1e3*r.TorchStep, float64(r.Tokens)/r.TorchStep, r.TorchThreads)
		fmt.Fprintf(&b, "  same step inside the worker:         %8.1f ms\n", 1e3*r.InsideStep)
		fmt.Fprintf(&b, "  protocol overhead:                   %+7.1f %% of medians, %+.1f %% paired median, %.2f %% from 3 empty round trips of %.2f ms\n",
			100*r.Overhead, 100*r.PairedOverhead, 100*r.FixedOverhead, 1e3*r.Ping)
		fmt.Fprintf(&b, "  torch / Go per step:                 %8.2fx\n", r.TorchStep/r.GoStep)
	}
	return b.String()
}
