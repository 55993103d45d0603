package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/verifier"
)

func TestVerifyStream(t *testing.T) {
	in := strings.Join([]string{
		`{"id":1,"gold":"\\frac12","prediction":"so \\boxed{0.5}","expected":true,"category":"fraction"}`,
		`{"gold":"4","prediction":"\\boxed{5}","expected":true,"category":"integer"}`,
		`{"prediction":"\\boxed{7}","gold":7}`,
		`{"gold":"1","prediction":"x","correct":"stale"}`,
	}, "\n")
	c, _ := verifier.Lookup("math")
	var out bytes.Buffer
	sum, err := verifyStream(context.Background(), c, strings.NewReader(in), &out, false, 3)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d output lines, want 4:\n%s", len(lines), out.String())
	}
	// fields of the input are kept byte for byte and in order
	if !strings.HasPrefix(lines[0], `{"id":1,"gold":"\\frac12","prediction":"so \\boxed{0.5}","expected":true,"category":"fraction",`) {
		t.Errorf("line 1 does not echo the input: %s", lines[0])
	}
	want := []bool{true, false, true, false}
	for i, l := range lines {
		var rec struct {
			Correct *bool  `json:"correct"`
			Reason  string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %d not JSON: %v: %s", i+1, err, l)
		}
		if rec.Correct == nil || *rec.Correct != want[i] || rec.Reason == "" {
			t.Errorf("line %d: %s, want correct=%v with a reason", i+1, l, want[i])
		}
	}
	if sum.labelled != 2 || sum.agree != 1 {
		t.Errorf("summary %d/%d, want 1/2", sum.agree, sum.labelled)
	}
}

func TestVerifyStreamRejectsBadLines(t *testing.T) {
	c, _ := verifier.Lookup("math")
	for _, in := range []string{`{"gold":"1"}`, `not json`, `{"gold":[1],"prediction":"1"}`} {
		if _, err := verifyStream(context.Background(), c, strings.NewReader(in), &bytes.Buffer{}, false, 2); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
