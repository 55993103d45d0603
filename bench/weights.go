package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// WeightsConfig is `exgrpo bench weights`.
type WeightsConfig struct {
	// Layers and Vocab shape the model of the codec measurement: the
	// Qwen2.5-1.5B architecture (hidden 1536, MLP 8960, 12 query and 2
	// key/value heads of 128, tied embeddings) with this many decoder
	// layers (28: the whole model, 1.54B elements) and vocabulary.
	Layers, Vocab int
	// HoldLayers is the model the actors hold in the transport measurement
	// (same shapes, fewer layers: N actors in one process on one machine
	// each write their own copy).
	HoldLayers int
	// ShardBytes bounds one safetensors shard (HF shards the same way).
	ShardBytes int64
	// LR is the AdamW learning rate of the simulated step.
	LR float64
	// Actors are the actor counts N of the transport measurement.
	Actors []int
	// Compressors are the delta encodings measured (the first is the one
	// the transport uses).
	Compressors []weights.Compressor
	Quick       bool // a small model (2 layers, vocab 16384; actors hold 1 layer) and N = 1, 4
	Seed        uint64
	// NoCodec skips the codec measurement (the transport one alone).
	NoCodec bool
}

// DefaultWeights is the configuration BENCHMARKS.md reports.
func DefaultWeights() WeightsConfig {
	return WeightsConfig{Layers: 28, Vocab: 151936, HoldLayers: 4, ShardBytes: 512 << 20, LR: 1e-6, Actors: []int{1, 4, 8},
		Compressors: []weights.Compressor{weights.DiffHuff, weights.DiffFSE, weights.Zstd1, weights.S2}, Seed: 1}
}

// tensorSpec is one tensor of the simulated model: its shape and how its
// fp32 master weights are initialised.
type tensorSpec struct {
	name  string
	shape []int64
	init  string // "normal" (std 0.02), "ones" (norms), "bias" (std 0.02)
	decay bool   // AdamW weight decay applies (not to norms and biases)
}

func (t tensorSpec) elems() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// qwen15Shapes lists the Qwen2.5-1.5B tensors (HF names) with `layers`
// decoder layers: hidden 1536, intermediate 8960, 12 heads and 2 KV heads
// of 128, q/k/v biases, tied embeddings.
func qwen15Shapes(layers, vocab int) []tensorSpec {
	const h, inter, kv = 1536, 8960, 256
	ts := []tensorSpec{{"model.embed_tokens.weight", []int64{int64(vocab), h}, "normal", true}}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			tensorSpec{p + "input_layernorm.weight", []int64{h}, "ones", false},
			tensorSpec{p + "self_attn.q_proj.weight", []int64{h, h}, "normal", true},
			tensorSpec{p + "self_attn.q_proj.bias", []int64{h}, "bias", false},
			tensorSpec{p + "self_attn.k_proj.weight", []int64{kv, h}, "normal", true},
			tensorSpec{p + "self_attn.k_proj.bias", []int64{kv}, "bias", false},
			tensorSpec{p + "self_attn.v_proj.weight", []int64{kv, h}, "normal", true},
			tensorSpec{p + "self_attn.v_proj.bias", []int64{kv}, "bias", false},
			tensorSpec{p + "self_attn.o_proj.weight", []int64{h, h}, "normal", true},
			tensorSpec{p + "post_attention_layernorm.weight", []int64{h}, "ones", false},
			tensorSpec{p + "mlp.gate_proj.weight", []int64{inter, h}, "normal", true},
			tensorSpec{p + "mlp.up_proj.weight", []int64{inter, h}, "normal", true},
			tensorSpec{p + "mlp.down_proj.weight", []int64{h, inter}, "normal", true})
	}
	return append(ts, tensorSpec{"model.norm.weight", []int64{h}, "ones", false})
}

// bf16 rounds an fp32 to bfloat16 bits, to nearest even (torch's cast).
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// adamStep fills before and after (2 bytes per element) with the bf16 casts
// of fp32 master weights before and after one AdamW step (β1 0.9, β2
// 0.999, eps 1e-8, weight decay 0.01) with N(0, 1) gradients. On the first
// step the bias-corrected moments are m̂ = g and v̂ = g², so the update is
// lr·g/(|g|+eps) ≈ ±lr for every element: the largest per-element move a
// step at this lr makes, the worst case for a delta.
func adamStep(spec tensorSpec, lr float32, seed uint64, before, after []byte) {
	n := int(spec.elems())
	const wd, eps = 0.01, 1e-8
	workers := runtime.GOMAXPROCS(0)
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min(n, (w+1)*per)
		if lo >= hi {
			break
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(lo)))
			for i := lo; i < hi; i++ {
				var x float32
				switch spec.init {
				case "ones":
					x = 1 + float32(rng.NormFloat64()*0.02)
				default:
					x = float32(rng.NormFloat64() * 0.02)
				}
				g := float32(rng.NormFloat64())
				x2 := x - lr*g/(float32(math.Abs(float64(g)))+eps)
				if spec.decay {
					x2 -= lr * wd * x
				}
				b0, b1 := bf16(x), bf16(x2)
				before[2*i], before[2*i+1] = byte(b0), byte(b0>>8)
				after[2*i], after[2*i+1] = byte(b1), byte(b1>>8)
			}
		})
	}
	wg.Wait()
}

