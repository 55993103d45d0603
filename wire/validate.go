package wire

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalid marks a message that decodes but whose content cannot be true
// (arrays of different lengths, a log-probability above zero, a token the
// model does not have). Such a message goes to DEAD with the error as reason.
var ErrInvalid = errors.New("wire: invalid content")

// Limits are what a consumer knows of the model a trajectory claims to come
// from. Zero fields are not checked.
type Limits struct {
	Vocab   int // token ids must be in [0, Vocab)
	Context int // prompt + response tokens must fit
	// MaxTokens caps prompt + response tokens when Context is unknown (a
	// size fence for consumers that do not know the model).
	MaxTokens int
}

// entropySlack is how far below zero a recorded entropy may be: -sum p log p
// is >= 0, but a float32 sum over a large vocabulary can round to a tiny
// negative number.
const entropySlack = 1e-3

// Check validates a trajectory against the model limits. Which fields are
// trusted: none of them; Check makes sure that what the learner computes
// with (token ids, behaviour log-probs, entropies, their lengths) is
// possible. That the text is the decoding of the tokens is checked by the
// learner, which knows the tokenizer.
func (t *Trajectory) Check(lim Limits) error {
	n := len(t.Tokens)
	switch {
	case t.ID == "" || t.TaskID == "" || t.QuestionID == "":
		return fmt.Errorf("%w: trajectory without id, task or question", ErrInvalid)
	case t.Index < 0:
		return fmt.Errorf("%w: trajectory %s: index %d", ErrInvalid, t.ID, t.Index)
	case n == 0:
		return fmt.Errorf("%w: trajectory %s: no response tokens", ErrInvalid, t.ID)
	case len(t.PromptTokens) == 0:
		return fmt.Errorf("%w: trajectory %s: no prompt tokens", ErrInvalid, t.ID)
	case len(t.LogProbs) != n:
		return fmt.Errorf("%w: trajectory %s: %d log-probs for %d response tokens", ErrInvalid, t.ID, len(t.LogProbs), n)
	case len(t.Entropies) != n:
		return fmt.Errorf("%w: trajectory %s: %d entropies for %d response tokens", ErrInvalid, t.ID, len(t.Entropies), n)
	case t.Finish != "eos" && t.Finish != "length":
		return fmt.Errorf("%w: trajectory %s: finish reason %q (want eos or length)", ErrInvalid, t.ID, t.Finish)
	}
	total := len(t.PromptTokens) + n
	if lim.Context > 0 && total > lim.Context {
		return fmt.Errorf("%w: trajectory %s: %d prompt + %d response tokens exceed the model's context of %d",
			ErrInvalid, t.ID, len(t.PromptTokens), n, lim.Context)
	}
	if lim.MaxTokens > 0 && total > lim.MaxTokens {
		return fmt.Errorf("%w: trajectory %s: %d tokens exceed the cap of %d", ErrInvalid, t.ID, total, lim.MaxTokens)
	}
	for _, toks := range [][]int32{t.PromptTokens, t.Tokens} {
		for i, id := range toks {
			if id < 0 || (lim.Vocab > 0 && int(id) >= lim.Vocab) {
				return fmt.Errorf("%w: trajectory %s: token %d is id %d, outside the vocabulary [0, %d)", ErrInvalid, t.ID, i, id, lim.Vocab)
			}
		}
	}
	for i, lp := range t.LogProbs {
		if math.IsNaN(float64(lp)) || math.IsInf(float64(lp), 0) || lp > 0 {
			return fmt.Errorf("%w: trajectory %s: log-prob %v at token %d (must be finite and <= 0)", ErrInvalid, t.ID, lp, i)
		}
	}
	for i, h := range t.Entropies {
		if math.IsNaN(float64(h)) || math.IsInf(float64(h), 0) || h < -entropySlack {
			return fmt.Errorf("%w: trajectory %s: entropy %v at token %d (must be finite and >= 0)", ErrInvalid, t.ID, h, i)
		}
	}
	return nil
}
