package weights

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ErrSafetensors marks a file that is not a well-formed safetensors file.
var ErrSafetensors = errors.New("weights: bad safetensors")

// maxHeader bounds a safetensors JSON header (the format's own readers cap
// it at 100 MB).
const maxHeader = 100 << 20

// Tensor is one tensor of a safetensors file. Begin and End are absolute
// byte offsets in the file (the header's data_offsets plus 8 + header size).
type Tensor struct {
	Name       string
	Dtype      string
	Shape      []int64
	Begin, End int64
}

// Safetensors is a parsed safetensors header: the format is an 8-byte
// little-endian header length N, N bytes of JSON mapping tensor names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" of strings),
// then the data.
type Safetensors struct {
	DataStart int64             // 8 + N: where the data begins
	Tensors   []Tensor          // sorted by Begin
	Metadata  map[string]string // "__metadata__", nil when absent
}

// dtypeSizes are the element sizes of the safetensors dtypes.
var dtypeSizes = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// ElemSize is the byte size of one element of a safetensors dtype.
func ElemSize(dtype string) (int, bool) {
	n, ok := dtypeSizes[dtype]
	return n, ok
}

// ReadSafetensors parses the header of a safetensors file of the given size
// read through r, and checks every tensor's offsets against its dtype, its
// shape and the file size. Tensors may not overlap.
func ReadSafetensors(r io.ReaderAt, size int64) (*Safetensors, error) {
	var lenb [8]byte
	if size < 8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the 8-byte header length", ErrSafetensors, size)
	}
	if _, err := r.ReadAt(lenb[:], 0); err != nil {
		return nil, fmt.Errorf("weights: read safetensors header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenb[:])
	if n > maxHeader || int64(n) > size-8 {
		return nil, fmt.Errorf("%w: header of %d bytes in a file of %d", ErrSafetensors, n, size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("weights: read safetensors header: %w", err)
	}
	return parseHeader(hdr, size)
}

// ParseSafetensors is ReadSafetensors over a file held in memory.
func ParseSafetensors(data []byte) (*Safetensors, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the 8-byte header length", ErrSafetensors, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxHeader || n > uint64(len(data)-8) {
		return nil, fmt.Errorf("%w: header of %d bytes in a file of %d", ErrSafetensors, n, len(data))
	}
	return parseHeader(data[8:8+n], int64(len(data)))
}

func parseHeader(hdr []byte, size int64) (*Safetensors, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrSafetensors, err)
	}
	st := &Safetensors{DataStart: 8 + int64(len(hdr))}
	for name, v := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &st.Metadata); err != nil {
				return nil, fmt.Errorf("%w: __metadata__: %v", ErrSafetensors, err)
			}
			continue
		}
		var t struct {
			Dtype   string   `json:"dtype"`
			Shape   []int64  `json:"shape"`
			Offsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &t); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrSafetensors, name, err)
		}
		es, ok := ElemSize(t.Dtype)
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q: unknown dtype %q", ErrSafetensors, name, t.Dtype)
		}
		if len(t.Offsets) != 2 || t.Offsets[0] > t.Offsets[1] || t.Offsets[1] > uint64(size-st.DataStart) {
			return nil, fmt.Errorf("%w: tensor %q: data_offsets %v outside the %d data bytes", ErrSafetensors, name, t.Offsets, size-st.DataStart)
		}
		elems := uint64(1)
		for _, d := range t.Shape {
			if d < 0 || (d > 0 && elems > (1<<62)/uint64(d)) {
				return nil, fmt.Errorf("%w: tensor %q: shape %v", ErrSafetensors, name, t.Shape)
			}
			elems *= uint64(d)
		}
		if elems*uint64(es) != t.Offsets[1]-t.Offsets[0] {
			return nil, fmt.Errorf("%w: tensor %q: %s%v needs %d bytes, data_offsets give %d", ErrSafetensors, name, t.Dtype, t.Shape,
				elems*uint64(es), t.Offsets[1]-t.Offsets[0])
		}
		st.Tensors = append(st.Tensors, Tensor{Name: name, Dtype: t.Dtype, Shape: t.Shape,
			Begin: st.DataStart + int64(t.Offsets[0]), End: st.DataStart + int64(t.Offsets[1])})
	}
	sort.Slice(st.Tensors, func(i, j int) bool {
		a, b := st.Tensors[i], st.Tensors[j]
		return a.Begin < b.Begin || (a.Begin == b.Begin && a.End < b.End)
	})
	for i := 1; i < len(st.Tensors); i++ {
		if p, t := st.Tensors[i-1], st.Tensors[i]; t.Begin < p.End {
			return nil, fmt.Errorf("%w: tensors %q and %q overlap", ErrSafetensors, p.Name, t.Name)
		}
	}
	return st, nil
}

// NamedTensor is one tensor to write with WriteSafetensors; Data holds its
// elements little-endian, len = product(Shape) * ElemSize(Dtype).
type NamedTensor struct {
	Name  string
	Dtype string
	Shape []int64
	Data  []byte
}

// EncodeSafetensorsHeader returns the 8-byte length and JSON header of a
// file holding ts in order (the data follows, tensors back to back). Only
// the lengths of the Data fields are read, and each must match its shape.
func EncodeSafetensorsHeader(ts []NamedTensor, meta map[string]string) ([]byte, error) {
	for _, t := range ts {
		n, err := tensorBytes(t.Name, t.Dtype, t.Shape)
		if err != nil {
			return nil, err
		}
		if n != int64(len(t.Data)) {
			return nil, fmt.Errorf("weights: tensor %q: %s%v needs %d bytes, has %d", t.Name, t.Dtype, t.Shape, n, len(t.Data))
		}
	}
	return SafetensorsHeader(ts, meta)
}

func tensorBytes(name, dtype string, shape []int64) (int64, error) {
	es, ok := ElemSize(dtype)
	if !ok {
		return 0, fmt.Errorf("weights: tensor %q: unknown dtype %q", name, dtype)
	}
	n := int64(es)
	for _, d := range shape {
		n *= d
	}
	return n, nil
}

// SafetensorsHeader is EncodeSafetensorsHeader from names, dtypes and
// shapes alone (Data is ignored): for writing a file's data in place after
// its header.
func SafetensorsHeader(ts []NamedTensor, meta map[string]string) ([]byte, error) {
	hdr := map[string]any{}
	if len(meta) > 0 {
		hdr["__metadata__"] = meta
	}
	var off int64
	for _, t := range ts {
		n, err := tensorBytes(t.Name, t.Dtype, t.Shape)
		if err != nil {
			return nil, err
		}
		hdr[t.Name] = map[string]any{"dtype": t.Dtype, "shape": t.Shape, "data_offsets": []int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("weights: encode safetensors header: %w", err)
	}
	for len(js)%8 != 0 { // the format pads the header with spaces to 8 bytes
		js = append(js, ' ')
	}
	out := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	return append(out, js...), nil
}

// WriteSafetensors writes ts as one safetensors file.
func WriteSafetensors(w io.Writer, ts []NamedTensor, meta map[string]string) error {
	hdr, err := EncodeSafetensorsHeader(ts, meta)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("weights: write safetensors: %w", err)
	}
	for _, t := range ts {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("weights: write safetensors: %w", err)
		}
	}
	return nil
}
