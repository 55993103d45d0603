package policy

import (
	"fmt"
	"math"
)

// Seq is one prompt+response: Tokens = prompt then response; the response is
// Tokens[PromptLen:]. PromptLen ≥ 1 (the prompt starts with BOS).
type Seq struct {
	Tokens    []int32
	PromptLen int
}

// packing lays B sequences of different lengths end to end (no padding): row
// r of every (N, ·) buffer is one token of one sequence.
type packing struct {
	n, m    int     // N packed tokens, M predicted (response) tokens
	offs    []int   // (B+1) first row of each sequence; offs[B] = N
	predOff []int   // (B+1) first predicted token of each sequence; predOff[B] = M
	attOff  []int   // (B+1) start of each sequence's (NH, T, T) attention block
	tokens  []int32 // (N) token ids
	pos     []int32 // (N) position of each row inside its sequence
	rows    []int32 // (M) row whose logits predict each response token
	targets []int32 // (M) the response token predicted
}

func (m *Model) pack(seqs []Seq) (packing, error) {
	cfg := m.Config
	var p packing
	p.offs = make([]int, len(seqs)+1)
	p.predOff = make([]int, len(seqs)+1)
	p.attOff = make([]int, len(seqs)+1)
	for i, s := range seqs {
		T := len(s.Tokens)
		if s.PromptLen < 1 || s.PromptLen > T {
			return p, fmt.Errorf("%w: sequence %d: PromptLen %d outside [1, %d]", ErrInput, i, s.PromptLen, T)
		}
		if T > cfg.Context {
			return p, fmt.Errorf("%w: sequence %d: %d tokens exceed Context %d", ErrInput, i, T, cfg.Context)
		}
		for _, t := range s.Tokens {
			if t < 0 || int(t) >= cfg.Vocab {
				return p, fmt.Errorf("%w: sequence %d: token %d outside [0, %d)", ErrInput, i, t, cfg.Vocab)
			}
		}
		p.offs[i+1] = p.offs[i] + T
		p.predOff[i+1] = p.predOff[i] + T - s.PromptLen
		p.attOff[i+1] = p.attOff[i] + cfg.Heads*T*T
	}
	p.n, p.m = p.offs[len(seqs)], p.predOff[len(seqs)]
	p.tokens = make([]int32, 0, p.n)
	p.pos = make([]int32, 0, p.n)
	p.rows = make([]int32, 0, p.m)
	p.targets = make([]int32, 0, p.m)
	for i, s := range seqs {
		p.tokens = append(p.tokens, s.Tokens...)
		for t := range s.Tokens {
			p.pos = append(p.pos, int32(t))
		}
		for t := s.PromptLen; t < len(s.Tokens); t++ {
			p.rows = append(p.rows, int32(p.offs[i]+t-1))
			p.targets = append(p.targets, s.Tokens[t])
		}
	}
	return p, nil
}

// layerActs are the activations of one block kept for the backward pass.
type layerActs struct {
	ln1, ln1Mean, ln1Rstd []float32 // (N, C), (N), (N)
	qkv                   []float32 // (N, 3C)
	att                   []float32 // (Σ NH·T²) softmax probabilities, per sequence (NH, T, T)
	atty                  []float32 // (N, C) attention output before the projection
	res2                  []float32 // (N, C) residual after attention
	ln2, ln2Mean, ln2Rstd []float32 // (N, C), (N), (N)
	fch, fchGelu          []float32 // (N, 4C), (N, 4C)
	res3                  []float32 // (N, C) residual after the MLP = input of the next block
}

// Pass is one forward pass over a batch, holding what Backward needs.
// LogProbs and Entropies are per sequence, per response token, of
// softmax(z/T) at the pass's temperature T (1 for Forward). A Pass belongs to the Model that made it; the Model's
// parameters must not change between Forward and Backward.
type Pass struct {
	LogProbs, Entropies [][]float32

	m       *Model
	pk      packing
	arena   []float32
	encoded []float32 // (N, C) token + position embeddings
	layers  []layerActs
	lnf     []float32 // (M, C) final LayerNorm of the predicting rows
	lnfMean []float32 // (M)
	lnfRstd []float32 // (M)
	logits  []float32 // (M, V)
	lse     []float64 // (M) log-sum-exp of each logits row
	ent     []float32 // (M) entropies (private copy: callers may edit Entropies)
	temp    float32   // T: logits holds z/T
	done    bool
}

