package engine

import (
	"fmt"
	"math"
	"slices"
)

// logProbSlack is how far above 0 a log-prob may come from float rounding
// in the engine's log-softmax before it counts as positive.
const logProbSlack = 1e-5

// clampedLogProb is vLLM's floor for reported log-probs (-9999): a sampled
// token reported at the floor had a log-prob the engine could not represent.
const clampedLogProb = -9999

// checkLogProb reports a log-prob that is not finite, positive, or (for a
// sampled token) at vLLM's clamp.
func checkLogProb(lp float64, sampled bool) error {
	switch {
	case math.IsNaN(lp) || math.IsInf(lp, 0):
		return fmt.Errorf("log-prob %v is not finite", lp)
	case lp > logProbSlack:
		return fmt.Errorf("log-prob %v > 0", lp)
	case sampled && lp <= clampedLogProb:
		return fmt.Errorf("log-prob %v at the engine's clamp", lp)
	}
	return nil
}

// rawCompletion is one parsed answer before validation.
type rawCompletion struct {
	tokens   []int32
	logProbs []float64
	top      [][]TokenLogProb
	text     string
	finish   string // the engine's reason, normalised by finishOf
	version  string // weight version, when the engine says
}

// validate turns a parsed answer into a Completion or says why it is bad.
func validate(r Request, vocab int, c rawCompletion) (Completion, error) {
	n := len(c.tokens)
	switch {
	case n == 0:
		return Completion{}, fmt.Errorf("no tokens")
	case n > r.MaxTokens:
		return Completion{}, fmt.Errorf("%d tokens for max tokens %d", n, r.MaxTokens)
	case len(c.logProbs) != n:
		return Completion{}, fmt.Errorf("%d log-probs for %d tokens", len(c.logProbs), n)
	case r.TopLogProbs > 0 && len(c.top) != n:
		return Completion{}, fmt.Errorf("%d top-log-prob lists for %d tokens", len(c.top), n)
	}
	out := Completion{Tokens: c.tokens, LogProbs: make([]float32, n), Text: c.text, WeightVersion: c.version}
	for i, id := range c.tokens {
		if id < 0 || (vocab > 0 && int(id) >= vocab) {
			return Completion{}, fmt.Errorf("token %d: id %d outside the vocabulary [0, %d)", i, id, vocab)
		}
		if err := checkLogProb(c.logProbs[i], true); err != nil {
			return Completion{}, fmt.Errorf("token %d (id %d): %v", i, id, err)
		}
		out.LogProbs[i] = float32(min(c.logProbs[i], 0))
	}
	if r.TopLogProbs > 0 {
		out.Top = make([][]TokenLogProb, n)
		for i, list := range c.top {
			if len(list) == 0 || len(list) > r.TopLogProbs+1 {
				return Completion{}, fmt.Errorf("token %d: %d top log-probs for k=%d", i, len(list), r.TopLogProbs)
			}
			for _, e := range list {
				if e.ID < 0 || (vocab > 0 && int(e.ID) >= vocab) {
					return Completion{}, fmt.Errorf("token %d: top id %d outside the vocabulary", i, e.ID)
				}
				if err := checkLogProb(float64(e.LogProb), false); err != nil {
					return Completion{}, fmt.Errorf("token %d: top id %d: %v", i, e.ID, err)
				}
			}
			out.Top[i] = list
		}
	}
	last := c.tokens[n-1]
	isStop := slices.Contains(r.StopTokenIDs, last)
	for i, id := range c.tokens[:n-1] {
		if !r.IgnoreEOS && slices.Contains(r.StopTokenIDs, id) {
			return Completion{}, fmt.Errorf("stop token %d at position %d of %d (generation went on past it)", id, i, n)
		}
	}
	if r.IgnoreEOS && c.finish == FinishLength && n == r.MaxTokens {
		out.Finish = FinishLength
		return out, nil
	}
	switch c.finish {
	case FinishEOS:
		if !isStop {
			return Completion{}, fmt.Errorf("finish reason stop but the last token %d is not a stop token", last)
		}
	case FinishLength:
		if n != r.MaxTokens && !isStop {
			return Completion{}, fmt.Errorf("finish reason length after %d of %d tokens", n, r.MaxTokens)
		}
		if isStop {
			c.finish = FinishEOS // the stop token was also the last allowed one
		}
	default:
		return Completion{}, fmt.Errorf("finish reason %q", c.finish)
	}
	out.Finish = c.finish
	return out, nil
}

// finishOf maps an engine's finish reason to ours; unknown reasons pass
// through and fail validation.
func finishOf(s string) string {
	switch s {
	case "stop", "eos":
		return FinishEOS
	case "length":
		return FinishLength
	}
	if s == "" {
		return "(none)"
	}
	return s
}

// validateAll validates every completion of an answer of n choices.
func validateAll(r Request, vocab int, raws []rawCompletion) ([]Completion, error) {
	if len(raws) != r.N {
		return nil, fmt.Errorf("%w: %d completions for n=%d", ErrBadAnswer, len(raws), r.N)
	}
	out := make([]Completion, len(raws))
	for i, c := range raws {
		v, err := validate(r, vocab, c)
		if err != nil {
			return nil, fmt.Errorf("%w: completion %d: %v", ErrBadAnswer, i, err)
		}
		out[i] = v
	}
	return out, nil
}

// checkScores validates prompt log-probs of tokens[start:].
func checkScores(tokens []int32, start int, ids []int32, lps []float64) ([]float32, error) {
	want := len(tokens) - start
	if len(lps) != want || (ids != nil && len(ids) != want) {
		return nil, fmt.Errorf("%w: %d prompt log-probs for %d tokens", ErrBadAnswer, len(lps), want)
	}
	out := make([]float32, want)
	for j, lp := range lps {
		if ids != nil && ids[j] != tokens[start+j] {
			return nil, fmt.Errorf("%w: prompt log-prob %d is for token %d, not %d", ErrBadAnswer, j, ids[j], tokens[start+j])
		}
		if err := checkLogProb(lp, false); err != nil {
			return nil, fmt.Errorf("%w: prompt token %d: %v", ErrBadAnswer, start+j, err)
		}
		out[j] = float32(min(lp, 0))
	}
	return out, nil
}

// sortTop orders a top list by log-prob, highest first, then id (JSON
// objects carry no order).
func sortTop(list []TokenLogProb) {
	slices.SortFunc(list, func(a, b TokenLogProb) int {
		switch {
		case a.LogProb > b.LogProb:
			return -1
		case a.LogProb < b.LogProb:
			return 1
		}
		return int(a.ID - b.ID)
	})
}
