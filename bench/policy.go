package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/policy"
)

// policyBenchSizes are the two model sizes of docs/benchmarks/policy.md.
var policyBenchSizes = map[string]policy.Config{
	"small":  {Vocab: 100, Context: 128, Layers: 2, Width: 64, Heads: 4, Tied: true},
	"medium": {Vocab: 100, Context: 128, Layers: 4, Width: 128, Heads: 4, Tied: true},
}

// policyShape is the work of one measurement, shared with the PyTorch script.
type policyShape struct {
	trainB, trainPrompt, trainResp int // training batch: B sequences of prompt+response tokens
	sampleB, samplePrompt, newToks int // sampling: B prompts, new tokens each (EOS off)
	steps                          int // training steps per measurement (sampling: max(2, steps/3) calls)
}

type policyResult struct {
	trainTPS, trainCPU, trainGF    float64 // tokens/s, CPU seconds per step, matmul GFLOP/s
	sampleTPS, sampleCPU, sampleGF float64 // tokens/s, CPU seconds per call, matmul GFLOP/s
}

type torchResult struct {
	Size      string  `json:"size"`
	Threads   int     `json:"threads"`
	Params    int     `json:"params"`
	TrainTPS  float64 `json:"train_tokens_per_s"`
	TrainCPU  float64 `json:"train_cpu_s"`
	SampleTPS float64 `json:"sample_tokens_per_s"`
	SampleCPU float64 `json:"sample_cpu_s"`
	Torch     string  `json:"torch"`
}

// PolicyConfig is `exgrpo bench policy`.
type PolicyConfig struct {
	Sizes        string // comma-separated model sizes: small (2 layers, width 64), medium (4 layers, width 128)
	Reps         int    // repetitions (best is reported)
	Steps        int    // training steps per repetition (sampling: max(2, Steps/3) calls of the whole batch)
	TrainBatch   int    // training sequences per step
	SampleBatch  int    // prompts per Sample call
	Python       string // Python with torch for the comparison (empty = skip)
	TorchScript  string // PyTorch reference script
	TorchThreads string // comma-separated PyTorch thread counts to try (best is reported)
	Quick        bool   // short run (Reps 1, Steps 4, small only, torch 1 thread)
}

// DefaultPolicy is the configuration BENCHMARKS.md reports.
func DefaultPolicy() PolicyConfig {
	return PolicyConfig{Sizes: "small,medium", Reps: 3, Steps: 10, TrainBatch: 32, SampleBatch: 64,
		Python: "/usr/bin/python3", TorchScript: "bench/pytorch/bench_policy.py", TorchThreads: "1,2"}
}

