package policy

import (
	"errors"
	"fmt"
)

// Sentinel errors; wrapped errors carry the details.
var (
	// ErrConfig reports an invalid Config or AdamWConfig.
	ErrConfig = errors.New("policy: invalid config")
	// ErrInput reports token sequences or options the model cannot process.
	ErrInput = errors.New("policy: invalid input")
	// ErrCheckpoint reports a checkpoint that cannot be read or does not
	// match its own config.
	ErrCheckpoint = errors.New("policy: bad checkpoint")
	// ErrToken reports text the tokenizer cannot encode.
	ErrToken = errors.New("policy: unknown character")
)

// Config is the shape of the transformer.
type Config struct {
	Vocab   int  `json:"vocab"`   // V, tokenizer size (Tokenizer.Size())
	Context int  `json:"context"` // T_max, max tokens of prompt+response; default 128
	Layers  int  `json:"layers"`  // L, transformer blocks; default 2
	Width   int  `json:"width"`   // C, residual width; default 64
	Heads   int  `json:"heads"`   // NH, attention heads, C % NH == 0; default 4
	Tied    bool `json:"tied"`    // output projection tied to the token embedding; default true
}

// DefaultConfig is the ~100k-parameter model used for the built-in tasks:
// 2 layers, width 64, 4 heads, context 128, tied output projection.
func DefaultConfig(vocab int) Config {
	return Config{Vocab: vocab, Context: 128, Layers: 2, Width: 64, Heads: 4, Tied: true}
}

// Validate reports the first problem with c, saying how to fix it.
func (c Config) Validate() error {
	switch {
	case c.Vocab < 4:
		return fmt.Errorf("%w: Vocab %d < 4; set it to Tokenizer.Size() (specials plus alphabet)", ErrConfig, c.Vocab)
	case c.Context < 2:
		return fmt.Errorf("%w: Context %d < 2; it must hold a prompt of at least BOS and one response token", ErrConfig, c.Context)
	case c.Layers < 1:
		return fmt.Errorf("%w: Layers %d < 1", ErrConfig, c.Layers)
	case c.Width < 1 || c.Heads < 1:
		return fmt.Errorf("%w: Width %d and Heads %d must be positive", ErrConfig, c.Width, c.Heads)
	case c.Width%c.Heads != 0:
		return fmt.Errorf("%w: Width %d is not a multiple of Heads %d; choose Heads dividing Width", ErrConfig, c.Width, c.Heads)
	case c.Vocab > 1<<20 || c.Context > 1<<16 || c.Width > 1<<14 || c.Layers > 256:
		return fmt.Errorf("%w: sizes out of range (Vocab ≤ 2^20, Context ≤ 2^16, Width ≤ 2^14, Layers ≤ 256)", ErrConfig)
	}
	return nil
}

// tensorSpec names one parameter tensor and where it lives in Params.
type tensorSpec struct {
	Name   string
	Shape  []int
	Offset int // in floats
	Decay  bool
}

func (t tensorSpec) size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// layout lists the parameter tensors of c in storage order (llm.c's order):
// wte, wpe, then per layer ln1, qkv, attention projection, ln2, MLP fc and
// projection, then the final LayerNorm and, when untied, the output matrix.
// Matrices (rank ≥ 2) are weight-decayed; vectors (biases, LayerNorm) are not.
func (c Config) layout() []tensorSpec {
	C, V := c.Width, c.Vocab
	var specs []tensorSpec
	off := 0
	add := func(name string, shape ...int) {
		s := tensorSpec{Name: name, Shape: shape, Offset: off, Decay: len(shape) >= 2}
		off += s.size()
		specs = append(specs, s)
	}
	add("wte", V, C)
	add("wpe", c.Context, C)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("h.%d.", l)
		add(p+"ln1.w", C)
		add(p+"ln1.b", C)
		add(p+"qkv.w", 3*C, C)
		add(p+"qkv.b", 3*C)
		add(p+"attproj.w", C, C)
		add(p+"attproj.b", C)
		add(p+"ln2.w", C)
		add(p+"ln2.b", C)
		add(p+"fc.w", 4*C, C)
		add(p+"fc.b", 4*C)
		add(p+"fcproj.w", C, 4*C)
		add(p+"fcproj.b", C)
	}
	add("lnf.w", C)
	add("lnf.b", C)
	if !c.Tied {
		add("lm_head.w", V, C)
	}
	return specs
}

// numParams is the length of the flat parameter slice.
func (c Config) numParams() int {
	specs := c.layout()
	last := specs[len(specs)-1]
	return last.Offset + last.size()
}
