package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Tokenizer is a character-level tokenizer: ids 0, 1, 2 are PAD, BOS and
// EOS, then one id per character of the alphabet in order. It is immutable
// and safe for concurrent use.
type Tokenizer struct {
	alphabet string
	runes    []rune
	ids      map[rune]int32
}

const (
	padID      = 0
	bosID      = 1
	eosID      = 2
	numSpecial = 3
)

// NewCharTokenizer builds a tokenizer over the distinct characters of
// alphabet, in first-occurrence order (duplicates are ignored, so
// Alphabet() may be shorter than the argument).
func NewCharTokenizer(alphabet string) *Tokenizer {
	t := &Tokenizer{ids: make(map[rune]int32)}
	var b strings.Builder
	for _, r := range alphabet {
		if _, dup := t.ids[r]; dup {
			continue
		}
		t.ids[r] = int32(numSpecial + len(t.runes))
		t.runes = append(t.runes, r)
		b.WriteRune(r)
	}
	t.alphabet = b.String()
	return t
}

// Alphabet is the characters of ids 3, 4, … in order (stored in checkpoints).
func (t *Tokenizer) Alphabet() string { return t.alphabet }

// Encode maps each character of s to its id; no BOS or EOS is added. It
// fails with ErrToken on a character outside the alphabet.
func (t *Tokenizer) Encode(s string) ([]int32, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("%w: text is not valid UTF-8", ErrToken)
	}
	ids := make([]int32, 0, len(s))
	for i, r := range s {
		id, ok := t.ids[r]
		if !ok {
			return nil, fmt.Errorf("%w: %q at byte %d", ErrToken, r, i)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Decode maps ids back to text. PAD, BOS and EOS are dropped; ids outside
// the vocabulary become U+FFFD.
func (t *Tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		switch {
		case id == padID || id == bosID || id == eosID:
		case id >= numSpecial && int(id) < numSpecial+len(t.runes):
			b.WriteRune(t.runes[id-numSpecial])
		default:
			b.WriteRune(utf8.RuneError)
		}
	}
	return b.String()
}

// BOS is the id that starts every prompt.
func (t *Tokenizer) BOS() int32 { return bosID }

// EOS is the id that ends a response.
func (t *Tokenizer) EOS() int32 { return eosID }

// PAD is the padding id (never produced by Encode).
func (t *Tokenizer) PAD() int32 { return padID }

// Size is the vocabulary size V: the three specials plus the alphabet.
func (t *Tokenizer) Size() int { return numSpecial + len(t.runes) }
