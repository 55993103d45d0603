package task

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/verifier"
)

func TestTokenizerCoversAlphabet(t *testing.T) {
	tok := BuiltinTokenizer()
	if tok.Alphabet() != Alphabet {
		t.Fatalf("Alphabet has duplicate characters: tokenizer keeps %q of %q", tok.Alphabet(), Alphabet)
	}
	for c := rune(0x20); c < 0x7f; c++ { // printable ASCII, for imported problems
		if !strings.ContainsRune(Alphabet, c) {
			t.Errorf("printable %q missing from Alphabet", c)
		}
	}
	// Every character any built-in set uses encodes and decodes back.
	for _, set := range BuiltinSets() {
		ds, err := Generate(set.Name, set.Spec, 200, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ds.Problems {
			for _, s := range []string{p.Prompt, p.Solution, PromptSeparator} {
				ids, err := tok.Encode(s)
				if err != nil {
					t.Fatalf("%s: %v", set.Name, err)
				}
				if got := tok.Decode(ids); got != s {
					t.Fatalf("decode(encode(%q)) = %q", s, got)
				}
			}
		}
	}
	if got := ModelConfig().Vocab; got != tok.Size() {
		t.Fatalf("ModelConfig().Vocab = %d, tokenizer size %d", got, tok.Size())
	}
}

func TestEncodePromptAndResponse(t *testing.T) {
	tok := BuiltinTokenizer()
	p := Problem{ID: "x", Prompt: "7-2*3+4", Solution: `2*3=6,7-6=1,1+4=5,\boxed{5}`}
	prompt, err := EncodePrompt(tok, p)
	if err != nil {
		t.Fatal(err)
	}
	if prompt[0] != tok.BOS() || tok.Decode(prompt) != "7-2*3+4=" {
		t.Fatalf("prompt %v decodes to %q, want BOS then %q", prompt, tok.Decode(prompt), "7-2*3+4=")
	}
	seq, err := TrainingSeq(tok, p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seq.Tokens[:seq.PromptLen], prompt) {
		t.Fatal("training sequence does not start with the encoded prompt")
	}
	resp := seq.Tokens[seq.PromptLen:]
	if resp[len(resp)-1] != tok.EOS() || ResponseText(tok, resp) != p.Solution {
		t.Fatalf("response %v: text %q, want %q then EOS", resp, ResponseText(tok, resp), p.Solution)
	}
	// Text after the first EOS is not part of the response.
	extra, _ := tok.Encode("9")
	if got := ResponseText(tok, append(slices.Clone(resp), extra...)); got != p.Solution {
		t.Fatalf("ResponseText kept text after EOS: %q", got)
	}
	if _, err := EncodePrompt(tok, Problem{Prompt: "7×2"}); !errors.Is(err, ErrEncode) {
		t.Fatalf("non-alphabet prompt: err = %v, want ErrEncode", err)
	}
	if _, err := TrainingSeq(tok, Problem{Prompt: "1+1"}); !errors.Is(err, ErrEncode) {
		t.Fatalf("no solution: err = %v, want ErrEncode", err)
	}
}

func TestModelConfigHoldsLongestProblem(t *testing.T) {
	cfg := ModelConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, set := range BuiltinSets() {
		ds, err := Builtin(set.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ds.Problems {
			seq, err := TrainingSeq(BuiltinTokenizer(), p)
			if err != nil {
				t.Fatal(err)
			}
			if len(seq.Tokens) > cfg.Context || len(seq.Tokens)-seq.PromptLen > MaxNew {
				t.Fatalf("%s %q: %d tokens (response %d) exceed context %d / MaxNew %d", set.Name, p.Prompt, len(seq.Tokens), len(seq.Tokens)-seq.PromptLen, cfg.Context, MaxNew)
			}
			if set.Name == "train" && len(seq.Tokens)-seq.PromptLen > TrainMaxNew {
				t.Fatalf("training solution %q needs %d tokens > TrainMaxNew %d", p.Solution, len(seq.Tokens)-seq.PromptLen, TrainMaxNew)
			}
		}
	}
}

// TestVerifierGradesSolutions: every built-in worked solution is graded
// correct by the arith verifier (the reward of RL), and the same solution
// with its boxed answer changed is graded wrong.
func TestVerifierGradesSolutions(t *testing.T) {
	check, err := verifier.Lookup(KindArith)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range BuiltinSets() {
		t.Run(set.Name, func(t *testing.T) {
			ds, err := Builtin(set.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ds.Problems {
				if v := check.Check(p.Answer, p.Solution); !v.Correct {
					t.Fatalf("%s %q: solution %q graded %+v", p.ID, p.Prompt, p.Solution, v)
				}
				wrong := strings.TrimSuffix(p.Solution, Boxed(p.Answer)) + Boxed(p.Answer+"1")
				if v := check.Check(p.Answer, wrong); v.Correct {
					t.Fatalf("%s: corrupted solution %q graded correct", p.ID, wrong)
				}
				if v := check.Check(p.Answer, strings.TrimSuffix(p.Solution, Boxed(p.Answer))); v.Correct {
					t.Fatalf("%s: solution without box graded correct", p.ID)
				}
			}
		})
	}
}