// Policy measures the policy at two sizes and, when a Python with
// torch is given, the same model and shapes in PyTorch, alternating in one
// run; the best of --reps is reported for each side.
func Policy(ctx context.Context, w io.Writer, cfg PolicyConfig) error {
	if cfg.Quick {
		cfg.Reps, cfg.Steps, cfg.Sizes, cfg.TorchThreads = 1, 4, "small", "1"
	}
	shape := policyShape{trainB: cfg.TrainBatch, trainPrompt: 16, trainResp: 48, sampleB: cfg.SampleBatch, samplePrompt: 20, newToks: 48, steps: cfg.Steps}
	torchOK := cfg.Python != ""
	if torchOK {
		if err := exec.CommandContext(ctx, cfg.Python, "-c", "import torch").Run(); err != nil {
			fmt.Fprintf(w, "PyTorch comparison skipped: %s cannot import torch (%v); run bench/pytorch/install.sh\n", cfg.Python, err)
			torchOK = false
		}
	}
	peak := sgemmPeak(512, 600*time.Millisecond)
	fmt.Fprintf(w, "policy bench %s: backend %s, GOMAXPROCS %d, %d CPUs; SGEMM peak (512x512x512, this backend): %.1f GFLOP/s\n",
		time.Now().UTC().Format("2006-01-02 15:04"), policy.Backend(), runtime.GOMAXPROCS(0), runtime.NumCPU(), peak)
	fmt.Fprintf(w, "train: %d seqs x (%d prompt + %d response) tokens, Forward+Backward(dlogp, dentropy)+AdamW; sample: %d prompts x %d tokens, %d new tokens, T=1, KV cache\n",
		shape.trainB, shape.trainPrompt, shape.trainResp, shape.sampleB, shape.samplePrompt, shape.newToks)
	for _, size := range strings.Split(cfg.Sizes, ",") {
		mcfg, ok := policyBenchSizes[size]
		if !ok {
			return fmt.Errorf("%w: unknown size %q (small, medium)", ErrConfig, size)
		}
		var best policyResult
		var bestTorch torchResult
		for r := range cfg.Reps {
			if err := ctx.Err(); err != nil {
				return err
			}
			res, nparams, err := measurePolicy(mcfg, shape)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "  %s rep %d: ours train %.0f tok/s (%.3f CPU-s/step, matmul %.1f GFLOP/s), sample %.0f tok/s (%.3f CPU-s/call, matmul %.1f GFLOP/s), %d params\n",
				size, r+1, res.trainTPS, res.trainCPU, res.trainGF, res.sampleTPS, res.sampleCPU, res.sampleGF, nparams)
			best.trainTPS, best.sampleTPS = max(best.trainTPS, res.trainTPS), max(best.sampleTPS, res.sampleTPS)
			best.trainGF, best.sampleGF = max(best.trainGF, res.trainGF), max(best.sampleGF, res.sampleGF)
			if best.trainCPU == 0 || res.trainCPU < best.trainCPU {
				best.trainCPU = res.trainCPU
			}
			if best.sampleCPU == 0 || res.sampleCPU < best.sampleCPU {
				best.sampleCPU = res.sampleCPU
			}
			if !torchOK {
				continue
			}
			trs, err := runTorchBench(ctx, cfg.Python, cfg.TorchScript, size, cfg.TorchThreads, shape)
			if err != nil {
				return err
			}
			for _, t := range trs {
				fmt.Fprintf(w, "  %s rep %d: torch %s, %d thread(s): train %.0f tok/s (%.3f CPU-s/step), sample %.0f tok/s (%.3f CPU-s/call), %d params\n",
					size, r+1, t.Torch, t.Threads, t.TrainTPS, t.TrainCPU, t.SampleTPS, t.SampleCPU, t.Params)
				if t.TrainTPS > bestTorch.TrainTPS {
					bestTorch.TrainTPS, bestTorch.TrainCPU, bestTorch.Threads = t.TrainTPS, t.TrainCPU, t.Threads
				}
				if t.SampleTPS > bestTorch.SampleTPS {
					bestTorch.SampleTPS, bestTorch.SampleCPU = t.SampleTPS, t.SampleCPU
				}
			}
		}
		fmt.Fprintf(w, "%s: ours train %.0f tok/s, sample %.0f tok/s; matmul %.1f / %.1f GFLOP/s (train / sample) = %.0f%% / %.0f%% of SGEMM peak\n",
			size, best.trainTPS, best.sampleTPS, best.trainGF, best.sampleGF, 100*best.trainGF/peak, 100*best.sampleGF/peak)
		if torchOK {
			fmt.Fprintf(w, "%s: torch best train %.0f tok/s, sample %.0f tok/s => ours/PyTorch train %.2fx, sample %.2fx (wall); per CPU-second train %.2fx, sample %.2fx\n",
				size, bestTorch.TrainTPS, bestTorch.SampleTPS, best.trainTPS/bestTorch.TrainTPS, best.sampleTPS/bestTorch.SampleTPS,
				bestTorch.TrainCPU/best.trainCPU, bestTorch.SampleCPU/best.sampleCPU)
		}
	}
	return nil
}

// sgemmPeak is the rate of the policy's matrix product on an n³ problem.
func sgemmPeak(n int, d time.Duration) float64 {
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = float32(i%7)*0.1, float32(i%5)*0.1
	}
	policy.Sgemm(false, true, n, n, n, a, n, b, n, 0, c, n)
	best := 0.0
	for start := time.Now(); time.Since(start) < d; {
		t0 := time.Now()
		policy.Sgemm(false, true, n, n, n, a, n, b, n, 0, c, n)
		best = max(best, 2*float64(n*n*n)/time.Since(t0).Seconds()/1e9)
	}
	return best
}

