package wire

import (
	"errors"

	"github.com/vmihailenco/msgpack/v5"
	"reflect"
	"testing"
)

func TestRoundTripTrajectory(t *testing.T) {
	in := &Scored{Traj: Trajectory{ID: "3/q7/1", Step: 3, QuestionID: "q7", PolicyVersion: 2,
		PromptTokens: Int32s{1, 2}, Tokens: Int32s{5, -1, 70000}, LogProbs: Float32s{-0.5, -1.25, 0},
		Entropies: Float32s{1, 2, 3}, Text: "x", Finish: "eos"}, Reward: 1, Reason: "correct"}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Scored
	if err := Decode(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip changed the message:\n in %+v\nout %+v", in, out)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(&Task{TaskID: "a"})
	future := &Task{TaskID: "a"}
	b, _ := Encode(future)
	var tk Task
	_ = Decode(b, &tk)
	// Re-encode with a version this build does not know.
	tk.V = 99
	var raw []byte
	{
		var err error
		raw, err = encodeRaw(&tk)
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"garbage", []byte{0xc1, 0xff, 0x00}, ErrDecode},
		{"truncated", good[:len(good)/2], ErrDecode},
		{"unknown version", raw, ErrSchema},
		{"too large", make([]byte, MaxMessageBytes+1), ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m Task
			if err := Decode(c.in, &m); !errors.Is(err, c.want) {
				t.Fatalf("Decode: got %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzDecodeTrajectory(f *testing.F) {
	b, _ := Encode(&Trajectory{ID: "x", Tokens: Int32s{1, 2, 3}, LogProbs: Float32s{0.5}})
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Trajectory
		_ = Decode(data, &m) // must not panic
		var r StepReport
		_ = Decode(data, &r)
	})
}

// encodeRaw marshals without stamping the version, to forge old or future messages.
func encodeRaw(m Message) ([]byte, error) {
	return msgpack.Marshal(m)
}
