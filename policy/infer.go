package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// This file is inference without gradients: sampling with a KV cache and
// scoring. Both run the same kernels in the same order as Forward, so the
// log-probs and entropies they report agree with each other and with
// Forward to float32 rounding.

// kvCache holds the keys and values of every layer for a set of sequence
// slots: layout (L, slots, 2, tcap, C), keys then values. With layerStride 0
// all layers share one slab (scoring needs a layer's keys only while that
// layer runs).
type kvCache struct {
	tcap        int       // positions per slot
	slotStride  int       // 2·tcap·C
	layerStride int       // slots·slotStride, or 0
	buf         []float32 // see above
}

func (m *Model) newKV(slots, tcap int, shareLayers bool) kvCache {
	C := m.Config.Width
	kv := kvCache{tcap: tcap, slotStride: 2 * tcap * C}
	n := slots * kv.slotStride
	if !shareLayers {
		kv.layerStride = n
		n *= m.Config.Layers
	}
	if cap(m.kv) < n {
		m.kv = make([]float32, n)
	}
	kv.buf = m.kv[:n]
	return kv
}

// packedWeights are the model's matrices packed once per Sample or Score
// call for the built-in kernel (nil entries when it is not in use): while
// sampling, every step multiplies a few rows by all the weights, and packing
// them each time would cost as much as the products.
type packedWeights struct {
	qkv, attproj, fc, fcproj []*packedB // per layer
	wout                     *packedB
}

// packWeights packs the forward matrices (w (OC, IC) as op(B) = wᵀ).
func (m *Model) packWeights() packedWeights {
	cfg := m.Config
	C, V, L := cfg.Width, cfg.Vocab, cfg.Layers
	pw := packedWeights{qkv: make([]*packedB, L), attproj: make([]*packedB, L), fc: make([]*packedB, L), fcproj: make([]*packedB, L)}
	if !useKernel {
		return pw
	}
	pack := func(w []float32, ic, oc int) *packedB {
		pb := packB(true, ic, oc, w, ic, nil)
		return &pb
	}
	for l := range L {
		w := &m.p.layers[l]
		pw.qkv[l] = pack(w.qkvw, C, 3*C)
		pw.attproj[l] = pack(w.attprojw, C, C)
		pw.fc[l] = pack(w.fcw, C, 4*C)
		pw.fcproj[l] = pack(w.fcprojw, 4*C, C)
	}
	pw.wout = pack(m.p.wout, C, V)
	return pw
}

// inferBufs are the per-call activations of infer, sized for N rows.
type inferBufs struct {
	x    []float32 // (N, C) residual stream
	ln   []float32 // (N, C)
	qkv  []float32 // (N, 3C)
	atty []float32 // (N, C)
	tmp  []float32 // (N, C)
	fch  []float32 // (N, 4C)
	fchG []float32 // (N, 4C)
	lnf  []float32 // (M, C)
}

func (m *Model) newInferBufs(n, mrows int) inferBufs {
	return m.carveInferBufs(make([]float32, m.inferBufsLen(n, mrows)), n, mrows)
}

// inferBufsLen is the floats of inferBufs for n rows, mrows of them predicting.
func (m *Model) inferBufsLen(n, mrows int) int { return (n*15 + mrows) * m.Config.Width }

// carveInferBufs lays inferBufs out in buf (inferBufsLen floats). Its
// contents may be arbitrary: infer writes every value before reading it.
func (m *Model) carveInferBufs(buf []float32, n, mrows int) inferBufs {
	C := m.Config.Width
	cv := carver{buf}
	return inferBufs{x: cv.take(n * C), ln: cv.take(n * C), qkv: cv.take(n * 3 * C), atty: cv.take(n * C),
		tmp: cv.take(n * C), fch: cv.take(n * 4 * C), fchG: cv.take(n * 4 * C), lnf: cv.take(mrows * C)}
}