func measurePolicy(cfg policy.Config, s policyShape) (policyResult, int, error) {
	rng := rand.New(rand.NewPCG(1, 1))
	m, err := policy.New(cfg, rng)
	if err != nil {
		return policyResult{}, 0, err
	}
	opt, err := policy.NewAdamW(policy.DefaultAdamW(), m)
	if err != nil {
		return policyResult{}, 0, err
	}
	randToks := func(n int) []int32 {
		t := make([]int32, n)
		t[0] = 1 // BOS
		for i := 1; i < n; i++ {
			t[i] = int32(3 + rng.IntN(cfg.Vocab-3))
		}
		return t
	}
	seqs := make([]policy.Seq, s.trainB)
	dl, de := make([][]float32, s.trainB), make([][]float32, s.trainB)
	for i := range seqs {
		seqs[i] = policy.Seq{Tokens: randToks(s.trainPrompt + s.trainResp), PromptLen: s.trainPrompt}
		dl[i], de[i] = make([]float32, s.trainResp), make([]float32, s.trainResp)
		for j := range dl[i] {
			dl[i][j], de[i][j] = -1e-3, 1e-4
		}
	}
	step := func() error {
		ps, err := m.Forward(seqs)
		if err != nil {
			return err
		}
		if err := ps.Backward(dl, de); err != nil {
			return err
		}
		opt.Step(m)
		return nil
	}
	var res policyResult
	if err := step(); err != nil {
		return res, 0, err
	}
	policy.ProfileMatmuls(true)
	c0, t0 := processCPU().Seconds(), time.Now()
	for range s.steps {
		if err := step(); err != nil {
			return res, 0, err
		}
	}
	wall, cpu := time.Since(t0).Seconds(), processCPU().Seconds()-c0
	st := policy.ProfileMatmuls(false)
	res.trainTPS = float64(s.steps*s.trainB*(s.trainPrompt+s.trainResp)) / wall
	res.trainCPU = cpu / float64(s.steps)
	res.trainGF = st.GFLOPS()

	prompts := make([][]int32, s.sampleB)
	for i := range prompts {
		prompts[i] = randToks(s.samplePrompt)
	}
	opts := policy.SampleOptions{Temperature: 1, MaxNew: s.newToks, EOS: -1}
	if _, err := m.Sample(prompts, opts, rng); err != nil {
		return res, 0, err
	}
	calls := max(2, s.steps/3)
	policy.ProfileMatmuls(true)
	c0, t0 = processCPU().Seconds(), time.Now()
	for range calls {
		if _, err := m.Sample(prompts, opts, rng); err != nil {
			return res, 0, err
		}
	}
	wall, cpu = time.Since(t0).Seconds(), processCPU().Seconds()-c0
	st = policy.ProfileMatmuls(false)
	res.sampleTPS = float64(calls*s.sampleB*s.newToks) / wall
	res.sampleCPU = cpu / float64(calls)
	res.sampleGF = st.GFLOPS()
	return res, m.NumParams(), nil
}

func runTorchBench(ctx context.Context, python, script, size, threads string, s policyShape) ([]torchResult, error) {
	cmd := exec.CommandContext(ctx, python, script, "--sizes", size, "--threads", threads,
		"--train-batch", fmt.Sprint(s.trainB), "--train-prompt", fmt.Sprint(s.trainPrompt), "--train-response", fmt.Sprint(s.trainResp),
		"--sample-batch", fmt.Sprint(s.sampleB), "--sample-prompt", fmt.Sprint(s.samplePrompt), "--sample-new", fmt.Sprint(s.newToks),
		"--steps", fmt.Sprint(s.steps))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("bench policy: %s: %w", script, err)
	}
	var res []torchResult
	for _, ln := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r torchResult
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			return nil, fmt.Errorf("bench policy: %s printed %q: %w", script, ln, err)
		}
		res = append(res, r)
	}
	return res, nil
}
