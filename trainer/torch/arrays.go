package torch

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
)

// Arrays travel as raw little-endian bytes (int32 token ids, float32 values).

func i32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

func i32s(b []byte) []int32 {
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// f32Bytes packs ragged rows end to end.
func f32Bytes(rows [][]float32) []byte {
	n := 0
	for _, r := range rows {
		n += len(r)
	}
	b := make([]byte, 0, 4*n)
	for _, r := range rows {
		for _, x := range r {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	return b
}

// f32s decodes exactly n float32 values.
func f32s(v any, n int) ([]float32, error) {
	b, ok := v.([]byte)
	if !ok && v != nil {
		return nil, fmt.Errorf("array field is a %T, want bytes", v)
	}
	if len(b) != 4*n {
		return nil, fmt.Errorf("array of %d bytes, want %d float32 values", len(b), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

func asInt(v any) int {
	switch x := v.(type) {
	case int8:
		return int(x)
	case int16:
		return int(x)
	case int32:
		return int(x)
	case int64:
		return int(x)
	case uint8:
		return int(x)
	case uint16:
		return int(x)
	case uint32:
		return int(x)
	case uint64:
		return int(x)
	case int:
		return x
	case float64:
		return int(x)
	}
	return -1
}

func asFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	}
	if i := asInt(v); i != -1 {
		return float64(i)
	}
	return math.NaN()
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

// tailBuffer keeps the last max bytes written (the worker's stderr, for
// error messages) and copies everything to out when not nil. Safe for
// concurrent use (the process writes while calls read).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
	out io.Writer
}

func newTailBuffer(max int, out io.Writer) *tailBuffer { return &tailBuffer{max: max, out: out} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	if t.out != nil {
		t.out.Write(p)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