// infer runs new tokens through the model, reading and extending the cache.
// For sequence i of this call, counts[i] new tokens (packed in tokens) go to
// cache slot slots[i] at positions past[i]…; the logits (M, V) of the packed
// rows predRows are written to logits.
func (m *Model) infer(kv *kvCache, pw *packedWeights, bufs inferBufs, slots, counts, past []int, tokens []int32, predRows []int32, logits []float32) {
	cfg := m.Config
	C, V, nh := cfg.Width, cfg.Vocab, cfg.Heads
	hs := C / nh
	N, M := len(tokens), len(predRows)
	b := bufs
	x, ln, qkv, atty, tmp, fch, fchG := b.x[:N*C], b.ln[:N*C], b.qkv[:N*3*C], b.atty[:N*C], b.tmp[:N*C], b.fch[:N*4*C], b.fchG[:N*4*C]
	offs := make([]int, len(counts)+1) // (B'+1) first row of each sequence
	pos := make([]int32, 0, N)         // (N)
	for i, c := range counts {
		offs[i+1] = offs[i] + c
		for j := 0; j < c; j++ {
			pos = append(pos, int32(past[i]+j))
		}
	}
	m.embed(x, tokens, pos)
	scratch := make([][]float32, workers()) // per worker: qs (HS), scores (tcap)
	for w := range scratch {
		scratch[w] = make([]float32, hs+kv.tcap)
	}
	scale := float32(1 / math.Sqrt(float64(hs)))
	for l := range cfg.Layers {
		w := &m.p.layers[l]
		layer := kv.buf[l*kv.layerStride:]
		layernormForward(ln, nil, nil, x, w.ln1w, w.ln1b, N, C)
		matmulForwardPacked(qkv, ln, w.qkvw, pw.qkv[l], w.qkvb, N, C, 3*C)
		for i := range counts {
			slot := layer[slots[i]*kv.slotStride:]
			for j := 0; j < counts[i]; j++ {
				r, p := offs[i]+j, past[i]+j
				copy(slot[p*C:p*C+C], qkv[r*3*C+C:r*3*C+2*C])
				copy(slot[(kv.tcap+p)*C:(kv.tcap+p)*C+C], qkv[r*3*C+2*C:r*3*C+3*C])
			}
		}
		// One job per sequence (all heads): while sampling each has a
		// single new token, too little work to split further.
		parallelFor(len(counts), func(worker, i int) {
			sc := scratch[worker]
			slot := layer[slots[i]*kv.slotStride:]
			for h := 0; h < nh; h++ {
				keys, values := slot[h*hs:kv.tcap*C], slot[kv.tcap*C+h*hs:2*kv.tcap*C]
				for j := 0; j < counts[i]; j++ {
					r, p := offs[i]+j, past[i]+j
					q := qkv[r*3*C+h*hs : r*3*C+h*hs+hs]
					attentionRow(atty[r*C+h*hs:r*C+h*hs+hs], sc[hs:hs+p+1], sc[:hs], q, keys, values, C, scale)
				}
			}
		})
		matmulForwardPacked(tmp, atty, w.attprojw, pw.attproj[l], w.attprojb, N, C, C)
		addResidual(x, tmp)
		layernormForward(ln, nil, nil, x, w.ln2w, w.ln2b, N, C)
		matmulForwardPacked(fch, ln, w.fcw, pw.fc[l], w.fcb, N, C, 4*C)
		geluForward(fchG, fch)
		matmulForwardPacked(tmp, fchG, w.fcprojw, pw.fcproj[l], w.fcprojb, N, 4*C, C)
		addResidual(x, tmp)
	}
	lnf := b.lnf[:M*C]
	for r, row := range predRows {
		layernormForward(lnf[r*C:r*C+C], nil, nil, x[int(row)*C:int(row)*C+C], m.p.lnfw, m.p.lnfb, 1, C)
	}
	matmulForwardPacked(logits[:M*V], lnf, m.p.wout, pw.wout, nil, M, C, V)
}

// scoreChunkTokens bounds the tokens Score runs at once (memory, cache reuse).
const scoreChunkTokens = 4096

// Score is ScoreAt at temperature 1.
func (m *Model) Score(seqs []Seq) (logps, ents [][]float32, err error) { return m.ScoreAt(seqs, 1) }

