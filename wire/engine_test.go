package wire

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestAdditiveFieldsAreCompatible: Task.PromptTokens and
// Trajectory.EntropyKind were added without a schema bump. A message
// without them (as an older writer made it) decodes with their zero value,
// a built-in trajectory (exact entropies) encodes byte for byte as before,
// and an older reader (the struct without the field) still decodes a new
// message.
func TestAdditiveFieldsAreCompatible(t *testing.T) {
	type oldTask struct {
		V      uint16 `msgpack:"v"`
		TaskID string `msgpack:"id"`
		Prompt string `msgpack:"prompt"`
	}
	old, err := msgpack.Marshal(&oldTask{V: TaskSchema, TaskID: "1/q", Prompt: "2+3"})
	if err != nil {
		t.Fatal(err)
	}
	var tk Task
	if err := Decode(old, &tk); err != nil {
		t.Fatal(err)
	}
	if tk.TaskID != "1/q" || tk.PromptTokens != nil {
		t.Fatalf("old task decoded as %+v", tk)
	}
	nu, err := Encode(&Task{TaskID: "1/q", PromptTokens: Int32s{1, 7, 9}})
	if err != nil {
		t.Fatal(err)
	}
	var back oldTask
	if err := msgpack.Unmarshal(nu, &back); err != nil || back.TaskID != "1/q" {
		t.Fatalf("older reader: %+v, %v", back, err)
	}
	if err := Decode(nu, &tk); err != nil || !reflect.DeepEqual(tk.PromptTokens, Int32s{1, 7, 9}) {
		t.Fatalf("prompt tokens %v, %v", tk.PromptTokens, err)
	}

	exact := benchTrajectory()
	a, err := Encode(exact)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(a, []byte("entk")) {
		t.Fatal("an exact-entropy trajectory carries the entropy kind field")
	}
	est := benchTrajectory()
	est.EntropyKind = EntropyTopKUpper
	b, err := Encode(est)
	if err != nil {
		t.Fatal(err)
	}
	var tr Trajectory
	if err := Decode(b, &tr); err != nil || tr.EntropyKind != EntropyTopKUpper {
		t.Fatalf("entropy kind %q, %v", tr.EntropyKind, err)
	}
	var raw RawTrajectory
	if err := DecodeRawTrajectory(b, &raw); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw.Bytes(), b) {
		t.Fatal("raw trajectory bytes differ from the encoding")
	}
}

func TestProbeRoundTrip(t *testing.T) {
	in := &Probe{RunID: "r", Version: 3, Temp: 1, Seqs: []ProbeSeq{{Tokens: Int32s{1, 4, 5}, PromptLen: 2, LogProbs: Float32s{-0.25}}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Probe
	if err := Decode(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip: %+v -> %+v", in, out)
	}
}
