package policy

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the layer kernels shared by training and inference, in
// llm.c's style: plain loops over row-major buffers, forward and backward side
// by side. Rows are tokens of a packed batch.

// workers is how many goroutines a kernel may use.
func workers() int { return runtime.GOMAXPROCS(0) }

// parallelFor runs fn(worker, i) for i in [0, n) on up to workers()
// goroutines (worker in [0, workers()) names the goroutine, for scratch
// space), handing out indices dynamically since items may differ in cost.
// Each index runs exactly once, so results do not depend on the schedule as
// long as items write disjoint memory.
func parallelFor(n int, fn func(worker, i int)) {
	w := min(workers(), n)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(w)
	for worker := range w {
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(worker, i)
			}
		}()
	}
	wg.Wait()
}

// parallelRange splits [0, n) into contiguous chunks, at least minChunk
// long, one per worker, and runs fn(lo, hi) on each.
func parallelRange(n, minChunk int, fn func(lo, hi int)) {
	w := min(workers(), n/max(minChunk, 1))
	if w <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(w)
	for i := range w {
		lo, hi := i*n/w, (i+1)*n/w
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// sgemmParallelFlops is the size (2·m·n·k) below which a product runs on one
// goroutine: splitting smaller ones costs more than it saves.
const sgemmParallelFlops = 1 << 18

// sgemm computes c = op(a)·op(b) + beta·c, row-major, where op(a) is (m, k)
// and op(b) is (k, n); tA means a is stored (k, m), tB that b is stored
// (n, k). Large products are split into one slab of output rows (or columns,
// when there are few rows) per worker; every output element is computed by
// one slab in a fixed order, so the result does not depend on the schedule.
func sgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if matmulProf.on.Load() {
		defer countMatmul(time.Now(), m, n, k)
	}
	if useKernel {
		if m == 0 || n == 0 {
			return
		}
		buf := packPool.Get().(*[]float32)
		pb := packB(tB, k, n, b, ldb, *buf)
		gemmKernel(tA, m, k, a, lda, &pb, beta, c, ldc)
		*buf = pb.data
		packPool.Put(buf)
		return
	}
	w := workers()
	if w <= 1 || 2*m*n*k < sgemmParallelFlops || (m < 16 && n < 16) {
		sgemmPart(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var wg sync.WaitGroup
	wg.Add(w)
	if m >= n || m >= 64 {
		for i := range w {
			lo, hi := i*m/w, (i+1)*m/w
			go func() {
				defer wg.Done()
				if hi == lo {
					return
				}
				ao := lo * lda
				if tA {
					ao = lo
				}
				sgemmPart(tA, tB, hi-lo, n, k, a[ao:], lda, b, ldb, beta, c[lo*ldc:], ldc)
			}()
		}
	} else {
		for i := range w {
			lo, hi := i*n/w, (i+1)*n/w
			go func() {
				defer wg.Done()
				if hi == lo {
					return
				}
				bo := lo
				if tB {
					bo = lo * ldb
				}
				sgemmPart(tA, tB, m, hi-lo, k, a, lda, b[bo:], ldb, beta, c[lo:], ldc)
			}()
		}
	}
	wg.Wait()
}

// useKernel selects the built-in assembly kernel (gemm.go) over the BLAS
// backend: on CPUs with AVX2 and FMA, unless built with the openblas tag.
var useKernel = haveKernel && BLAS != "openblas"

// Backend names the matrix-product implementation in use: "avx2" (the
// built-in packed kernel, pure Go build), "gonum" or "openblas".
func Backend() string {
	if useKernel {
		return "avx2"
	}
	return BLAS
}

// Sgemm is the matrix product the model runs on (see sgemm), exported for
// benchmarks: c = op(a)·op(b) + beta·c, row-major, op(a) (m, k), op(b) (k, n).
func Sgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
}

// MatmulStats counts matrix products while profiling is on.
type MatmulStats struct {
	Calls   int64
	Flops   int64   // 2·m·n·k summed
	Seconds float64 // wall time inside the products
}

// GFLOPS is the achieved rate of the counted products.
func (s MatmulStats) GFLOPS() float64 {
	if s.Seconds == 0 {
		return 0
	}
	return float64(s.Flops) / s.Seconds / 1e9
}

var matmulProf struct {
	on                  atomic.Bool
	calls, flops, nanos atomic.Int64
}

func countMatmul(t0 time.Time, m, n, k int) {
	matmulProf.nanos.Add(int64(time.Since(t0)))
	matmulProf.flops.Add(2 * int64(m) * int64(n) * int64(k))
	matmulProf.calls.Add(1)
}

// ProfileMatmuls turns the process-wide matrix-product counters on or off
// and returns what they counted since the last call. It is benchmark
// instrumentation: with it off (the default) the products read no clock.
func ProfileMatmuls(on bool) MatmulStats {
	s := MatmulStats{Calls: matmulProf.calls.Swap(0), Flops: matmulProf.flops.Swap(0), Seconds: float64(matmulProf.nanos.Swap(0)) / 1e9}
	matmulProf.on.Store(on)
	return s
}

// matmulForward: out (N, OC) = inp (N, IC) · w (OC, IC)ᵀ + bias (OC, may be nil).
func matmulForward(out, inp, w, bias []float32, n, ic, oc int) {
	matmulForwardPacked(out, inp, w, nil, bias, n, ic, oc)
}

// matmulForwardPacked is matmulForward with w already packed by packWeight
// (pw may be nil: then w is used).
func matmulForwardPacked(out, inp, w []float32, pw *packedB, bias []float32, n, ic, oc int) {
	if n == 0 {
		return
	}
	if pw != nil {
		if matmulProf.on.Load() {
			defer countMatmul(time.Now(), n, oc, ic)
		}
		gemmKernel(false, n, ic, inp, ic, pw, 0, out, oc)
	} else {
		sgemm(false, true, n, oc, ic, inp, ic, w, ic, 0, out, oc)
	}
	if bias != nil {
		parallelRange(n, 256, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := out[r*oc : r*oc+oc]
				for j, b := range bias {
					row[j] += b
				}
			}
		})
	}
}

