package policy

import "fmt"

// This file scores several responses to one prompt. ExGRPO's trajectory
// selection (ALGORITHM.md E7) scores every stored candidate of a question,
// and all of them share the question's prompt: Score would run the prompt
// once per candidate, ScoreShared runs it once in all.

// ScoreShared is ScoreSharedAt at temperature 1.
func (m *Model) ScoreShared(prompt []int32, responses [][]int32) (logps, ents [][]float32, err error) {
	return m.ScoreSharedAt(prompt, responses, 1)
}

// ScoreSharedAt returns what ScoreAt returns for the sequences
// prompt+responses[i] (PromptLen = len(prompt)), for every i: per response
// token, the log-prob of the token and the entropy of the next-token
// distribution softmax(z/temp). The results agree with Score's to float32
// rounding (the same kernels run on the same rows; tested within 1e-5).
//
// Shapes: prompt (P) with P ≥ 1 (it starts with BOS); responses[i] (k_i) with
// k_i ≥ 1 and P + k_i ≤ Context; logps[i] and ents[i] (k_i). The inputs are
// only read; the results are new slices owned by the caller (each capped at
// its length, so appending to one never touches another).
//
// How: the first P−1 prompt tokens go through the model once, into one slot
// of a KV cache, and their keys and values are copied to one slot per
// candidate. Then every candidate runs only its own rows, the last prompt
// token followed by its response without the last token (k_i rows, all of
// which predict a response token), from position P−1, all candidates in
// one batch (chunks of at most scoreChunkTokens rows) so that the matrix
// products see many rows. The last prompt token is computed once per
// candidate: that costs one row each and keeps every candidate's row count
// at k_i ≥ 1.
func (m *Model) ScoreSharedAt(prompt []int32, responses [][]int32, temp float32) (logps, ents [][]float32, err error) {
	if err := checkTemp(temp); err != nil {
		return nil, nil, err
	}
	cfg := m.Config
	C, V := cfg.Width, cfg.Vocab
	P := len(prompt)
	if P == 0 {
		return nil, nil, fmt.Errorf("%w: shared prompt is empty (start it with BOS)", ErrInput)
	}
	for _, t := range prompt {
		if t < 0 || int(t) >= V {
			return nil, nil, fmt.Errorf("%w: shared prompt: token %d outside [0, %d)", ErrInput, t, V)
		}
	}
	kmax := 0
	for i, r := range responses {
		switch {
		case len(r) == 0:
			return nil, nil, fmt.Errorf("%w: response %d is empty (nothing to score)", ErrInput, i)
		case P+len(r) > cfg.Context:
			return nil, nil, fmt.Errorf("%w: response %d: prompt %d plus response %d tokens exceed Context %d", ErrInput, i, P, len(r), cfg.Context)
		}
		for _, t := range r {
			if t < 0 || int(t) >= V {
				return nil, nil, fmt.Errorf("%w: response %d: token %d outside [0, %d)", ErrInput, i, t, V)
			}
		}
		kmax = max(kmax, len(r))
	}
	logps, ents = make([][]float32, len(responses)), make([][]float32, len(responses))
	if len(responses) == 0 {
		return logps, ents, nil
	}

	// Chunks of candidates: ends[c] is one past the last candidate of chunk
	// c; each holds at most scoreChunkTokens rows, or a single candidate.
	var ends []int
	slots, rowsMax := 0, 0 // most candidates and most rows in one chunk
	for start := 0; start < len(responses); {
		end, n := start, 0
		for end < len(responses) && (end == start || n+len(responses[end]) <= scoreChunkTokens) {
			n += len(responses[end])
			end++
		}
		ends = append(ends, end)
		slots, rowsMax = max(slots, end-start), max(rowsMax, n)
		start = end
	}

	// The cache keeps every layer (the prompt's keys and values are read by
	// every chunk); a candidate writes positions P−1… of its slot only, so
	// the prompt's positions 0…P−2, copied once, serve every chunk.
	kv := m.newKV(slots, P-1+kmax, false) // (L, slots, 2, tcap, C)
	pw := m.packWeights()
	// One recycled arena for the activations and the logits: E7 calls this
	// once per replayed question, and fresh buffers cost as much to clear
	// as a tenth of the work.
	work := m.arena(max(m.inferBufsLen(P-1, 0), m.inferBufsLen(rowsMax, rowsMax)) + rowsMax*V)
	defer m.recycle(work)
	if P > 1 {
		m.infer(&kv, &pw, m.carveInferBufs(work, P-1, 0), []int{0}, []int{P - 1}, []int{0}, prompt[:P-1], nil, nil)
		n := (P - 1) * C
		for l := range cfg.Layers {
			layer := kv.buf[l*kv.layerStride:]
			keys, values := layer[:n], layer[kv.tcap*C:kv.tcap*C+n]
			for s := 1; s < slots; s++ {
				dst := layer[s*kv.slotStride:]
				copy(dst[:n], keys)
				copy(dst[kv.tcap*C:kv.tcap*C+n], values)
			}
		}
	}

	bufs := m.carveInferBufs(work, rowsMax, rowsMax)
	logits := work[len(work)-rowsMax*V:] // (M, V) of one chunk
	start := 0
	for _, end := range ends {
		chunk := responses[start:end]
		B := len(chunk)
		slotIDs, counts, past := make([]int, B), make([]int, B), make([]int, B)
		tokens := make([]int32, 0, rowsMax)  // (N) per candidate: the last prompt token, then its response but the last token
		targets := make([]int32, 0, rowsMax) // (M = N) per candidate: its response
		for i, r := range chunk {
			slotIDs[i], counts[i], past[i] = i, len(r), P-1
			tokens = append(append(tokens, prompt[P-1]), r[:len(r)-1]...)
			targets = append(targets, r...)
		}
		rows := make([]int32, len(tokens)) // (M) every row predicts
		for r := range rows {
			rows[r] = int32(r)
		}
		m.infer(&kv, &pw, bufs, slotIDs, counts, past, tokens, rows, logits)
		scaleLogits(logits[:len(rows)*V], temp)
		lp, en := make([]float32, len(rows)), make([]float32, len(rows)) // (M)
		parallelRange(len(rows), 64, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				lp[r], en[r], _ = softmaxStats(logits[r*V:r*V+V], int(targets[r]))
			}
		})
		row := 0
		for i, r := range chunk {
			k := row + len(r)
			logps[start+i], ents[start+i] = lp[row:k:k], en[row:k:k]
			row = k
		}
		start = end
	}
	return logps, ents, nil
}