// shard is one safetensors file of the model, before and after the step.
type shard struct {
	name          string
	before, after []byte
}

// buildModel lays the tensors out in shards of at most shardBytes and fills
// them with one simulated AdamW step.
func buildModel(specs []tensorSpec, shardBytes int64, lr float32, seed uint64) ([]shard, int64, error) {
	var groups [][]tensorSpec
	var size int64
	for _, s := range specs {
		b := 2 * s.elems()
		if len(groups) == 0 || (size+b > shardBytes && size > 0) {
			groups, size = append(groups, nil), 0
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], s)
		size += b
	}
	var out []shard
	var elems int64
	for gi, g := range groups {
		// Header first, then every tensor generated in place: the shard
		// exists once per version, never as tensors plus a copy.
		ts := make([]weights.NamedTensor, len(g))
		var data int64
		for ti, s := range g {
			ts[ti] = weights.NamedTensor{Name: s.name, Dtype: "BF16", Shape: s.shape}
			data += 2 * s.elems()
		}
		hdr, err := weights.SafetensorsHeader(ts, map[string]string{"format": "pt"})
		if err != nil {
			return nil, 0, err
		}
		sh := shard{name: fmt.Sprintf("model-%05d-of-%05d.safetensors", gi+1, len(groups)),
			before: make([]byte, int64(len(hdr))+data), after: make([]byte, int64(len(hdr))+data)}
		copy(sh.before, hdr)
		copy(sh.after, hdr)
		off := int64(len(hdr))
		for ti, s := range g {
			n := 2 * s.elems()
			elems += s.elems()
			adamStep(s, lr, seed+uint64(gi)<<20+uint64(ti), sh.before[off:off+n], sh.after[off:off+n])
			off += n
		}
		out = append(out, sh)
	}
	return out, elems, nil
}

