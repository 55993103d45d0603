package wire

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// Int32s is a []int32 that travels as a little-endian msgpack bin blob
// (4 bytes per element), which encodes and decodes an order of magnitude
// faster than a msgpack array of numbers (ARCHITECTURE.md, the data path).
type Int32s []int32

// Float32s is a []float32 that travels as a little-endian bin blob.
type Float32s []float32

var (
	_ msgpack.CustomEncoder = Int32s(nil)
	_ msgpack.CustomDecoder = (*Int32s)(nil)
	_ msgpack.CustomEncoder = Float32s(nil)
	_ msgpack.CustomDecoder = (*Float32s)(nil)
)

// EncodeMsgpack writes the blob.
func (s Int32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	b := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return enc.EncodeBytes(b)
}

// DecodeMsgpack reads the blob; its length must be a multiple of 4.
func (s *Int32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := dec.DecodeBytes()
	if err != nil {
		return err
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("int32 blob of %d bytes is not a multiple of 4", len(b))
	}
	if b == nil {
		*s = nil
		return nil
	}
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	*s = out
	return nil
}

// EncodeMsgpack writes the blob.
func (s Float32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	b := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return enc.EncodeBytes(b)
}

// DecodeMsgpack reads the blob; its length must be a multiple of 4.
func (s *Float32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := dec.DecodeBytes()
	if err != nil {
		return err
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("float32 blob of %d bytes is not a multiple of 4", len(b))
	}
	if b == nil {
		*s = nil
		return nil
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	*s = out
	return nil
}
