package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

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

// littleEndian hosts (amd64, arm64) copy blobs straight between the wire
// and the slice's memory; others convert element by element.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// asBytes views 4-byte elements as their bytes (little-endian hosts only).
func asBytes[T int32 | float32](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 4*len(s))
}

// encodeBlob writes s as one bin blob of 4*len(s) bytes.
func encodeBlob[T int32 | float32](enc *msgpack.Encoder, s []T, bits func(T) uint32) error {
	if !littleEndian {
		b := make([]byte, 4*len(s))
		for i, v := range s {
			binary.LittleEndian.PutUint32(b[4*i:], bits(v))
		}
		return enc.EncodeBytes(b)
	}
	if err := enc.EncodeBytesLen(4 * len(s)); err != nil {
		return err
	}
	if len(s) == 0 {
		return nil
	}
	_, err := enc.Writer().Write(asBytes(s))
	return err
}

// decodeBlob reads a bin blob into a fresh slice: nil for msgpack nil, an
// empty slice for an empty blob. The declared length is checked against
// MaxMessageBytes before anything is allocated.
func decodeBlob[T int32 | float32](dec *msgpack.Decoder, what string, from func(uint32) T) ([]T, error) {
	n, err := blobBytes(dec, what)
	if err != nil || n == -1 {
		return nil, err
	}
	out := make([]T, n/4)
	if n == 0 {
		return out, nil
	}
	if littleEndian {
		if err := dec.ReadFull(asBytes(out)); err != nil {
			return nil, err
		}
		return out, nil
	}
	b := make([]byte, n)
	if err := dec.ReadFull(b); err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = from(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// blobBytes reads a blob's header and checks its declared length: -1 for
// msgpack nil, else a multiple of 4 within MaxMessageBytes. Every blob
// reader (decodeBlob, and blobLen that skips one) goes through it, so they
// accept the same inputs.
func blobBytes(dec *msgpack.Decoder, what string) (int, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return 0, err
	}
	switch {
	case n == -1:
		return -1, nil
	case n < 0 || n > MaxMessageBytes:
		return 0, fmt.Errorf("%s blob of %d bytes exceeds %d", what, n, MaxMessageBytes)
	case n%4 != 0:
		return 0, fmt.Errorf("%s blob of %d bytes is not a multiple of 4", what, n)
	}
	return n, nil
}

// EncodeMsgpack writes the blob.
func (s Int32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	return encodeBlob(enc, s, func(v int32) uint32 { return uint32(v) })
}

// DecodeMsgpack reads the blob; its length must be a multiple of 4.
func (s *Int32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	out, err := decodeBlob(dec, "int32", func(u uint32) int32 { return int32(u) })
	if err != nil {
		return err
	}
	*s = out
	return nil
}

// EncodeMsgpack writes the blob.
func (s Float32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	return encodeBlob(enc, s, math.Float32bits)
}

// DecodeMsgpack reads the blob; its length must be a multiple of 4.
func (s *Float32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	out, err := decodeBlob(dec, "float32", math.Float32frombits)
	if err != nil {
		return err
	}
	*s = out
	return nil
}
