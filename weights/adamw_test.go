package weights

import (
	"math"
	"math/rand/v2"
)

// bf16 rounds an fp32 to bfloat16 bits, round to nearest even (what
// torch's .to(torch.bfloat16) does); NaN stays a quiet NaN.
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// adamStepBF16 returns the bf16 bits of n fp32 master weights (normal, std
// 0.02) before and after one AdamW step at lr with random gradients: on the
// first step m̂ = g and v̂ = g², so each weight moves by lr·g/(|g|+eps) ≈
// ±lr, plus the decoupled weight decay lr·wd·w.
func adamStepBF16(n int, lr float32, rng *rand.Rand) (before, after []byte) {
	before, after = make([]byte, 2*n), make([]byte, 2*n)
	const wd, eps = 0.01, 1e-8
	for i := range n {
		w := float32(rng.NormFloat64() * 0.02)
		g := float32(rng.NormFloat64())
		w2 := w - lr*(g/(float32(math.Abs(float64(g)))+eps)) - lr*wd*w
		b0, b1 := bf16(w), bf16(w2)
		before[2*i], before[2*i+1] = byte(b0), byte(b0>>8)
		after[2*i], after[2*i+1] = byte(b1), byte(b1>>8)
	}
	return before, after
}
