package task

import (
	"errors"
	"fmt"

	"github.com/exgrpo/exgrpo/policy"
)

// Alphabet is the character set of the built-in tokenizer: the characters of
// the built-in task first (digits, operators, the separator, the comma and
// \boxed{}), then the rest of printable ASCII and newline, so that imported
// English/LaTeX math problems encode too. Changing it changes every token id
// and invalidates checkpoints (BaseModel's cache key includes it).
const Alphabet = "0123456789+-*/()=,\\boxed{}" +
	" !\"#$%&'.:;<>?@[]^_`|~" +
	"acfghijklmnpqrstuvwyz" +
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ" +
	"\n"

// PromptSeparator ends every encoded prompt: the policy reads
// BOS question "=" and writes its worked solution after it.
const PromptSeparator = "="

// ErrEncode reports a problem the tokenizer cannot encode (a character
// outside the alphabet) or one that does not fit the model's context.
var ErrEncode = errors.New("task: cannot encode")

// BuiltinTokenizer is the character-level tokenizer over Alphabet (PAD, BOS,
// EOS, then one id per character).
func BuiltinTokenizer() *policy.Tokenizer { return policy.NewCharTokenizer(Alphabet) }

// EncodePrompt is the one prompt format of the system (actors, learner,
// warm-up and evaluation all call it): BOS, the question, PromptSeparator.
func EncodePrompt(tok *policy.Tokenizer, p Problem) ([]int32, error) {
	ids, err := tok.Encode(p.Prompt + PromptSeparator)
	if err != nil {
		return nil, fmt.Errorf("%w: prompt of %s: %w", ErrEncode, p.ID, err)
	}
	return append([]int32{tok.BOS()}, ids...), nil
}

// EncodeResponse is the token form of a response text as the policy should
// write it: the characters, then EOS. The warm-up teaches Solution this way.
func EncodeResponse(tok *policy.Tokenizer, text string) ([]int32, error) {
	ids, err := tok.Encode(text)
	if err != nil {
		return nil, fmt.Errorf("%w: response: %w", ErrEncode, err)
	}
	return append(ids, tok.EOS()), nil
}

// ResponseText is the text the verifier grades for sampled response tokens:
// everything before the first EOS (PAD and BOS dropped).
func ResponseText(tok *policy.Tokenizer, ids []int32) string {
	for i, id := range ids {
		if id == tok.EOS() {
			ids = ids[:i]
			break
		}
	}
	return tok.Decode(ids)
}

// ModelConfig is the built-in policy's shape for the built-in task: the
// tokenizer's vocabulary, a context that holds the longest built-in prompt
// and response (BOS + 24 + separator + 48 = 74), and 2 layers of width 64
// with 4 heads and a tied output (about 111k parameters). Measured on the
// 2-core machine (docs/benchmarks/task.md), 3 layers reach a slightly lower
// loss per step but cost 1.5x per step in the warm-up and in every RL
// rollout, and the warm-up can reach any base accuracy with either; speed
// of RL steps decides.
func ModelConfig() policy.Config {
	return policy.Config{
		Vocab:   BuiltinTokenizer().Size(),
		Context: 1 + MaxPromptChars + len(PromptSeparator) + MaxNew,
		Layers:  2,
		Width:   64,
		Heads:   4,
		Tied:    true,
	}
}
