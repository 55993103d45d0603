package policy

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Checkpoints are safetensors files: an 8-byte little-endian header length,
// a JSON header mapping tensor names to {"dtype":"F32","shape":[…],
// "data_offsets":[begin,end]} (byte offsets into the data that follows) plus
// "__metadata__" (a string map), then the raw little-endian float32 data.
// The Python safetensors library reads them. Tensor names are those of the
// parameter layout ("wte", "h.0.qkv.w", …); optimiser moments are stored as
// "adamw.m.<name>" and "adamw.v.<name>".

// Metadata keys written by WriteCheckpoint; Checkpoint.Meta may not use them.
const (
	MetaConfig   = "policy.config"      // Config as JSON
	MetaAlphabet = "tokenizer.alphabet" // Tokenizer.Alphabet()
	MetaFormat   = "policy.format"      // "exgrpo-policy-1"
	MetaAdamW    = "adamw.config"       // AdamWConfig as JSON (without Schedule)
	MetaAdamWT   = "adamw.t"            // AdamW.T
	formatName   = "exgrpo-policy-1"
	maxHeader    = 64 << 20
)

// Checkpoint is what a checkpoint file holds. Opt may be nil; Meta holds free
// caller metadata (keys must not collide with the Meta* constants).
type Checkpoint struct {
	Model     *Model
	Tokenizer *Tokenizer
	Opt       *AdamW
	Meta      map[string]string
}

type stEntry struct {
	DType       string `json:"dtype"`
	Shape       []int  `json:"shape"`
	DataOffsets [2]int `json:"data_offsets"`
}

type stTensor struct {
	name  string
	shape []int
	data  []float32
}

func (c Checkpoint) tensors() []stTensor {
	m := c.Model
	var ts []stTensor
	for _, s := range m.specs {
		ts = append(ts, stTensor{s.Name, s.Shape, m.Params[s.Offset : s.Offset+s.size()]})
	}
	if c.Opt != nil {
		for _, s := range m.specs {
			ts = append(ts, stTensor{"adamw.m." + s.Name, s.Shape, c.Opt.M[s.Offset : s.Offset+s.size()]})
		}
		for _, s := range m.specs {
			ts = append(ts, stTensor{"adamw.v." + s.Name, s.Shape, c.Opt.V[s.Offset : s.Offset+s.size()]})
		}
	}
	return ts
}

