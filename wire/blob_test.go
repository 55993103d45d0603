package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The blob layout is the wire contract: bin header, then 4 little-endian
// bytes per element, whatever the host.
func TestBlobLayout(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want []byte
	}{
		{"int32s", Int32s{1, -1, 70000}, append([]byte{0xc4, 12}, le(1, 0xffffffff, 70000)...)},
		{"float32s", Float32s{1.5, -2}, append([]byte{0xc4, 8}, le(math.Float32bits(1.5), math.Float32bits(-2))...)},
		{"empty", Int32s{}, []byte{0xc4, 0}},
		{"nil", Float32s(nil), []byte{0xc0}}, // msgpack writes a nil slice as nil
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := msgpack.Marshal(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("encoded % x, want % x", got, c.want)
			}
		})
	}
}

func le(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

func TestBlobDecode(t *testing.T) {
	cases := []struct {
		name    string
		in      []byte
		want    Int32s
		wantErr bool
	}{
		{"values", append([]byte{0xc4, 8}, le(5, 0x80000000)...), Int32s{5, math.MinInt32}, false},
		{"empty is empty, not nil", []byte{0xc4, 0}, Int32s{}, false},
		{"msgpack nil is nil", []byte{0xc0}, nil, false},
		{"ragged length", []byte{0xc4, 3, 1, 2, 3}, nil, true},
		{"truncated", []byte{0xc4, 8, 1, 2, 3, 4}, nil, true},
		{"declared length beyond the cap", []byte{0xc6, 0xff, 0xff, 0xff, 0xfc}, nil, true},
		{"not a blob", []byte{0x91, 0x01}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got Int32s
			err := msgpack.Unmarshal(c.in, &got)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			if err == nil && (!reflect.DeepEqual(got, c.want) || (got == nil) != (c.want == nil)) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

// A 1,024-token trajectory (the data-plane benchmark's unit) through
// Encode and Decode.
func benchTrajectory() *Trajectory {
	n := 1024
	tr := &Trajectory{ID: "12/q7/3", Tokens: make(Int32s, n), LogProbs: make(Float32s, n), Entropies: make(Float32s, n),
		PromptTokens: make(Int32s, 32), Text: string(bytes.Repeat([]byte("1+2=3,"), n/6))}
	for i := range n {
		tr.Tokens[i], tr.LogProbs[i], tr.Entropies[i] = int32(i%40), -float32(i%7)/3, float32(i%5)/2
	}
	return tr
}

func BenchmarkEncodeTrajectory(b *testing.B) {
	tr := benchTrajectory()
	data, _ := Encode(tr)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Encode(tr); err != nil {
			b.Fatal(err)
		}
	}
}

// benchEncoded is benchTrajectory encoded, with b's bytes per operation
// set to its length.
func benchEncoded(b *testing.B) []byte {
	b.Helper()
	data, err := Encode(benchTrajectory())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	return data
}

func BenchmarkDecodeTrajectory(b *testing.B) {
	data := benchEncoded(b)
	for b.Loop() {
		var tr Trajectory
		if err := Decode(data, &tr); err != nil {
			b.Fatal(err)
		}
	}
}
