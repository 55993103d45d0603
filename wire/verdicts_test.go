package wire

import (
	"strings"
	"testing"
)

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
