package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// layerViews are the parameters of one transformer block, all sub-slices of
// one flat buffer (Params or Grads).
type layerViews struct {
	ln1w, ln1b []float32 // (C)
	qkvw       []float32 // (3C, C), rows: q then k then v, heads contiguous inside each
	qkvb       []float32 // (3C)
	attprojw   []float32 // (C, C)
	attprojb   []float32 // (C)
	ln2w, ln2b []float32 // (C)
	fcw        []float32 // (4C, C)
	fcb        []float32 // (4C)
	fcprojw    []float32 // (C, 4C)
	fcprojb    []float32 // (C)
}

// views names the tensors of one flat buffer laid out by Config.layout.
type views struct {
	wte    []float32 // (V, C)
	wpe    []float32 // (T_max, C)
	layers []layerViews
	lnfw   []float32 // (C)
	lnfb   []float32 // (C)
	wout   []float32 // (V, C): lm_head.w, or wte when tied
}

func makeViews(c Config, buf []float32) views {
	specs := c.layout()
	byName := make(map[string][]float32, len(specs))
	for _, s := range specs {
		byName[s.Name] = buf[s.Offset : s.Offset+s.size() : s.Offset+s.size()]
	}
	v := views{wte: byName["wte"], wpe: byName["wpe"], lnfw: byName["lnf.w"], lnfb: byName["lnf.b"]}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("h.%d.", l)
		v.layers = append(v.layers, layerViews{
			ln1w: byName[p+"ln1.w"], ln1b: byName[p+"ln1.b"],
			qkvw: byName[p+"qkv.w"], qkvb: byName[p+"qkv.b"],
			attprojw: byName[p+"attproj.w"], attprojb: byName[p+"attproj.b"],
			ln2w: byName[p+"ln2.w"], ln2b: byName[p+"ln2.b"],
			fcw: byName[p+"fc.w"], fcb: byName[p+"fc.b"],
			fcprojw: byName[p+"fcproj.w"], fcprojb: byName[p+"fcproj.b"],
		})
	}
	if c.Tied {
		v.wout = v.wte
	} else {
		v.wout = byName["lm_head.w"]
	}
	return v
}

// Model is the transformer: its config, flat parameters and flat gradients
// (same layout). A Model is safe for use by one goroutine at a time; Clone it
// for another goroutine.
type Model struct {
	Config Config
	Params []float32 // all parameters, layout fixed by Config (see the tensor names in checkpoints)
	Grads  []float32 // dL/dParams accumulated by Pass.Backward, same layout as Params

	p, g  views
	specs []tensorSpec

	arenas [][]float32 // recycled activation buffers of finished passes
	kv     []float32   // recycled KV cache of Sample
}

// New builds a model with GPT-2 initialisation from rng: weights N(0, 0.02),
// residual output projections N(0, 0.02/sqrt(2L)), biases 0, LayerNorm gains 1.
func New(cfg Config, rng *rand.Rand) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newZero(cfg)
	std := 0.02
	projStd := 0.02 / math.Sqrt(2*float64(cfg.Layers))
	for _, s := range m.specs {
		t := m.Params[s.Offset : s.Offset+s.size()]
		switch {
		case len(s.Shape) == 1 && (hasSuffix(s.Name, "ln1.w") || hasSuffix(s.Name, "ln2.w") || s.Name == "lnf.w"):
			for i := range t {
				t[i] = 1
			}
		case len(s.Shape) == 1:
			// biases and LayerNorm shifts start at zero
		case hasSuffix(s.Name, "attproj.w") || hasSuffix(s.Name, "fcproj.w"):
			for i := range t {
				t[i] = float32(rng.NormFloat64() * projStd)
			}
		default:
			for i := range t {
				t[i] = float32(rng.NormFloat64() * std)
			}
		}
	}
	return m, nil
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

// newZero allocates a model of cfg (already validated) with zero parameters.
func newZero(cfg Config) *Model {
	n := cfg.numParams()
	m := &Model{Config: cfg, Params: make([]float32, n), Grads: make([]float32, n), specs: cfg.layout()}
	m.p = makeViews(cfg, m.Params)
	m.g = makeViews(cfg, m.Grads)
	return m
}

// Clone returns a deep copy of the parameters with fresh zero gradients and
// no shared buffers, for use by another goroutine.
func (m *Model) Clone() *Model {
	c := newZero(m.Config)
	copy(c.Params, m.Params)
	return c
}

// NumParams is the number of float32 parameters.
func (m *Model) NumParams() int { return len(m.Params) }

// ZeroGrads sets every gradient to zero.
func (m *Model) ZeroGrads() { clear(m.Grads) }

// TensorNames lists the parameter tensors in storage order with their shapes,
// as written to checkpoints.
func (m *Model) TensorNames() (names []string, shapes [][]int) {
	for _, s := range m.specs {
		names = append(names, s.Name)
		shapes = append(shapes, append([]int(nil), s.Shape...))
	}
	return names, shapes
}

// arena returns a buffer of n floats, reusing a recycled one if it is large
// enough; its contents are arbitrary (Forward writes every value it reads).
func (m *Model) arena(n int) []float32 {
	for i, a := range m.arenas {
		if cap(a) >= n {
			m.arenas = append(m.arenas[:i], m.arenas[i+1:]...)
			return a[:n]
		}
	}
	return make([]float32, n)
}

// recycle keeps at most three finished buffers for reuse.
func (m *Model) recycle(a []float32) {
	if a == nil {
		return
	}
	if len(m.arenas) >= 3 {
		m.arenas = m.arenas[1:]
	}
	m.arenas = append(m.arenas, a)
}

// CheckFinite reports the first parameter that is NaN or infinite: such a
// model samples garbage (every score NaN), which an evaluation would report
// as pass@1 0 rather than as the broken checkpoint it is.
func (m *Model) CheckFinite() error {
	for i, p := range m.Params {
		if math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) {
			return fmt.Errorf("policy: parameter %d of %d is %v: the weights are not finite", i, len(m.Params), p)
		}
	}
	return nil
}
