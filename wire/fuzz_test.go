package wire

import (
	"errors"
	"testing"
)

// Every decoder: no panic on any input, and a rejection is always one of
// the package's sentinels (so the caller can dead-letter it with a reason).
func FuzzDecodeAll(f *testing.F) {
	seeds := []Message{
		&Task{TaskID: "1/q", Samples: 8}, benchTrajectory(), &Scored{Traj: Trajectory{ID: "x", Tokens: Int32s{1}}},
		&StepReport{Groups: []GroupReport{{QuestionID: "q", TrajectoryIDs: []string{"a"}}}},
		&Experience{Tokens: Int32s{1, 2}}, &SampleRequest{N: 3}, &SampleReply{Questions: []SampledQuestion{{QuestionID: "q"}}},
		&DeadLetter{Reason: "r", Data: []byte{1}},
	}
	for _, m := range seeds {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range []Message{&Task{}, &Trajectory{}, &Scored{}, &StepReport{}, &Experience{},
			&SampleRequest{}, &SampleReply{}, &DeadLetter{}, &Probe{}} {
			err := Decode(data, m)
			if err != nil && !errors.Is(err, ErrDecode) && !errors.Is(err, ErrSchema) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%T: error %v wraps no sentinel", m, err)
			}
			if err == nil { // what decodes re-encodes
				if _, err := Encode(m); err != nil && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%T decoded but does not re-encode: %v", m, err)
				}
			}
		}
	})
}
