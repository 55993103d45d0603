package policy

import (
	"fmt"
	"math"
	"sync"
)

// AdamWConfig configures the optimiser.
type AdamWConfig struct {
	LR          float64 `json:"lr"`           // base learning rate; default 3e-4
	Beta1       float64 `json:"beta1"`        // first-moment decay; default 0.9
	Beta2       float64 `json:"beta2"`        // second-moment decay; default 0.999
	Eps         float64 `json:"eps"`          // denominator epsilon; default 1e-8
	WeightDecay float64 `json:"weight_decay"` // decoupled decay of matrices (not biases, LayerNorm); default 0.01
	ClipNorm    float64 `json:"clip_norm"`    // clip the global gradient L2 norm to this; 0 = off; default 1.0
	SkipNorm    float64 `json:"skip_norm"`    // skip the step when the norm exceeds this; 0 = off; default 500
	// Schedule multiplies LR: the rate at step s (0-based, counting
	// non-skipped steps) is LR·Schedule(s). nil = constant LR.
	Schedule func(step int) float64 `json:"-"`
}

// DefaultAdamW: LR 3e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.01,
// clip 1.0, skip 500.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{LR: 3e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, ClipNorm: 1, SkipNorm: 500}
}

// Validate reports the first problem with c.
func (c AdamWConfig) Validate() error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) || v < 0 }
	switch {
	case bad(c.LR) || bad(c.Eps) || bad(c.WeightDecay) || bad(c.ClipNorm) || bad(c.SkipNorm):
		return fmt.Errorf("%w: AdamW LR, Eps, WeightDecay, ClipNorm, SkipNorm must be finite and ≥ 0", ErrConfig)
	case c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("%w: AdamW betas (%v, %v) must be in [0, 1)", ErrConfig, c.Beta1, c.Beta2)
	}
	return nil
}

// AdamW is the optimiser state for one model: first and second moments in
// the layout of Model.Params.
type AdamW struct {
	Config AdamWConfig
	M, V   []float32 // (P) moment estimates
	T      int       // updates taken (skipped steps do not count)
	specs  []tensorSpec
}

// NewAdamW makes zero optimiser state for m.
func NewAdamW(cfg AdamWConfig, m *Model) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &AdamW{Config: cfg, M: make([]float32, len(m.Params)), V: make([]float32, len(m.Params)), specs: m.specs}, nil
}

// StepInfo describes one Step.
type StepInfo struct {
	GradNorm float64 // global L2 norm of the gradients before clipping
	Skipped  bool    // the update was skipped (non-finite or > SkipNorm)
	LR       float64 // learning rate used (or that would have been used)
}

// Step clips the gradients by global norm, skips the update (zeroing grads,
// not moving parameters or moments) when the norm is non-finite or above
// SkipNorm, otherwise applies AdamW with decoupled weight decay on matrices;
// it always zeroes the gradients.
func (o *AdamW) Step(m *Model) StepInfo {
	c := o.Config
	norm := math.Sqrt(sumSquares(m.Grads))
	lr := c.LR
	if c.Schedule != nil {
		lr *= c.Schedule(o.T)
	}
	info := StepInfo{GradNorm: norm, LR: lr}
	if math.IsNaN(norm) || math.IsInf(norm, 0) || (c.SkipNorm > 0 && norm > c.SkipNorm) || math.IsNaN(lr) {
		info.Skipped = true
		m.ZeroGrads()
		return info
	}
	scale := 1.0
	if c.ClipNorm > 0 && norm > c.ClipNorm {
		scale = c.ClipNorm / norm
	}
	o.T++
	bc1 := 1 - math.Pow(c.Beta1, float64(o.T))
	bc2 := 1 - math.Pow(c.Beta2, float64(o.T))
	b1, b2 := float32(c.Beta1), float32(c.Beta2)
	for _, s := range o.specs {
		wd := 0.0
		if s.Decay {
			wd = c.WeightDecay
		}
		lo, hi := s.Offset, s.Offset+s.size()
		p, g, mm, vv := m.Params[lo:hi], m.Grads[lo:hi], o.M[lo:hi], o.V[lo:hi]
		step, decay, sc, eps := float32(lr/bc1), float32(1-lr*wd), float32(scale), float32(c.Eps)
		rbc2 := float32(1 / math.Sqrt(bc2))
		parallelRange(len(p), 1<<15, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				gi := g[i] * sc
				mm[i] = b1*mm[i] + (1-b1)*gi
				vv[i] = b2*vv[i] + (1-b2)*gi*gi
				den := float32(math.Sqrt(float64(vv[i])))*rbc2 + eps
				p[i] = p[i]*decay - step*mm[i]/den
			}
		})
	}
	m.ZeroGrads()
	return info
}

// sumSquares is Σ g² in float64, over fixed chunks added in order (the
// result depends only on len(g) and GOMAXPROCS).
func sumSquares(g []float32) float64 {
	parts := min(workers(), len(g)/(1<<15))
	if parts <= 1 {
		var ss float64
		for _, v := range g {
			ss += float64(v) * float64(v)
		}
		return ss
	}
	sums := make([]float64, parts)
	var wg sync.WaitGroup
	wg.Add(parts)
	for p := range parts {
		lo, hi := p*len(g)/parts, (p+1)*len(g)/parts
		go func() {
			defer wg.Done()
			var ss float64
			for _, v := range g[lo:hi] {
				ss += float64(v) * float64(v)
			}
			sums[p] = ss
		}()
	}
	wg.Wait()
	var ss float64
	for _, s := range sums {
		ss += s
	}
	return ss
}
