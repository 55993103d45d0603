package policy

import (
	"bytes"
	"testing"
)

// FuzzReadCheckpoint: arbitrary bytes must give a checkpoint or an error,
// never a panic; whatever loads must write back and load again identically.
func FuzzReadCheckpoint(f *testing.F) {
	var good bytes.Buffer
	if err := WriteCheckpoint(&good, checkpointFixture(f, true)); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:100])
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ReadCheckpoint(bytes.NewReader(data))
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := WriteCheckpoint(&again, c); err != nil {
			t.Fatalf("loaded checkpoint does not write: %v", err)
		}
		if _, err := ReadCheckpoint(&again); err != nil {
			t.Fatalf("rewritten checkpoint does not load: %v", err)
		}
	})
}

// FuzzTokenizer: Decode(Encode(s)) == s for text over the alphabet, and
// Encode never panics.
func FuzzTokenizer(f *testing.F) {
	tok := NewCharTokenizer("0123456789+-*/=() \\{}abxé")
	f.Add("12+3=15")
	f.Add("\\boxed{é}")
	f.Add("\xff")
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := tok.Encode(s)
		if err != nil {
			return
		}
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
	})
}
