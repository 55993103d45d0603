package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestGradingRoundTrip(t *testing.T) {
	tr := Trajectory{RunID: "r", ID: "3/q1/2", TaskID: "3/q1", Kind: "arith", Answer: "12",
		Text: "line one\r\nline two: \\boxed{12}\x00 ünïcode", Tokens: Int32s{1, 2}}
	g := tr.Grading()
	h, err := EncodeGrading(&g)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(h, "\r\n: ") {
		t.Fatalf("header value %q holds characters a header cannot", h)
	}
	got, err := DecodeGrading(h)
	if err != nil {
		t.Fatal(err)
	}
	if got != g {
		t.Fatalf("decoded %+v, want %+v", got, g)
	}
	if got.Sum() != g.Sum() {
		t.Fatal("the same fields hash differently")
	}
}

// Sum changes with each field that decides a grade, and the fields cannot
// trade bytes with each other.
func TestGradingSum(t *testing.T) {
	base := Grading{Kind: "arith", Answer: "12", Text: "\\boxed{12}"}
	for name, g := range map[string]Grading{
		"text":   {Kind: "arith", Answer: "12", Text: "\\boxed{13}"},
		"answer": {Kind: "arith", Answer: "13", Text: "\\boxed{12}"},
		"kind":   {Kind: "math", Answer: "12", Text: "\\boxed{12}"},
		"shift":  {Kind: "arith1", Answer: "2", Text: "\\boxed{12}"},
	} {
		if g.Sum() == base.Sum() {
			t.Errorf("%s changed, Sum did not", name)
		}
	}
}

func TestDecodeGradingErrors(t *testing.T) {
	noID, _ := EncodeGrading(&Grading{Text: "x"})
	for name, h := range map[string]string{
		"missing":    "",
		"not base64": "%%%",
		"garbage":    "k8O/",
		"no id":      noID,
	} {
		if _, err := DecodeGrading(h); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: error %v, want ErrDecode", name, err)
		}
	}
}

func TestDecodeVerdicts(t *testing.T) {
	one, _ := Encode(&Verdict{ID: "a", Seq: 3, Reward: 1})
	batch, _ := Encode(&Verdicts{RunID: "r", Verdicts: []Verdict{{ID: "a", Seq: 3}, {ID: "b", Seq: 4, Reward: 1}}})
	vs, err := DecodeVerdicts(one)
	if err != nil || len(vs) != 1 || vs[0].ID != "a" || vs[0].Seq != 3 || vs[0].Reward != 1 {
		t.Fatalf("single verdict: %+v, %v", vs, err)
	}
	vs, err = DecodeVerdicts(batch)
	if err != nil || len(vs) != 2 || vs[1].ID != "b" || vs[1].Seq != 4 || vs[1].V != VerdictSchema {
		t.Fatalf("batch: %+v, %v", vs, err)
	}
	noSeq, _ := Encode(&Verdicts{Verdicts: []Verdict{{ID: "a", Seq: 3}, {ID: "b"}}})
	oldInner, _ := Encode(&Verdicts{Verdicts: []Verdict{{ID: "a", Seq: 3}}})
	oldInner = []byte(strings.Replace(string(oldInner), "\xa1v\x01", "\xa1v\x07", 2)) // both versions: 7
	for name, b := range map[string][]byte{"a verdict naming no sequence": noSeq, "garbage": []byte("\x93x"), "newer schema": oldInner} {
		if _, err := DecodeVerdicts(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