// matmulBackward: dinp (N, IC) = dout (N, OC) · w (OC, IC) (overwritten, or
// accumulated when accumulate is set), dw (OC, IC) += doutᵀ · inp,
// dbias (OC, may be nil) += column sums of dout.
func matmulBackward(dinp, dw, dbias, dout, inp, w []float32, n, ic, oc int, accumulate bool) {
	if n == 0 {
		return
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	if dinp != nil {
		sgemm(false, false, n, ic, oc, dout, oc, w, ic, beta, dinp, ic)
	}
	sgemm(true, false, oc, ic, n, dout, oc, inp, ic, 1, dw, ic)
	if dbias != nil {
		// column sums of dout, as Σ_r 1·dout[r] with the vector row loop
		sumRows(dbias, ones(n), dout, oc)
	}
}

var onesBuf []float32

// ones returns n ones (read-only: a grown buffer replaces the old one, so
// slices handed out earlier stay valid).
func ones(n int) []float32 {
	onesMu.Lock()
	defer onesMu.Unlock()
	if len(onesBuf) < n {
		onesBuf = make([]float32, max(n, 2*len(onesBuf)))
		for i := range onesBuf {
			onesBuf[i] = 1
		}
	}
	return onesBuf[:n]
}

// onesMu guards onesBuf: different models may run on different goroutines.
var onesMu sync.Mutex

const lnEps = 1e-5

// layernormForward normalises each row of inp (N, C) to out (N, C) with gain
// w (C) and shift b (C), keeping mean (N) and rstd (N) for the backward pass
// (either may be nil when not needed). Rows are split over the workers.
func layernormForward(out, mean, rstd, inp, w, b []float32, n, c int) {
	parallelRange(n, 128, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			x := inp[r*c : r*c+c]
			var s float32
			for _, v := range x {
				s += v
			}
			mu := s / float32(c)
			var vs float32
			for _, v := range x {
				d := v - mu
				vs += d * d
			}
			rs := float32(1 / math.Sqrt(float64(vs/float32(c))+lnEps))
			o := out[r*c : r*c+c]
			for i, v := range x {
				o[i] = (v-mu)*rs*w[i] + b[i]
			}
			if mean != nil {
				mean[r], rstd[r] = mu, rs
			}
		}
	})
}

// layernormBackwardRow accumulates one row: dinp (C) += ..., dw, db (C) +=
// ..., given dout (C), the row's input inp (C) and its saved mean and rstd.
func layernormBackwardRow(dinp, dw, db, dout, inp, w []float32, mean, rstd float32) {
	c := len(inp)
	var dnormMean, dnormNormMean float32
	for i := 0; i < c; i++ {
		norm := (inp[i] - mean) * rstd
		dnorm := w[i] * dout[i]
		dnormMean += dnorm
		dnormNormMean += dnorm * norm
	}
	dnormMean /= float32(c)
	dnormNormMean /= float32(c)
	for i := 0; i < c; i++ {
		norm := (inp[i] - mean) * rstd
		dnorm := w[i] * dout[i]
		db[i] += dout[i]
		dw[i] += norm * dout[i]
		dinp[i] += (dnorm - dnormMean - norm*dnormNormMean) * rstd
	}
}

