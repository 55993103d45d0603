package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The shadow types must list the same msgpack fields, in the same order and
// (but for the blobs, whose lengths only are read) of the same Go types as
// the message they stand for; a field added to Trajectory fails this until
// the shadow follows.
func TestShadowsMirrorMessages(t *testing.T) {
	cases := []struct {
		msg, shadow any
		replaced    map[string]reflect.Type
	}{
		{Trajectory{}, trajectoryShadow{}, map[string]reflect.Type{"pt": reflect.TypeFor[blobLen](),
			"tok": reflect.TypeFor[blobLen](), "lp": reflect.TypeFor[blobLen](), "ent": reflect.TypeFor[blobLen]()}},
	}
	for _, c := range cases {
		m, s := reflect.TypeOf(c.msg), reflect.TypeOf(c.shadow)
		if m.NumField() != s.NumField() {
			t.Fatalf("%v has %d fields, its shadow %v %d", m, m.NumField(), s, s.NumField())
		}
		for i := range m.NumField() {
			mf, sf := m.Field(i), s.Field(i)
			tag := mf.Tag.Get("msgpack")
			if sf.Tag.Get("msgpack") != tag {
				t.Errorf("%v field %d: tag %q, shadow %q", m, i, tag, sf.Tag.Get("msgpack"))
			}
			want := mf.Type
			if r, ok := c.replaced[tag]; ok {
				want = r
			}
			if sf.Type != want {
				t.Errorf("%v field %q: shadow type %v, want %v", m, tag, sf.Type, want)
			}
		}
	}
}

func spliceTrajectories() map[string]*Trajectory {
	return map[string]*Trajectory{
		"1,024 tokens": benchTrajectory(),
		"zero":         {},
		"nil and empty blobs": {ID: "1/q/0", PromptTokens: Int32s{}, Tokens: nil, LogProbs: Float32s{},
			Entropies: nil},
		"every field": {RunID: "r", ID: "3/q7/1", TaskID: "3/q7", Step: 3, QuestionID: "q7", Index: 1,
			PolicyVersion: -2, ActorID: "a-1", PromptTokens: Int32s{1, 2}, Tokens: Int32s{5, -1, 70000},
			LogProbs: Float32s{-0.5, -1.25, 0}, Entropies: Float32s{1, 2, 3}, Text: "x = \\boxed{42} ✓",
			Finish: "eos", Answer: "42", Kind: "arith", SampleMicros: 1 << 40, CreatedUnixMs: 1700000000000},
	}
}

// For a trajectory that Encode wrote, the head holds its fields and Bytes
// its whole encoding.
func TestDecodeRawTrajectoryHead(t *testing.T) {
	for name, tr := range spliceTrajectories() {
		raw, err := Encode(tr)
		if err != nil {
			t.Fatal(err)
		}
		var rt RawTrajectory
		if err := DecodeRawTrajectory(raw, &rt); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if hd := rt.Head; hd.ID != tr.ID || hd.TaskID != tr.TaskID || hd.RunID != tr.RunID ||
			hd.QuestionID != tr.QuestionID || hd.Text != tr.Text || hd.Answer != tr.Answer ||
			hd.Kind != tr.Kind || hd.Tokens != len(tr.Tokens) {
			t.Fatalf("%s: head %+v does not match the trajectory", name, hd)
		}
		if !bytes.Equal(rt.Bytes(), raw) {
			t.Fatalf("%s: kept % x, want % x", name, head(rt.Bytes()), head(raw))
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 64)] }

// Trajectory bytes that Encode did not write (keys reordered, an unknown
// key, the struct as an array, bytes after the trajectory) give the head
// fields Decode reads from them.
func TestDecodeRawTrajectoryNonCanonical(t *testing.T) {
	tr := spliceTrajectories()["every field"]
	tr.V = TrajectorySchema
	reordered := map[string]any{"kind": tr.Kind, "gold": tr.Answer, "text": tr.Text, "id": tr.ID, "v": 1,
		"extra": []any{1, "x"}, "tok": []byte{1, 0, 0, 0, 2, 0, 0, 0}, "lp": nil, "step": int8(-9)}
	mapBytes, err := msgpack.Marshal(reordered)
	if err != nil {
		t.Fatal(err)
	}
	var arr bytes.Buffer
	enc := msgpack.NewEncoder(&arr)
	enc.UseArrayEncodedStructs(true)
	if err := enc.Encode(tr); err != nil {
		t.Fatal(err)
	}
	canonical, _ := Encode(tr)
	cases := map[string][]byte{
		"reordered map with an unknown key": mapBytes,
		"array-encoded struct":              arr.Bytes(),
		"trailing bytes":                    append(bytes.Clone(canonical), 0xc1, 0xff, 0x00),
	}
	for name, raw := range cases {
		var want Trajectory
		if err := Decode(raw, &want); err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		var rt RawTrajectory
		if err := DecodeRawTrajectory(raw, &rt); err != nil {
			t.Fatalf("%s: DecodeRawTrajectory: %v", name, err)
		}
		if name == "trailing bytes" && len(rt.Bytes()) != len(canonical) {
			t.Fatalf("kept %d bytes, want the trajectory's %d", len(rt.Bytes()), len(canonical))
		}
		if hd := rt.Head; hd.ID != want.ID || hd.Text != want.Text || hd.Answer != want.Answer || hd.Kind != want.Kind ||
			hd.Tokens != len(want.Tokens) {
			t.Fatalf("%s: head %+v, trajectory %+v", name, hd, want)
		}
	}
}

