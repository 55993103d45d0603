package wire

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
)

// A verifier grades a trajectory by its text, gold answer and kind: about a
// tenth of a 1,024-token trajectory's bytes, the rest being the token,
// log-prob and entropy arrays the learner trains on. The actor writes those
// fields a second time, as a Grading in the ROLLOUTS message's GradingHeader,
// and the verifiers' consumer delivers only the headers of each message, so
// a verifier never receives the arrays. The learner, which receives the
// whole message, checks that what was graded is what the trajectory carries
// (Verdict.Graded against Trajectory.Grading().Sum()).

// GradingHeader is the ROLLOUTS message header holding the trajectory's
// Grading (EncodeGrading).
const GradingHeader = "Exgrpo-Grading"

// Grading is what a verifier needs of a trajectory to grade it.
type Grading struct {
	V      uint16 `msgpack:"v"`
	RunID  string `msgpack:"run"`
	ID     string `msgpack:"id"`
	TaskID string `msgpack:"task"`
	Kind   string `msgpack:"kind"`
	Answer string `msgpack:"ans"` // the gold answer
	Text   string `msgpack:"text"`
}

// Grading returns the fields of t a verifier grades.
func (t *Trajectory) Grading() Grading {
	return Grading{V: GradingSchema, RunID: t.RunID, ID: t.ID, TaskID: t.TaskID, Kind: t.Kind, Answer: t.Answer, Text: t.Text}
}

// Sum is a 64-bit FNV-1a hash of the fields that decide a grade (kind, gold
// answer, text; ids are checked by the join itself). A verdict carries the
// Sum of what it graded.
func (g *Grading) Sum() uint64 {
	h := fnv.New64a()
	for _, s := range []string{g.Kind, g.Answer, g.Text} {
		fmt.Fprintf(h, "%d:", len(s))
		h.Write([]byte(s))
	}
	return h.Sum64()
}

// EncodeGrading encodes g for GradingHeader: msgpack, as every wire message,
// in standard base64 (header values cannot hold arbitrary bytes).
func EncodeGrading(g *Grading) (string, error) {
	b, err := Encode(g)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeGrading decodes a GradingHeader value. An empty value (a message
// without the header: an actor older than the header, or not an actor) is
// an error wrapping ErrDecode, as is anything that is not a Grading naming
// its trajectory.
func DecodeGrading(h string) (Grading, error) {
	var g Grading
	if h == "" {
		return g, fmt.Errorf("%w: grading: the message has no %s header (written by an actor older than it, or not by an actor)", ErrDecode, GradingHeader)
	}
	if base64.StdEncoding.DecodedLen(len(h)) > MaxMessageBytes {
		return g, fmt.Errorf("%w: grading header of %d bytes", ErrTooLarge, len(h))
	}
	b, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return g, fmt.Errorf("%w: grading header: %v", ErrDecode, err)
	}
	if err := Decode(b, &g); err != nil {
		return g, err
	}
	if g.ID == "" {
		return g, fmt.Errorf("%w: grading header names no trajectory", ErrDecode)
	}
	return g, nil
}