// ScoreAt returns, per sequence and per response token, the log-prob of the
// token and the entropy of the next-token distribution softmax(z/temp),
// without keeping activations. For the tokens Sample drew at temperature
// temp, it equals Sample's records within 1e-5. temp must be > 0.
func (m *Model) ScoreAt(seqs []Seq, temp float32) (logps, ents [][]float32, err error) {
	if err := checkTemp(temp); err != nil {
		return nil, nil, err
	}
	cfg := m.Config
	V := cfg.Vocab
	if _, err := m.pack(seqs); err != nil { // validation only
		return nil, nil, err
	}
	logps, ents = make([][]float32, len(seqs)), make([][]float32, len(seqs))
	pw := m.packWeights()
	for start := 0; start < len(seqs); {
		end, n, tmax := start, 0, 0
		for end < len(seqs) && (end == start || n+len(seqs[end].Tokens) <= scoreChunkTokens) {
			n += len(seqs[end].Tokens)
			tmax = max(tmax, len(seqs[end].Tokens))
			end++
		}
		chunk := seqs[start:end]
		slots, counts, past := make([]int, len(chunk)), make([]int, len(chunk)), make([]int, len(chunk))
		tokens := make([]int32, 0, n)
		var rows []int32
		for i, s := range chunk {
			slots[i], counts[i] = i, len(s.Tokens)
			for t := s.PromptLen; t < len(s.Tokens); t++ {
				rows = append(rows, int32(len(tokens)+t-1))
			}
			tokens = append(tokens, s.Tokens...)
		}
		kv := m.newKV(len(chunk), tmax, true)
		logits := make([]float32, len(rows)*V)
		m.infer(&kv, &pw, m.newInferBufs(n, len(rows)), slots, counts, past, tokens, rows, logits)
		scaleLogits(logits, temp)
		r := 0
		for i, s := range chunk {
			k := len(s.Tokens) - s.PromptLen
			lp, en := make([]float32, k), make([]float32, k)
			for j := 0; j < k; j++ {
				lp[j], en[j], _ = softmaxStats(logits[r*V:r*V+V], int(s.Tokens[s.PromptLen+j]))
				r++
			}
			logps[start+i], ents[start+i] = lp, en
		}
		start = end
	}
	return logps, ents, nil
}

// SampleOptions control Sample.
type SampleOptions struct {
	Temperature float32 // sampling temperature > 0; 0 means 1
	// TopP must be 0 or 1 (off). A nucleus below 1 is refused: the trainer
	// scores the full softmax(z/T), so tokens drawn from a truncated
	// distribution would carry behaviour log-probs that no trainer
	// reproduces, and E10's ratio would be wrong.
	TopP   float32
	MaxNew int   // max response tokens per prompt; 0 = up to Context
	EOS    int32 // token that ends a response (Tokenizer.EOS()); negative = never stop early
}

// Sampled is one response. LogProbs and Entropies refer to the distribution
// the token was drawn from, softmax(logits/Temperature): they are what
// ScoreAt and ForwardAt compute at the same temperature, so the learner's
// ratios (E10, E11) and E7's entropies see the behaviour policy as it was.
type Sampled struct {
	Tokens    []int32   // response tokens, EOS included if emitted
	LogProbs  []float32 // per response token: log-prob of the sampled token under softmax(z/T)
	Entropies []float32 // per response token: entropy of the full softmax(z/T) next-token distribution
	Finish    string    // "eos" or "length"
}

// Finish reasons of Sampled.
const (
	FinishEOS    = "eos"
	FinishLength = "length"
)