// layernormBackward runs layernormBackwardRow over N rows of (N, C) buffers.
// Large batches split the rows over the workers, each summing dw and db into
// its own partial, added in worker order (so the result depends only on N
// and GOMAXPROCS, not on scheduling).
func layernormBackward(dinp, dw, db, dout, inp, w, mean, rstd []float32, n, c int) {
	parts := min(workers(), n/256)
	if parts <= 1 {
		for r := 0; r < n; r++ {
			layernormBackwardRow(dinp[r*c:r*c+c], dw, db, dout[r*c:r*c+c], inp[r*c:r*c+c], w, mean[r], rstd[r])
		}
		return
	}
	partial := make([]float32, parts*2*c) // per part: dw (C), db (C)
	var wg sync.WaitGroup
	wg.Add(parts)
	for p := range parts {
		lo, hi := p*n/parts, (p+1)*n/parts
		pdw, pdb := partial[2*p*c:2*p*c+c], partial[2*p*c+c:2*p*c+2*c]
		go func() {
			defer wg.Done()
			for r := lo; r < hi; r++ {
				layernormBackwardRow(dinp[r*c:r*c+c], pdw, pdb, dout[r*c:r*c+c], inp[r*c:r*c+c], w, mean[r], rstd[r])
			}
		}()
	}
	wg.Wait()
	for p := range parts {
		addInPlace(dw, partial[2*p*c:2*p*c+c])
		addInPlace(db, partial[2*p*c+c:2*p*c+2*c])
	}
}

// geluScale is sqrt(2/π) of the tanh approximation of GELU (GPT-2's).
const geluScale = 0.7978845608028654

// GELU is GPT-2's tanh approximation, written as
// x·½(1 + tanh(u)) = x·sigmoid(2u) = x / (1 + exp(−2u)), u = √(2/π)(x + 0.044715x³).
const geluCubic = 0.044715

// geluForward: out (N) = GELU(inp) elementwise.
func geluForward(out, inp []float32) {
	parallelRange(len(inp), 1<<14, func(lo, hi int) {
		if haveKernel && hi-lo >= 8 {
			n := (hi - lo) &^ 7
			geluAVX(&out[lo], &inp[lo], n)
			lo += n
		}
		for i := lo; i < hi; i++ {
			x := inp[i]
			out[i] = x / (1 + expf(-2*geluScale*(x+geluCubic*x*x*x)))
		}
	})
}

// geluBackward: dinp (N) = GELU'(inp)·dout elementwise (dinp may alias
// dout), with GELU'(x) = s + 2√(2/π)·x·s(1−s)(1 + 3·0.044715x²), s = sigmoid(2u).
func geluBackward(dinp, inp, dout []float32) {
	parallelRange(len(inp), 1<<14, func(lo, hi int) {
		if haveKernel && hi-lo >= 8 {
			n := (hi - lo) &^ 7
			geluGradAVX(&dinp[lo], &inp[lo], &dout[lo], n)
			lo += n
		}
		for i := lo; i < hi; i++ {
			x := inp[i]
			s := 1 / (1 + expf(-2*geluScale*(x+geluCubic*x*x*x)))
			grad := s + 2*geluScale*x*s*(1-s)*(1+3*geluCubic*x*x)
			dinp[i] = grad * dout[i]
		}
	})
}

// dot is the inner product of two equal-length vectors.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy: y += alpha·x.
func axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

// softmaxStats returns the log-sum-exp of logits z (V) and, for token y
// (when y ≥ 0), its log-probability, plus the entropy of softmax(z), all at
// temperature 1. Sums run in float64 so that training, scoring and sampling
// agree closely.
func softmaxStats(z []float32, y int) (logp, ent float32, lse float64) {
	mx, s, sz := softmaxFill(z, nil)
	return statsFrom(z, y, mx, s, sz)
}

// softmaxFill computes e_v = exp(z_v − max z) in float64, storing them in w
// when w is not nil, and returns max z, Σ e and Σ e·z.
func softmaxFill(z []float32, w []float64) (mx float32, s, sz float64) {
	mx = z[0]
	for _, v := range z[1:] {
		mx = max(mx, v)
	}
	for i, v := range z {
		e := math.Exp(float64(v - mx))
		s += e
		sz += e * float64(v)
		if w != nil {
			w[i] = e
		}
	}
	return mx, s, sz
}

// statsFrom finishes softmaxStats from softmaxFill's sums.
func statsFrom(z []float32, y int, mx float32, s, sz float64) (logp, ent float32, lse float64) {
	lse = float64(mx) + math.Log(s)
	// H = lse − E_p[z]
	ent = float32(lse - sz/s)
	if y >= 0 {
		logp = float32(float64(z[y]) - lse)
	}
	return logp, ent, lse
}
