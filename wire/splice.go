package wire

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// A verifier grades a trajectory by its text, gold answer and kind, and
// publishes only its verdict (the trajectory stays on ROLLOUTS). Decoding
// the token, log-prob and entropy blobs would cost more than the grading;
// DecodeRawTrajectory checks the whole message as Decode would and decodes
// only the head fields.

// TrajectoryHead holds the fields of a Trajectory a verifier needs: ids,
// text, gold answer and kind. The blobs are validated but not decoded.
type TrajectoryHead struct {
	RunID      string
	ID         string
	TaskID     string
	QuestionID string
	Text       string
	Answer     string
	Kind       string
	Tokens     int // response tokens (from the blob's length)
}

// RawTrajectory is an encoded trajectory that passed DecodeRawTrajectory:
// its head fields decoded and its bytes kept.
type RawTrajectory struct {
	Head TrajectoryHead
	raw  []byte // exactly one encoded trajectory, aliasing the input
}

// Bytes returns the trajectory's encoding (aliasing the decoded input;
// trailing bytes after the trajectory are not part of it).
func (t *RawTrajectory) Bytes() []byte { return t.raw }

// trajectoryShadow mirrors Trajectory field for field (same msgpack names,
// same order, so array-encoded structs map the same way; a test checks),
// with each blob replaced by blobLen. Every field is decoded into the same
// Go type as in Trajectory, so exactly the inputs Decode accepts are
// accepted here.
type trajectoryShadow struct {
	V             uint16  `msgpack:"v"`
	RunID         string  `msgpack:"run"`
	ID            string  `msgpack:"id"`
	TaskID        string  `msgpack:"task"`
	Step          int64   `msgpack:"step"`
	QuestionID    string  `msgpack:"q"`
	Index         int     `msgpack:"i"`
	PolicyVersion int64   `msgpack:"ver"`
	ActorID       string  `msgpack:"actor"`
	PromptTokens  blobLen `msgpack:"pt"`
	Tokens        blobLen `msgpack:"tok"`
	LogProbs      blobLen `msgpack:"lp"`
	Entropies     blobLen `msgpack:"ent"`
	Text          string  `msgpack:"text"`
	Finish        string  `msgpack:"finish"`
	Answer        string  `msgpack:"gold"`
	Kind          string  `msgpack:"kind"`
	SampleMicros  int64   `msgpack:"us"`
	CreatedUnixMs int64   `msgpack:"t"`
	EntropyKind   string  `msgpack:"entk,omitempty"`
}

// blobLen checks a blob as Int32s and Float32s decode it and skips its
// bytes; n is the element count (0 for nil).
type blobLen struct{ n int }

var _ msgpack.CustomDecoder = (*blobLen)(nil)

// DecodeMsgpack applies decodeBlob's checks without copying the blob.
func (b *blobLen) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := blobBytes(dec, "blob")
	if err != nil || n <= 0 {
		b.n = 0
		return err
	}
	if r, ok := dec.Buffered().(*sliceReader); ok {
		if err := r.skip(n); err != nil {
			return err
		}
	} else {
		var scratch [512]byte
		for left := n; left > 0; {
			k := min(left, len(scratch))
			if err := dec.ReadFull(scratch[:k]); err != nil {
				return err
			}
			left -= k
		}
	}
	b.n = n / 4
	return nil
}

// sliceReader reads a byte slice and can skip ahead without copying; it
// counts what was consumed, which is where an encoded value ends.
type sliceReader struct {
	b   []byte
	pos int
}

func (r *sliceReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.b) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.b[r.pos:])
	r.pos += n
	return n, nil
}

func (r *sliceReader) ReadByte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, io.EOF
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

func (r *sliceReader) UnreadByte() error {
	if r.pos == 0 {
		return errors.New("wire: unread at start")
	}
	r.pos--
	return nil
}

func (r *sliceReader) skip(n int) error {
	if n > len(r.b)-r.pos {
		r.pos = len(r.b)
		return io.ErrUnexpectedEOF
	}
	r.pos += n
	return nil
}

type headDecoder struct {
	r   sliceReader
	dec *msgpack.Decoder
}

var headDecoders = sync.Pool{New: func() any {
	h := &headDecoder{}
	h.dec = msgpack.NewDecoder(&h.r)
	return h
}}

// DecodeRawTrajectory checks that b holds a trajectory that Decode would
// accept into a Trajectory (size cap, well-formed msgpack, every field of
// its type, blob lengths, this build's schema version), fills t.Head, and
// keeps the trajectory's bytes in t, aliasing b. Errors wrap ErrTooLarge,
// ErrDecode or ErrSchema, as Decode's do. It never panics.
func DecodeRawTrajectory(b []byte, t *RawTrajectory) (err error) {
	const kind = "trajectory"
	*t = RawTrajectory{}
	if len(b) > MaxMessageBytes {
		return fmt.Errorf("%w: %s of %d bytes (cap %d)", ErrTooLarge, kind, len(b), MaxMessageBytes)
	}
	h := headDecoders.Get().(*headDecoder)
	h.r = sliceReader{b: b}
	defer func() {
		h.r = sliceReader{}
		headDecoders.Put(h)
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrDecode, kind, r)
		}
	}()
	var s trajectoryShadow
	if err := h.dec.Decode(&s); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDecode, kind, err)
	}
	if s.V != TrajectorySchema {
		return fmt.Errorf("%w: %s version %d (this build reads %d)", ErrSchema, kind, s.V, TrajectorySchema)
	}
	t.Head = TrajectoryHead{RunID: s.RunID, ID: s.ID, TaskID: s.TaskID, QuestionID: s.QuestionID,
		Text: s.Text, Answer: s.Answer, Kind: s.Kind, Tokens: s.Tokens.n}
	t.raw = b[:h.r.pos]
	return nil
}