// Weights measures policy versions at LLM scale: the delta codec on a
// Qwen2.5-1.5B-shaped bf16 model after one AdamW step (bytes against a
// full version, encode and decode-and-apply throughput per core), then the
// time for N actors to hold a delta version and a full version through the
// Object Store transport against one plain get of the full version.
func Weights(ctx context.Context, w io.Writer, cfg WeightsConfig) error {
	if cfg.Quick {
		cfg.Layers, cfg.Vocab, cfg.HoldLayers, cfg.Actors = 2, 16384, 1, []int{1, 4}
	}
	if cfg.Layers < 0 || cfg.HoldLayers < 0 || cfg.Vocab < 1 || cfg.ShardBytes < 1<<20 || cfg.LR <= 0 || len(cfg.Compressors) == 0 {
		return fmt.Errorf("%w: weights: layers %d, hold layers %d, vocab %d, shard bytes %d, lr %g, %d compressors", ErrConfig,
			cfg.Layers, cfg.HoldLayers, cfg.Vocab, cfg.ShardBytes, cfg.LR, len(cfg.Compressors))
	}
	for _, n := range cfg.Actors {
		if n < 1 {
			return fmt.Errorf("%w: actor count %d < 1", ErrConfig, n)
		}
	}
	if cfg.NoCodec {
		return weightsHold(ctx, w, cfg)
	}
	t0 := time.Now()
	shards, elems, err := buildModel(qwen15Shapes(cfg.Layers, cfg.Vocab), cfg.ShardBytes, float32(cfg.LR), cfg.Seed)
	if err != nil {
		return err
	}
	var full int64
	changed, total := 0, 0
	for _, s := range shards {
		full += int64(len(s.after))
		for i := 0; i+1 < len(s.after); i += 2 {
			if s.before[i] != s.after[i] || s.before[i+1] != s.after[i+1] {
				changed++
			}
			total++
		}
	}
	fmt.Fprintf(w, "weights: Qwen2.5-1.5B shapes with %d layers, vocab %d: %d bf16 elements (%.2f GB) in %d shards; one AdamW step at lr %g from fp32 masters changed %.2f%% of the bf16 elements (built in %.0fs); GOMAXPROCS %d, %d CPUs\n",
		cfg.Layers, cfg.Vocab, elems, float64(full)/1e9, len(shards), cfg.LR, 100*float64(changed)/float64(total), time.Since(t0).Seconds(), runtime.GOMAXPROCS(0), runtime.NumCPU())

	for _, c := range cfg.Compressors {
		if err := ctx.Err(); err != nil {
			return err
		}
		opt := weights.DefaultDeltaOptions()
		opt.Compressor = c
		digests := make([]string, len(shards))
		for i, s := range shards {
			digests[i] = weights.Digest(s.after)
		}
		deltas := make([][]byte, len(shards))
		load0 := loadAverage()
		c0, w0 := processCPU(), time.Now()
		var dbytes int64
		for i, s := range shards {
			if deltas[i], err = weights.EncodeDelta(s.before, s.after, "-", digests[i], opt); err != nil {
				return err
			}
			dbytes += int64(len(deltas[i]))
		}
		encCPU, encWall := processCPU()-c0, time.Since(w0)
		var decCPU, decWall, digCPU time.Duration
		buf := make([]byte, 0, len(shards[0].before))
		for i, s := range shards {
			buf = append(buf[:0], s.before...)
			c0, w0 := processCPU(), time.Now()
			if err := weights.ApplyDeltaUnchecked(buf, deltas[i], 0); err != nil {
				return err
			}
			decCPU, decWall = decCPU+processCPU()-c0, decWall+time.Since(w0)
			c1 := processCPU()
			if got := weights.Digest(buf); got != digests[i] {
				return fmt.Errorf("bench weights: %s: %s reconstruction fails its digest", s.name, c)
			}
			digCPU += processCPU() - c1
		}
		gbs := func(d time.Duration) float64 { return float64(full) / 1e9 / d.Seconds() }
		fmt.Fprintf(w, "delta %s: %.1f MB for %.2f GB (%.1fx fewer bytes; goal >= 30x, TRL 34-60x); encode %.2f GB/s per core (%.2f GB/s wall); decode-and-apply %.2f GB/s per core (%.2f GB/s wall), with the SHA-256 check %.2f GB/s per core; bit-exact; load average %s -> %s\n",
			c, float64(dbytes)/1e6, float64(full)/1e9, float64(full)/float64(dbytes), gbs(encCPU), gbs(encWall), gbs(decCPU), gbs(decWall), gbs(decCPU+digCPU), load0, loadAverage())
	}
	shards = nil // the transport measurement builds its own, smaller model
	runtime.GC()
	if len(cfg.Actors) == 0 {
		return nil
	}
	return weightsHold(ctx, w, cfg)
}

