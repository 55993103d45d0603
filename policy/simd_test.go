package policy

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExp: the vector and scalar exp against math.Exp, relative tolerance
// 3e-7, over the range softmax and GELU use.
func TestExp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1003)
	for i := range x {
		x[i] = float32(rng.Float64()*170 - 86)
	}
	x[0], x[1], x[2] = 0, -1e-9, 80
	y := append([]float32(nil), x...)
	expInPlace(y)
	for i, v := range x {
		want := math.Exp(float64(v))
		if d := math.Abs(float64(y[i])-want) / want; d > 3e-7 {
			t.Errorf("exp(%g) = %g, want %g (rel %g)", v, y[i], want, d)
		}
		if d := math.Abs(float64(expf(v))-want) / want; d > 3e-7 {
			t.Errorf("expf(%g) = %g, want %g (rel %g)", v, expf(v), want, d)
		}
	}
	if y := []float32{-1000, 1000}; true {
		expInPlace(y)
		if y[0] < 0 || y[0] > 1e-37 || math.IsInf(float64(y[1]), 0) || y[1] < 1e38 {
			t.Errorf("clamped exp gave %v", y)
		}
	}
}

// TestRowLoops compares the vector row loops with plain loops in float64
// (relative tolerance 1e-5) for head sizes with and without a vector path.
func TestRowLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, hs := range []int{8, 16, 24, 32, 5} {
		for _, n := range []int{0, 1, 2, 7, 40} {
			stride := 3*hs + 5
			base := make([]float32, max(n, 1)*stride+hs)
			for i := range base {
				base[i] = float32(rng.NormFloat64())
			}
			q, w := make([]float32, hs), make([]float32, n)
			for i := range q {
				q[i] = float32(rng.NormFloat64())
			}
			for i := range w {
				w[i] = float32(rng.NormFloat64())
			}
			out := make([]float32, n)
			dotRows(out, q, base, stride)
			for r := 0; r < n; r++ {
				var s float64
				for j := 0; j < hs; j++ {
					s += float64(q[j]) * float64(base[r*stride+j])
				}
				if math.Abs(float64(out[r])-s) > 1e-5*(1+math.Abs(s)) {
					t.Errorf("dotRows hs %d n %d row %d: %g, want %g", hs, n, r, out[r], s)
				}
			}
			acc := append([]float32(nil), q...)
			sumRows(acc, w, base, stride)
			for j := 0; j < hs; j++ {
				s := float64(q[j])
				for r := 0; r < n; r++ {
					s += float64(w[r]) * float64(base[r*stride+j])
				}
				if math.Abs(float64(acc[j])-s) > 1e-5*(1+math.Abs(s)) {
					t.Errorf("sumRows hs %d n %d col %d: %g, want %g", hs, n, j, acc[j], s)
				}
			}
		}
	}
}

// TestSgemm compares the product (both backends' dispatch) with a float64
// reference for all transpose combinations and awkward sizes; relative
// tolerance 1e-5 of the row's magnitude.
func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][3]int{{1, 1, 1}, {7, 17, 3}, {6, 16, 64}, {13, 35, 700}, {100, 33, 129}, {300, 50, 20}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, beta := range []float32{0, 1} {
					a, b := make([]float32, m*k), make([]float32, k*n)
					for i := range a {
						a[i] = float32(rng.NormFloat64())
					}
					for i := range b {
						b[i] = float32(rng.NormFloat64())
					}
					c := make([]float32, m*n)
					for i := range c {
						c[i] = float32(rng.NormFloat64())
					}
					c0 := append([]float32(nil), c...)
					lda, ldb := k, n
					if tA {
						lda = m
					}
					if tB {
						ldb = k
					}
					sgemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, n)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							s, mag := float64(beta)*float64(c0[i*n+j]), 1.0
							for kk := 0; kk < k; kk++ {
								av, bv := a[i*k+kk], b[kk*n+j]
								if tA {
									av = a[kk*m+i]
								}
								if tB {
									bv = b[j*k+kk]
								}
								s += float64(av) * float64(bv)
								mag += math.Abs(float64(av) * float64(bv))
							}
							if math.Abs(float64(c[i*n+j])-s) > 1e-5*mag {
								t.Fatalf("m%d n%d k%d tA %v tB %v beta %v: c[%d,%d] = %g, want %g", m, n, k, tA, tB, beta, i, j, c[i*n+j], s)
							}
						}
					}
				}
			}
		}
	}
}

// TestGELU compares GELU and its derivative (vector and scalar paths) with
// the tanh formula in float64; absolute tolerance 2e-6·(1+|x|).
func TestGELU(t *testing.T) {
	x := make([]float32, 203)
	for i := range x {
		x[i] = float32(i-101) * 0.09
	}
	x[0], x[1] = -60, 60
	y, d := make([]float32, len(x)), make([]float32, len(x))
	ones := make([]float32, len(x))
	for i := range ones {
		ones[i] = 1
	}
	geluForward(y, x)
	geluBackward(d, x, ones)
	for i, v := range x {
		xv := float64(v)
		u := geluScale * (xv + geluCubic*xv*xv*xv)
		th := math.Tanh(u)
		want := 0.5 * xv * (1 + th)
		dwant := 0.5*(1+th) + 0.5*xv*(1-th*th)*geluScale*(1+3*geluCubic*xv*xv)
		tol := 2e-6 * (1 + math.Abs(xv))
		if math.Abs(float64(y[i])-want) > tol || math.Abs(float64(d[i])-dwant) > tol {
			t.Errorf("x=%g: gelu %g want %g, grad %g want %g", v, y[i], want, d[i], dwant)
		}
	}
}

// TestLayernormBackwardSplit: the row-split backward (with per-worker dw, db
// partials) equals the serial one within 1e-5 relative (sums reassociate).
func TestLayernormBackwardSplit(t *testing.T) {
	const n, c = 1000, 24
	rng := rand.New(rand.NewPCG(7, 7))
	r := func(k int) []float32 {
		x := make([]float32, k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	inp, dout, w, b := r(n*c), r(n*c), r(c), r(c)
	out, mean, rstd := make([]float32, n*c), make([]float32, n), make([]float32, n)
	layernormForward(out, mean, rstd, inp, w, b, n, c)
	dinp, dw, db := make([]float32, n*c), make([]float32, c), make([]float32, c)
	layernormBackward(dinp, dw, db, dout, inp, w, mean, rstd, n, c)
	sdinp, sdw, sdb := make([]float32, n*c), make([]float32, c), make([]float32, c)
	for i := 0; i < n; i++ {
		layernormBackwardRow(sdinp[i*c:i*c+c], sdw, sdb, dout[i*c:i*c+c], inp[i*c:i*c+c], w, mean[i], rstd[i])
	}
	for _, p := range []struct {
		name      string
		got, want []float32
	}{{"dinp", dinp, sdinp}, {"dw", dw, sdw}, {"db", db, sdb}} {
		for i := range p.got {
			if d := math.Abs(float64(p.got[i] - p.want[i])); d > 1e-5*(1+math.Abs(float64(p.want[i]))) {
				t.Fatalf("%s[%d] = %g, serial %g", p.name, i, p.got[i], p.want[i])
			}
		}
	}
}