// carve hands out consecutive slices of an arena.
type carver struct{ buf []float32 }

func (c *carver) take(n int) []float32 {
	s := c.buf[:n:n]
	c.buf = c.buf[n:]
	return s
}

func (m *Model) passSize(pk packing) int {
	C, V, N, M := m.Config.Width, m.Config.Vocab, pk.n, pk.m
	perLayer := N*C + 2*N + N*3*C + pk.attOff[len(pk.attOff)-1] + N*C + N*C + N*C + 2*N + 2*N*4*C + N*C
	return N*C + m.Config.Layers*perLayer + M*C + 2*M + M*V
}

// Forward is ForwardAt at temperature 1.
func (m *Model) Forward(seqs []Seq) (*Pass, error) { return m.ForwardAt(seqs, 1) }

// ForwardAt runs the batch and keeps activations for one Backward. The
// log-probs and entropies are those of softmax(z/temp), the distribution an
// actor sampling at temp drew from; temp must be > 0.
func (m *Model) ForwardAt(seqs []Seq, temp float32) (*Pass, error) {
	if err := checkTemp(temp); err != nil {
		return nil, err
	}
	pk, err := m.pack(seqs)
	if err != nil {
		return nil, err
	}
	cfg := m.Config
	C, V, N, M := cfg.Width, cfg.Vocab, pk.n, pk.m
	ps := &Pass{m: m, pk: pk, temp: temp}
	ps.arena = m.arena(m.passSize(pk))
	cv := carver{ps.arena}
	ps.encoded = cv.take(N * C)
	ps.layers = make([]layerActs, cfg.Layers)
	for l := range ps.layers {
		a := &ps.layers[l]
		a.ln1, a.ln1Mean, a.ln1Rstd = cv.take(N*C), cv.take(N), cv.take(N)
		a.qkv = cv.take(N * 3 * C)
		a.att = cv.take(pk.attOff[len(pk.attOff)-1])
		a.atty = cv.take(N * C)
		a.res2 = cv.take(N * C)
		a.ln2, a.ln2Mean, a.ln2Rstd = cv.take(N*C), cv.take(N), cv.take(N)
		a.fch, a.fchGelu = cv.take(N*4*C), cv.take(N*4*C)
		a.res3 = cv.take(N * C)
	}
	ps.lnf, ps.lnfMean, ps.lnfRstd = cv.take(M*C), cv.take(M), cv.take(M)
	ps.logits = cv.take(M * V)
	ps.lse = make([]float64, M)

	m.embed(ps.encoded, pk.tokens, pk.pos)
	res := ps.encoded
	for l := range ps.layers {
		a, w := &ps.layers[l], &m.p.layers[l]
		layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, res, w.ln1w, w.ln1b, N, C)
		matmulForward(a.qkv, a.ln1, w.qkvw, w.qkvb, N, C, 3*C)
		attentionForward(a.atty, a.att, a.qkv, pk.offs, pk.attOff, cfg.Heads, C)
		matmulForward(a.res2, a.atty, w.attprojw, w.attprojb, N, C, C)
		addResidual(a.res2, res)
		layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.res2, w.ln2w, w.ln2b, N, C)
		matmulForward(a.fch, a.ln2, w.fcw, w.fcb, N, C, 4*C)
		geluForward(a.fchGelu, a.fch)
		matmulForward(a.res3, a.fchGelu, w.fcprojw, w.fcprojb, N, 4*C, C)
		addResidual(a.res3, a.res2)
		res = a.res3
	}
	for r, row := range pk.rows {
		layernormForward(ps.lnf[r*C:r*C+C], ps.lnfMean[r:r+1], ps.lnfRstd[r:r+1], res[int(row)*C:int(row)*C+C], m.p.lnfw, m.p.lnfb, 1, C)
	}
	matmulForward(ps.logits, ps.lnf, m.p.wout, nil, M, C, V)
	scaleLogits(ps.logits, temp) // from here on, logits are s = z/T

	ps.LogProbs = make([][]float32, len(seqs))
	ps.Entropies = make([][]float32, len(seqs))
	lp, en := make([]float32, M), make([]float32, M)
	for r := 0; r < M; r++ {
		lp[r], en[r], ps.lse[r] = softmaxStats(ps.logits[r*V:r*V+V], int(pk.targets[r]))
	}
	ps.ent = append([]float32(nil), en...)
	for i := range seqs {
		ps.LogProbs[i] = lp[pk.predOff[i]:pk.predOff[i+1]:pk.predOff[i+1]]
		ps.Entropies[i] = en[pk.predOff[i]:pk.predOff[i+1]:pk.predOff[i+1]]
	}
	return ps, nil
}