// Sample draws one response per prompt. Each prompt must be non-empty (it
// starts with BOS) and leave room for the response: len(prompt)+MaxNew ≤
// Context. Random numbers are drawn from rng in prompt order, one per token,
// so results are deterministic given rng's state.
func (m *Model) Sample(prompts [][]int32, opts SampleOptions, rng *rand.Rand) ([]Sampled, error) {
	cfg := m.Config
	V := cfg.Vocab
	temp, topP := float64(opts.Temperature), float64(opts.TopP)
	switch {
	case math.IsNaN(temp) || temp < 0:
		return nil, fmt.Errorf("%w: Temperature %v must be ≥ 0 (0 means 1)", ErrInput, opts.Temperature)
	case topP != 0 && topP != 1:
		return nil, fmt.Errorf("%w: TopP %v refused: only 0 or 1 (off) is supported, since the trainer scores the full softmax(z/T) and a nucleus would make the recorded log-probs wrong", ErrInput, opts.TopP)
	case opts.MaxNew < 0:
		return nil, fmt.Errorf("%w: MaxNew %d < 0", ErrInput, opts.MaxNew)
	}
	if temp == 0 {
		temp = 1
	}
	B := len(prompts)
	budget := make([]int, B)
	tcap, n := 0, 0
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("%w: prompt %d is empty (start it with BOS)", ErrInput, i)
		}
		for _, t := range p {
			if t < 0 || int(t) >= V {
				return nil, fmt.Errorf("%w: prompt %d: token %d outside [0, %d)", ErrInput, i, t, V)
			}
		}
		budget[i] = opts.MaxNew
		if budget[i] == 0 {
			budget[i] = cfg.Context - len(p)
		}
		if budget[i] < 1 || len(p)+budget[i] > cfg.Context {
			return nil, fmt.Errorf("%w: prompt %d: %d tokens plus MaxNew %d exceed Context %d", ErrInput, i, len(p), opts.MaxNew, cfg.Context)
		}
		tcap = max(tcap, len(p)+budget[i])
		n += len(p)
	}
	out := make([]Sampled, B)
	if B == 0 {
		return out, nil
	}
	kv := m.newKV(B, tcap, false)
	pw := m.packWeights()
	bufs := m.newInferBufs(max(n, B), B)
	logits := make([]float32, B*V) // (B, V)

	// Prefill: all prompts at once; the last row of each predicts token 1.
	slots, counts, past := make([]int, B), make([]int, B), make([]int, B)
	tokens := make([]int32, 0, n)
	rows := make([]int32, B)
	for i, p := range prompts {
		slots[i], counts[i] = i, len(p)
		tokens = append(tokens, p...)
		rows[i] = int32(len(tokens) - 1)
	}
	m.infer(&kv, &pw, bufs, slots, counts, past, tokens, rows, logits)

	active := slots // indices of unfinished prompts, in prompt order
	weights := make([]float64, V)
	for len(active) > 0 {
		next := active[:0:0]
		for a, i := range active {
			z := logits[a*V : a*V+V]
			scaleLogits(z, float32(temp)) // the distribution drawn from is the one recorded
			mx, sum, sz := softmaxFill(z, weights)
			y := drawWeighted(weights, sum, rng.Float64())
			lp, ent, _ := statsFrom(z, y, mx, sum, sz)
			s := &out[i]
			s.Tokens = append(s.Tokens, int32(y))
			s.LogProbs = append(s.LogProbs, lp)
			s.Entropies = append(s.Entropies, ent)
			switch {
			case opts.EOS >= 0 && int32(y) == opts.EOS:
				s.Finish = FinishEOS
			case len(s.Tokens) >= budget[i]:
				s.Finish = FinishLength
			default:
				next = append(next, i)
			}
		}
		active = next
		if len(active) == 0 {
			break
		}
		k := len(active)
		counts, past, tokens, rows = counts[:k], past[:k], tokens[:k], rows[:k]
		for a, i := range active {
			counts[a] = 1
			past[a] = len(prompts[i]) + len(out[i].Tokens) - 1
			tokens[a] = out[i].Tokens[len(out[i].Tokens)-1]
			rows[a] = int32(a)
		}
		m.infer(&kv, &pw, bufs, active, counts, past, tokens, rows, logits)
	}
	return out, nil
}

// drawWeighted picks index v with probability weights[v]/sum (u uniform in
// [0, 1)).
func drawWeighted(weights []float64, sum, u float64) int {
	target := u * sum
	var cum float64
	for v, w := range weights {
		cum += w
		if cum > target {
			return v
		}
	}
	return len(weights) - 1
}

// scaleLogits divides logits by temp in place (z/T of softmax(z/T)); T = 1
// leaves them untouched, bit for bit.
func scaleLogits(z []float32, temp float32) {
	if temp == 1 {
		return
	}
	inv := 1 / temp
	for i := range z {
		z[i] *= inv
	}
}

// checkTemp rejects a temperature that is not a finite positive number.
func checkTemp(temp float32) error {
	if !(temp > 0) || math.IsInf(float64(temp), 0) {
		return fmt.Errorf("%w: temperature %v must be finite and > 0", ErrInput, temp)
	}
	return nil
}
