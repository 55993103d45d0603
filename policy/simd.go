package policy

import "math"

// Vector loops behind the kernels. Each has an AVX2/FMA version (used when
// haveKernel) and the plain Go loop here that defines what it computes;
// both are deterministic, and training and inference call the same one on
// the same shapes, so they agree.

// expInPlace sets x[i] = exp(x[i]) (Cephes expf: relative error about 1e-7;
// inputs are clamped to [−87.3, 88.4]).
func expInPlace(x []float32) {
	n := len(x)
	if haveKernel && n >= 8 {
		expAVX(&x[0], n&^7)
		x = x[n&^7:]
	}
	for i, v := range x {
		x[i] = expf(v)
	}
}

// expf is the scalar version of expAVX's polynomial.
func expf(x float32) float32 {
	x = min(max(x, -87.3365478515625), 88.3762626647949)
	n := float32(math.RoundToEven(float64(x * 1.44269504088896341)))
	x -= n * 0.693359375
	x -= n * -2.12194440e-4
	z := x * x
	y := ((((1.9875691500e-4*x+1.3981999507e-3)*x+8.3334519073e-3)*x+4.1665795894e-2)*x+1.6666665459e-1)*x + 5.0000001201e-1
	y = y*z + x + 1
	return y * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// dotRows: out[t] = q · base[t·stride : t·stride+len(q)] for t < len(out).
func dotRows(out, q, base []float32, stride int) {
	n, hs := len(out), len(q)
	if n == 0 {
		return
	}
	_ = base[(n-1)*stride+hs-1]
	if haveKernel && hs%8 == 0 && hs > 0 {
		dotRowsAVX(&q[0], &base[0], stride, n, hs/8, &out[0])
		return
	}
	for t := range out {
		out[t] = dot(q, base[t*stride:t*stride+hs])
	}
}

// sumRows: out[j] += Σ_t w[t]·base[t·stride+j] for j < len(out), t < len(w).
func sumRows(out, w, base []float32, stride int) {
	n, hs := len(w), len(out)
	if n == 0 {
		return
	}
	_ = base[(n-1)*stride+hs-1]
	if haveKernel && hs%8 == 0 && hs > 0 {
		sumRowsAVX(&w[0], &base[0], stride, n, hs/8, &out[0])
		return
	}
	for t, wt := range w {
		axpy(wt, base[t*stride:t*stride+hs], out)
	}
}