// loadAverage is the machine's 1-minute load average as /proc/loadavg
// gives it ("?" where there is none): per-core rates on a shared machine
// mean little without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// weightsHold: a learner publishes a full version v0 and a delta version
// v1 of the hold model through the Object Store transport; N actors, each
// with its own connection and local directory, materialise v0 (a full
// version: every shard fetched) and then v1 (a delta version: every shard
// rebuilt from the local v0), all at once. The anchor is one plain
// streamed get of every object of v0 in the same run.
func weightsHold(ctx context.Context, w io.Writer, cfg WeightsConfig) error {
	specs := qwen15Shapes(cfg.HoldLayers, cfg.Vocab)
	shards, elems, err := buildModel(specs, cfg.ShardBytes, float32(cfg.LR), cfg.Seed+7)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "exgrpo-bench-weights-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scfg := bus.DefaultServerConfig(filepath.Join(dir, "server"))
	scfg.Port = -1
	srv, err := bus.StartServer(scfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	open := func(name string) (*nats.Conn, *bus.Bus, error) {
		nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: name}, zap.NewNop())
		if err != nil {
			return nil, nil, err
		}
		b, err := bus.Open(ctx, nc, bus.DefaultConfig("wbench"), zap.NewNop())
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return nc, b, nil
	}
	lnc, lb, err := open("learner")
	if err != nil {
		return err
	}
	defer lnc.Close()
	tc := transfer.DefaultConfig(transfer.TransportObjects, filepath.Join(dir, "learner"))
	tc.Delta.Compressor = cfg.Compressors[0]
	pub, err := transfer.NewPublisher(lb, tc, zap.NewNop())
	if err != nil {
		return err
	}
	var full int64
	for v, pick := range []func(shard) []byte{func(s shard) []byte { return s.before }, func(s shard) []byte { return s.after }} {
		st, err := pub.Stage(int64(v))
		if err != nil {
			return err
		}
		for _, s := range shards {
			if v == 0 {
				full += int64(len(s.before))
			}
			if err := os.WriteFile(filepath.Join(st, s.name), pick(s), 0o644); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(st, "config.json"), []byte(`{"architectures":["Qwen2ForCausalLM"],"hidden_size":1536}`), 0o644); err != nil {
			return err
		}
		p0 := time.Now()
		if err := pub.Publish(ctx, int64(v), st, weights.FormatHF); err != nil {
			return err
		}
		a, err := transfer.Lookup(ctx, lb, int64(v))
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  learner published v%d (%s): %.1f MB stored in %.2fs\n", v, map[bool]string{true: "full", false: "delta"}[a.Base < 0],
			float64(a.Stored())/1e6, time.Since(p0).Seconds())
	}
	shards = nil
	runtime.GC()
	fmt.Fprintf(w, "  actors hold a model of %d layers: %d bf16 elements, %.2f GB, through the Object Store (file storage)\n", cfg.HoldLayers, elems, float64(full)/1e9)

	a0, err := transfer.Lookup(ctx, lb, 0)
	if err != nil {
		return err
	}
	var anchor time.Duration
	for range 2 {
		t0 := time.Now()
		for _, o := range a0.Objects {
			if err := plainGet(ctx, lb, o.Name); err != nil {
				return err
			}
		}
		if d := time.Since(t0); anchor == 0 || d < anchor {
			anchor = d
		}
	}
	fmt.Fprintf(w, "anchor: one plain get of the full version (%.2f GB): %.2fs (%.0f MB/s)\n", float64(full)/1e9, anchor.Seconds(), float64(full)/1e6/anchor.Seconds())

	for _, n := range cfg.Actors {
		var fetchers []*transfer.Fetcher
		for i := range n {
			nc, b, err := open(fmt.Sprintf("actor-%d", i))
			if err != nil {
				return err
			}
			defer nc.Close()
			fc := transfer.DefaultFetcherConfig(fmt.Sprintf("actor-%d", i))
			fc.Dir = filepath.Join(dir, fmt.Sprintf("n%d-actor-%d", n, i))
			fc.Workers = 1 // N actors share this machine's cores
			f, err := transfer.NewFetcher(b, fc, zap.NewNop())
			if err != nil {
				return err
			}
			fetchers = append(fetchers, f)
		}
		hold := func(v int64) (time.Duration, time.Duration, int64, error) {
			c0, t0 := processCPU(), time.Now()
			var mu sync.Mutex
			var fetched int64
			g, gctx := errgroup.WithContext(ctx)
			for _, f := range fetchers {
				g.Go(func() error {
					l, err := f.Materialise(gctx, v)
					if err != nil {
						return err
					}
					l.Release()
					mu.Lock()
					fetched += l.Fetched
					mu.Unlock()
					return nil
				})
			}
			err := g.Wait()
			return time.Since(t0), processCPU() - c0, fetched, err
		}
		fullWall, fullCPU, fullBytes, err := hold(0)
		if err != nil {
			return fmt.Errorf("bench weights: %d actors hold v0: %w", n, err)
		}
		deltaWall, deltaCPU, deltaBytes, err := hold(1)
		if err != nil {
			return fmt.Errorf("bench weights: %d actors hold v1: %w", n, err)
		}
		fmt.Fprintf(w, "N=%d actors: all hold the delta version %.2fs after the announce (%.2fx one full get; %.1f MB fetched, %.2f CPU-s per actor); all hold a full version %.2fs (%.2fx; %.2f GB fetched, %.2f CPU-s per actor)\n",
			n, deltaWall.Seconds(), deltaWall.Seconds()/anchor.Seconds(), float64(deltaBytes)/1e6, deltaCPU.Seconds()/float64(n),
			fullWall.Seconds(), fullWall.Seconds()/anchor.Seconds(), float64(fullBytes)/1e9, fullCPU.Seconds()/float64(n))
		for i := range n {
			os.RemoveAll(filepath.Join(dir, fmt.Sprintf("n%d-actor-%d", n, i)))
		}
	}
	return nil
}

// plainGet is the anchor: Info, then a streamed Get into a buffer of that size.
func plainGet(ctx context.Context, b *bus.Bus, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	info, err := b.Weights.GetInfo(ctx, name)
	if err != nil {
		return err
	}
	res, err := b.Weights.Get(ctx, name)
	if err != nil {
		return err
	}
	defer res.Close()
	buf := make([]byte, info.Size)
	_, err = io.ReadFull(res, buf)
	return err
}