// embed: out (N, C) = wte[tokens] + wpe[pos].
func (m *Model) embed(out []float32, tokens, pos []int32) {
	C := m.Config.Width
	for r, t := range tokens {
		o := out[r*C : r*C+C]
		te := m.p.wte[int(t)*C : int(t)*C+C]
		pe := m.p.wpe[int(pos[r])*C : int(pos[r])*C+C]
		for i := range o {
			o[i] = te[i] + pe[i]
		}
	}
}

// addInPlace: dst += src elementwise.
func addInPlace(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// addResidual is addInPlace for (N, C) activations, split over the workers.
func addResidual(dst, src []float32) {
	parallelRange(len(dst), 1<<14, func(lo, hi int) { addInPlace(dst[lo:hi], src[lo:hi]) })
}

// attentionRow computes one query's causal attention: scores of q (HS)
// against the keys of positions 0…len(row)−1 (rows of keys, stride floats
// apart), softmax into row, and y (HS) = Σ row[t]·values[t]. qs is scratch
// (HS). Training and inference both call it, so they agree exactly.
func attentionRow(y, row, qs, q, keys, values []float32, stride int, scale float32) {
	for i, v := range q {
		qs[i] = v * scale
	}
	dotRows(row, qs, keys, stride)
	mx := row[0]
	for _, v := range row[1:] {
		mx = max(mx, v)
	}
	for i := range row {
		row[i] -= mx
	}
	expInPlace(row)
	var sum float32
	for _, v := range row {
		sum += v
	}
	inv := 1 / sum
	for i := range row {
		row[i] *= inv
	}
	clear(y)
	sumRows(y, row, values, stride)
}

// attentionForward: causal multi-head attention of every packed sequence.
// qkv (N, 3C) holds q, k, v per row; att receives each sequence's (NH, T, T)
// probabilities at attOff; out (N, C) the per-head weighted values.
// Work is split over (sequence, head) pairs, which touch disjoint memory.
func attentionForward(out, att, qkv []float32, offs, attOff []int, nh, C int) {
	hs := C / nh
	scale := float32(1 / math.Sqrt(float64(hs)))
	B := len(offs) - 1
	parallelFor(B*nh, func(_, job int) {
		s, h := job/nh, job%nh
		o, T := offs[s], offs[s+1]-offs[s]
		qs := make([]float32, hs)
		keys := qkv[o*3*C+C+h*hs:]
		values := qkv[o*3*C+2*C+h*hs:]
		for t := 0; t < T; t++ {
			q := qkv[(o+t)*3*C+h*hs : (o+t)*3*C+h*hs+hs]
			row := att[attOff[s]+h*T*T+t*T : attOff[s]+h*T*T+t*T+t+1]
			attentionRow(out[(o+t)*C+h*hs:(o+t)*C+h*hs+hs], row, qs, q, keys, values, 3*C, scale)
		}
	})
}

// attentionBackward: given dout (N, C), accumulates dqkv (N, 3C, zeroed by
// the caller) from the saved qkv and att of attentionForward. Per (sequence,
// head): a pass over query rows gives dscores (kept in scratch) and dq; a
// pass over key rows then gathers a column of probabilities and of dscores
// and accumulates dv and dk with register-held sums (cheaper than updating
// every key row once per query).
func attentionBackward(dqkv, dout, qkv, att []float32, offs, attOff []int, nh, C int) {
	hs := C / nh
	scale := float32(1 / math.Sqrt(float64(hs)))
	B := len(offs) - 1
	maxT := 0
	for s := 0; s < B; s++ {
		maxT = max(maxT, offs[s+1]-offs[s])
	}
	scratch := make([][]float32, workers()) // per worker: dscores (T, T), column (T)
	parallelFor(B*nh, func(worker, job int) {
		if scratch[worker] == nil {
			scratch[worker] = make([]float32, maxT*maxT+maxT)
		}
		s, h := job/nh, job%nh
		o, T := offs[s], offs[s+1]-offs[s]
		D, col := scratch[worker][:T*T], scratch[worker][maxT*maxT:maxT*maxT+T]
		P := att[attOff[s]+h*T*T : attOff[s]+(h+1)*T*T]
		keys, dkeys := qkv[o*3*C+C+h*hs:], dqkv[o*3*C+C+h*hs:]
		values, dvalues := qkv[o*3*C+2*C+h*hs:], dqkv[o*3*C+2*C+h*hs:]
		for t := 0; t < T; t++ {
			row := P[t*T : t*T+t+1]
			dy := dout[(o+t)*C+h*hs : (o+t)*C+h*hs+hs]
			da := D[t*T : t*T+t+1]
			// through y = Σ p·v: dp = dy·v
			dotRows(da, dy, values, 3*C)
			// through the softmax: dscore = p·(dp − Σ p·dp), times the scale
			var sum float32
			for t2, p := range row {
				sum += p * da[t2]
			}
			for t2, p := range row {
				da[t2] = p * (da[t2] - sum) * scale
			}
			qo := (o+t)*3*C + h*hs
			sumRows(dqkv[qo:qo+hs], da, keys, 3*C)
		}
		for t2 := 0; t2 < T; t2++ {
			n := T - t2
			w := col[:n]
			// dv[t2] = Σ_{t ≥ t2} p[t][t2]·dy[t]
			for i := range w {
				w[i] = P[(t2+i)*T+t2]
			}
			sumRows(dvalues[t2*3*C:t2*3*C+hs], w, dout[(o+t2)*C+h*hs:], C)
			// dk[t2] = Σ_{t ≥ t2} dscore[t][t2]·q[t]
			for i := range w {
				w[i] = D[(t2+i)*T+t2]
			}
			sumRows(dkeys[t2*3*C:t2*3*C+hs], w, qkv[(o+t2)*3*C+h*hs:], 3*C)
		}
	})
}

// Backward accumulates dL/dParams into the model's Grads given dL/dlogp and
// dL/dentropy for every response token (same shapes as LogProbs;
// dEntropies may be nil). Call it once per Pass.
func (ps *Pass) Backward(dLogProbs, dEntropies [][]float32) error {
	if ps.done {
		return fmt.Errorf("%w: Backward called twice on one Pass", ErrInput)
	}
	if err := checkShape("dLogProbs", dLogProbs, ps.LogProbs, false); err != nil {
		return err
	}
	if err := checkShape("dEntropies", dEntropies, ps.LogProbs, true); err != nil {
		return err
	}
	ps.done = true
	m, pk := ps.m, ps.pk
	cfg := m.Config
	C, V, N, M := cfg.Width, cfg.Vocab, pk.n, pk.m

	// dlogits (M, V): for p = softmax(s), s = z/T, ∂logp_y/∂s = onehot(y) − p
	// and ∂H/∂s = −p·(log p + H); then ∂/∂z = (∂/∂s)/T.
	scratch := m.arena(M*V + N*C + M*C + N*4*C + N*C)
	defer m.recycle(scratch)
	cv := carver{scratch}
	dlogits := cv.take(M * V) // (M, V)
	clear(dlogits)
	for i := range dLogProbs {
		for j := range dLogProbs[i] {
			r := pk.predOff[i] + j
			gl := float64(dLogProbs[i][j])
			ge := 0.0
			if dEntropies != nil {
				ge = float64(dEntropies[i][j])
			}
			if gl == 0 && ge == 0 {
				continue
			}
			z, dz := ps.logits[r*V:r*V+V], dlogits[r*V:r*V+V]
			H := float64(ps.ent[r])
			for v := range z {
				logp := float64(z[v]) - ps.lse[r]
				p := math.Exp(logp)
				dz[v] = float32(-gl*p - ge*p*(logp+H))
			}
			dz[pk.targets[r]] += float32(gl)
		}
	}
	scaleLogits(dlogits, ps.temp)

	// Buffers reused across layers.
	dres := cv.take(N * C) // (N, C) dL/d residual stream
	clear(dres)
	dlnf := cv.take(M * C)     // (M, C)
	dbig := cv.take(N * 4 * C) // (N, 4C) dfch / dqkv
	dsmall := cv.take(N * C)   // (N, C) dln / datty
	matmulBackward(dlnf, m.g.wout, nil, dlogits, ps.lnf, m.p.wout, M, C, V, false)
	last := ps.encoded
	if cfg.Layers > 0 {
		last = ps.layers[cfg.Layers-1].res3
	}
	for r, row := range pk.rows {
		o := int(row) * C
		layernormBackwardRow(dres[o:o+C], m.g.lnfw, m.g.lnfb, dlnf[r*C:r*C+C], last[o:o+C], m.p.lnfw, ps.lnfMean[r], ps.lnfRstd[r])
	}
	for l := cfg.Layers - 1; l >= 0; l-- {
		a, w, g := &ps.layers[l], &m.p.layers[l], &m.g.layers[l]
		resIn := ps.encoded
		if l > 0 {
			resIn = ps.layers[l-1].res3
		}
		// res3 = res2 + fcproj(gelu(fc(ln2(res2))))
		dfch := dbig[:N*4*C]
		matmulBackward(dfch, g.fcprojw, g.fcprojb, dres, a.fchGelu, w.fcprojw, N, 4*C, C, false)
		geluBackward(dfch, a.fch, dfch)
		dln2 := dsmall[:N*C]
		matmulBackward(dln2, g.fcw, g.fcb, dfch, a.ln2, w.fcw, N, C, 4*C, false)
		layernormBackward(dres, g.ln2w, g.ln2b, dln2, a.res2, w.ln2w, a.ln2Mean, a.ln2Rstd, N, C)
		// res2 = resIn + attproj(attention(qkv(ln1(resIn))))
		datty := dsmall[:N*C]
		matmulBackward(datty, g.attprojw, g.attprojb, dres, a.atty, w.attprojw, N, C, C, false)
		dqkv := dbig[:N*3*C]
		clear(dqkv)
		attentionBackward(dqkv, datty, a.qkv, a.att, pk.offs, pk.attOff, cfg.Heads, C)
		dln1 := dsmall[:N*C]
		matmulBackward(dln1, g.qkvw, g.qkvb, dqkv, a.ln1, w.qkvw, N, C, 3*C, false)
		layernormBackward(dres, g.ln1w, g.ln1b, dln1, resIn, w.ln1w, a.ln1Mean, a.ln1Rstd, N, C)
	}
	for r, t := range pk.tokens {
		d := dres[r*C : r*C+C]
		addInPlace(m.g.wte[int(t)*C:int(t)*C+C], d)
		p := int(pk.pos[r])
		addInPlace(m.g.wpe[p*C:p*C+C], d)
	}
	m.recycle(ps.arena)
	ps.arena, ps.layers = nil, nil
	return nil
}

func checkShape(name string, got, want [][]float32, nilOK bool) error {
	if got == nil && nilOK {
		return nil
	}
	if len(got) != len(want) {
		return fmt.Errorf("%w: %s has %d sequences, the pass has %d", ErrInput, name, len(got), len(want))
	}
	for i := range got {
		if len(got[i]) != len(want[i]) {
			return fmt.Errorf("%w: %s[%d] has %d tokens, the pass has %d response tokens", ErrInput, name, i, len(got[i]), len(want[i]))
		}
	}
	return nil
}
