// Package wire defines the messages the roles exchange over JetStream and
// their encoding: msgpack with an explicit schema version in every message,
// numeric arrays as little-endian byte blobs (msgpack bin), and a size cap.
//
// A decoder rejects unknown versions, oversize input and garbage with an error
// wrapping ErrSchema, ErrTooLarge or ErrDecode; the caller sends such a message
// to the DEAD stream with the error as its reason. Nothing here imports NATS.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxMessageBytes caps every decoded message. It matches the embedded
// server's max_payload (see package bus); a 1,024-token trajectory is ~13 KiB.
const MaxMessageBytes = 8 << 20

// Sentinel errors; test with errors.Is.
var (
	ErrTooLarge = errors.New("wire: message too large")
	ErrSchema   = errors.New("wire: unknown schema version")
	ErrDecode   = errors.New("wire: malformed message")
)

// Schema versions, one per message type. Bump on any incompatible change.
// Adding an omitempty field is compatible and bumps nothing: older readers
// skip it, and a message without it decodes to the field's zero value,
// which must mean what older writers meant (Task.PromptTokens: none given;
// Trajectory.EntropyKind: exact entropies).
const (
	TaskSchema          = 1
	TrajectorySchema    = 1
	ScoredSchema        = 1
	VerdictSchema       = 1
	VerdictsSchema      = 1
	StepReportSchema    = 1
	ExperienceSchema    = 1
	SampleRequestSchema = 1
	SampleReplySchema   = 1
	DeadLetterSchema    = 1
	LineageSchema       = 1
	ProbeSchema         = 1
)

// Message is implemented by every wire type: its expected schema version and
// a short kind name used in error messages and DEAD reasons.
type Message interface {
	schema() (kind string, want uint16, got uint16)
}

// encoders recycles encoders and their buffers: growing a fresh buffer to
// a trajectory's ~13 KiB cost more than the encoding itself.
var encoders = sync.Pool{New: func() any {
	e := &pooledEncoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true)
	return e
}}

type pooledEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

// Encode marshals a message. The caller owns the returned slice. Safe for
// concurrent use.
func Encode(m Message) ([]byte, error) {
	Stamp(m)
	e := encoders.Get().(*pooledEncoder)
	defer func() {
		if e.buf.Cap() <= 4<<20 { // do not pin the rare huge buffer
			encoders.Put(e)
		}
	}()
	e.buf.Reset()
	if err := e.enc.Encode(m); err != nil {
		kind, _, _ := m.schema()
		return nil, fmt.Errorf("wire: encode %s: %w", kind, err)
	}
	if e.buf.Len() > MaxMessageBytes {
		kind, _, _ := m.schema()
		return nil, fmt.Errorf("%w: %s of %d bytes (cap %d)", ErrTooLarge, kind, e.buf.Len(), MaxMessageBytes)
	}
	return bytes.Clone(e.buf.Bytes()), nil
}

// Decode unmarshals b into m (a pointer to a wire type) and checks its size
// and schema version. It never panics on any input.
func Decode(b []byte, m Message) (err error) {
	kind, _, _ := m.schema()
	if len(b) > MaxMessageBytes {
		return fmt.Errorf("%w: %s of %d bytes (cap %d)", ErrTooLarge, kind, len(b), MaxMessageBytes)
	}
	defer func() {
		if r := recover(); r != nil { // msgpack should not panic; be certain.
			err = fmt.Errorf("%w: %s: %v", ErrDecode, kind, r)
		}
	}()
	if err := msgpack.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDecode, kind, err)
	}
	if _, want, got := m.schema(); got != want {
		return fmt.Errorf("%w: %s version %d (this build reads %d)", ErrSchema, kind, got, want)
	}
	return nil
}