// Bad trajectory bytes are refused by DecodeRawTrajectory with the error
// class Decode gives them, so the verifier dead-letters them with a reason.
func TestDecodeRawTrajectoryRejects(t *testing.T) {
	good, _ := Encode(benchTrajectory())
	future, _ := msgpack.Marshal(map[string]any{"v": 2, "id": "x"})
	unversioned, _ := msgpack.Marshal(map[string]any{"id": "x", "text": "t"})
	wrongType, _ := msgpack.Marshal(map[string]any{"v": 1, "id": "x", "step": "three"})
	ragged, _ := msgpack.Marshal(map[string]any{"v": 1, "id": "x", "tok": []byte{1, 2, 3}})
	// "tok" declares 8 KiB but the message ends first.
	beyond := append(bytes.Clone(good[:len(good)/3]), []byte{0xa3, 't', 'o', 'k', 0xc5, 0x20, 0x00}...)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrDecode},
		{"garbage", []byte{0xc1, 0xff, 0x00}, ErrDecode},
		{"not a map", []byte("\xa5hello"), ErrDecode},
		{"truncated in a blob", good[:len(good)/2], ErrDecode},
		{"truncated in the header", good[:9], ErrDecode},
		{"truncated at the end", good[:len(good)-1], ErrDecode},
		{"blob of a ragged length", ragged, ErrDecode},
		{"blob longer than the message", beyond, ErrDecode},
		{"field of the wrong type", wrongType, ErrDecode},
		{"msgpack nil", []byte{0xc0}, ErrSchema},
		{"future version", future, ErrSchema},
		{"no version", unversioned, ErrSchema},
		{"too large", make([]byte, MaxMessageBytes+1), ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var full Trajectory
			if err := Decode(c.in, &full); !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v (the case is wrong)", err, c.want)
			}
			var rt RawTrajectory
			err := DecodeRawTrajectory(c.in, &rt)
			if !errors.Is(err, c.want) {
				t.Fatalf("DecodeRawTrajectory: %v, want %v", err, c.want)
			}
			if rt.Bytes() != nil {
				t.Fatal("a refused trajectory kept its bytes")
			}
		})
	}
}

// For any input: DecodeRawTrajectory accepts exactly what Decode accepts
// into a Trajectory, with the same error class, and the head of an accepted
// one holds the fields Decode reads.
func FuzzDecodeRawTrajectory(f *testing.F) {
	for _, tr := range spliceTrajectories() {
		b, _ := Encode(tr)
		f.Add(b)
		f.Add(b[:len(b)*2/3])
	}
	f.Add([]byte{0x81, 0xa1, 'v', 0x01})
	f.Add([]byte{0x82, 0xa1, 'v', 0x01, 0xa3, 't', 'o', 'k', 0xc4, 0x03, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		var full Trajectory
		errFull := Decode(data, &full)
		var rt RawTrajectory
		err := DecodeRawTrajectory(data, &rt)
		for _, s := range []error{ErrDecode, ErrSchema, ErrTooLarge} {
			if errors.Is(err, s) != errors.Is(errFull, s) {
				t.Fatalf("DecodeRawTrajectory: %v; Decode: %v", err, errFull)
			}
		}
		if (err == nil) != (errFull == nil) {
			t.Fatalf("DecodeRawTrajectory: %v; Decode: %v", err, errFull)
		}
		if err != nil {
			return
		}
		if len(rt.Bytes()) == 0 || len(rt.Bytes()) > len(data) {
			t.Fatalf("kept %d of %d bytes", len(rt.Bytes()), len(data))
		}
		if rt.Head.ID != full.ID || rt.Head.Text != full.Text || rt.Head.Answer != full.Answer ||
			rt.Head.Kind != full.Kind || rt.Head.Tokens != len(full.Tokens) {
			t.Fatalf("head %+v, trajectory %+v", rt.Head, full)
		}
		var again Trajectory
		if err := Decode(rt.Bytes(), &again); err != nil {
			t.Fatalf("the kept bytes do not decode: %v", err)
		}
	})
}

// What the verifier reads of a 1,024-token trajectory (its head) against a
// full decode (what the learner does).
func BenchmarkTrajectoryDecode(b *testing.B) {
	data := benchEncoded(b)
	for b.Loop() {
		var tr Trajectory
		if err := Decode(data, &tr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTrajectoryHead(b *testing.B) {
	data := benchEncoded(b)
	for b.Loop() {
		var rt RawTrajectory
		if err := DecodeRawTrajectory(data, &rt); err != nil {
			b.Fatal(err)
		}
	}
}