// WriteCheckpoint writes c as safetensors.
func WriteCheckpoint(w io.Writer, c Checkpoint) error {
	if c.Model == nil || c.Tokenizer == nil {
		return fmt.Errorf("%w: Model and Tokenizer are required", ErrCheckpoint)
	}
	if c.Tokenizer.Size() != c.Model.Config.Vocab {
		return fmt.Errorf("%w: tokenizer size %d differs from model Vocab %d", ErrCheckpoint, c.Tokenizer.Size(), c.Model.Config.Vocab)
	}
	if c.Opt != nil && len(c.Opt.M) != len(c.Model.Params) {
		return fmt.Errorf("%w: optimiser state is for %d parameters, model has %d", ErrCheckpoint, len(c.Opt.M), len(c.Model.Params))
	}
	meta := map[string]string{}
	for k, v := range c.Meta {
		if isReservedMeta(k) {
			return fmt.Errorf("%w: Meta key %q is reserved", ErrCheckpoint, k)
		}
		meta[k] = v
	}
	cfgJSON, _ := json.Marshal(c.Model.Config)
	meta[MetaConfig] = string(cfgJSON)
	meta[MetaAlphabet] = c.Tokenizer.Alphabet()
	meta[MetaFormat] = formatName
	if c.Opt != nil {
		optJSON, err := json.Marshal(c.Opt.Config)
		if err != nil {
			return fmt.Errorf("%w: optimiser config: %v", ErrCheckpoint, err)
		}
		meta[MetaAdamW] = string(optJSON)
		meta[MetaAdamWT] = strconv.Itoa(c.Opt.T)
	}

	ts := c.tensors()
	// Build the header by hand to keep tensor order (= data order) stable.
	var hb strings.Builder
	hb.WriteString(`{"__metadata__":`)
	mj, _ := json.Marshal(meta) // map keys are sorted
	hb.Write(mj)
	off := 0
	for _, t := range ts {
		e := stEntry{DType: "F32", Shape: t.shape, DataOffsets: [2]int{off, off + 4*len(t.data)}}
		ej, _ := json.Marshal(e)
		nj, _ := json.Marshal(t.name)
		hb.WriteByte(',')
		hb.Write(nj)
		hb.WriteByte(':')
		hb.Write(ej)
		off += 4 * len(t.data)
	}
	hb.WriteByte('}')
	header := hb.String()
	if pad := (8 - len(header)%8) % 8; pad > 0 { // align data to 8 bytes
		header += strings.Repeat(" ", pad)
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	bw.Write(lenBuf[:])
	bw.WriteString(header)
	var fb [4]byte
	for _, t := range ts {
		for _, v := range t.data {
			binary.LittleEndian.PutUint32(fb[:], math.Float32bits(v))
			bw.Write(fb[:])
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("policy: write checkpoint: %w", err)
	}
	return nil
}

func isReservedMeta(k string) bool {
	return k == MetaConfig || k == MetaAlphabet || k == MetaFormat || k == MetaAdamW || k == MetaAdamWT
}

// ReadCheckpoint reads a checkpoint written by WriteCheckpoint and verifies
// that every tensor is present with the shape its config implies, that the
// data offsets tile the data exactly, and that the tokenizer fits the model.
// The optimiser is restored when its tensors are present (Schedule is nil).
func ReadCheckpoint(r io.Reader) (Checkpoint, error) {
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: header length: %v", ErrCheckpoint, err)
	}
	hl := binary.LittleEndian.Uint64(lenBuf[:])
	if hl < 2 || hl > maxHeader {
		return Checkpoint{}, fmt.Errorf("%w: header length %d outside [2, %d]", ErrCheckpoint, hl, maxHeader)
	}
	hbuf := make([]byte, hl)
	if _, err := io.ReadFull(r, hbuf); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: header: %v", ErrCheckpoint, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hbuf, &raw); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: header JSON: %v", ErrCheckpoint, err)
	}
	meta := map[string]string{}
	if mj, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(mj, &meta); err != nil {
			return Checkpoint{}, fmt.Errorf("%w: __metadata__: %v", ErrCheckpoint, err)
		}
		delete(raw, "__metadata__")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(meta[MetaConfig]), &cfg); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: metadata %s: %v", ErrCheckpoint, MetaConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	alphabet, ok := meta[MetaAlphabet]
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: metadata %s missing", ErrCheckpoint, MetaAlphabet)
	}
	tok := NewCharTokenizer(alphabet)
	if tok.Size() != cfg.Vocab {
		return Checkpoint{}, fmt.Errorf("%w: tokenizer size %d differs from Vocab %d", ErrCheckpoint, tok.Size(), cfg.Vocab)
	}
	ck := Checkpoint{Model: newZero(cfg), Tokenizer: tok}
	if oj, ok := meta[MetaAdamW]; ok {
		var oc AdamWConfig
		if err := json.Unmarshal([]byte(oj), &oc); err != nil {
			return Checkpoint{}, fmt.Errorf("%w: metadata %s: %v", ErrCheckpoint, MetaAdamW, err)
		}
		opt, err := NewAdamW(oc, ck.Model)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
		if opt.T, err = strconv.Atoi(meta[MetaAdamWT]); err != nil || opt.T < 0 {
			return Checkpoint{}, fmt.Errorf("%w: metadata %s = %q", ErrCheckpoint, MetaAdamWT, meta[MetaAdamWT])
		}
		ck.Opt = opt
	}
	want := ck.tensors()
	if len(raw) != len(want) {
		return Checkpoint{}, fmt.Errorf("%w: %d tensors, config implies %d", ErrCheckpoint, len(raw), len(want))
	}
	type span struct {
		lo, hi int
		t      stTensor
	}
	spans := make([]span, 0, len(want))
	for _, t := range want {
		ej, ok := raw[t.name]
		if !ok {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s missing", ErrCheckpoint, t.name)
		}
		var e stEntry
		if err := json.Unmarshal(ej, &e); err != nil {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s: %v", ErrCheckpoint, t.name, err)
		}
		if e.DType != "F32" {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s has dtype %s, want F32", ErrCheckpoint, t.name, e.DType)
		}
		if !slices.Equal(e.Shape, t.shape) {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s has shape %v, config implies %v", ErrCheckpoint, t.name, e.Shape, t.shape)
		}
		if e.DataOffsets[1]-e.DataOffsets[0] != 4*len(t.data) || e.DataOffsets[0] < 0 {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s data_offsets %v do not hold %d floats", ErrCheckpoint, t.name, e.DataOffsets, len(t.data))
		}
		spans = append(spans, span{e.DataOffsets[0], e.DataOffsets[1], t})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo - b.lo })
	pos := 0
	var fb [4]byte
	for _, s := range spans {
		if s.lo != pos {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s starts at byte %d, want %d (data must be contiguous)", ErrCheckpoint, s.t.name, s.lo, pos)
		}
		buf := make([]byte, s.hi-s.lo)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Checkpoint{}, fmt.Errorf("%w: tensor %s data: %v", ErrCheckpoint, s.t.name, err)
		}
		for i := range s.t.data {
			copy(fb[:], buf[4*i:])
			s.t.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(fb[:]))
		}
		pos = s.hi
	}
	for k := range maps.Keys(meta) {
		if isReservedMeta(k) {
			delete(meta, k)
		}
	}
	ck.Meta = meta
	return ck, nil
}

// SaveFile writes c to path atomically (temporary file, then rename).
func SaveFile(path string, c Checkpoint) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("policy: save %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := WriteCheckpoint(f, c); err != nil {
		f.Close()
		return fmt.Errorf("policy: save %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("policy: save %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("policy: save %s: %w", path, err)
	}
	return nil
}

// LoadFile reads the checkpoint at path.
func LoadFile(path string) (Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("policy: load %s: %w", path, err)
	}
	defer f.Close()
	c, err := ReadCheckpoint(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("policy: load %s: %w", path, err)
	}
	return c, nil
}
