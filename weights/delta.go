package weights

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Delta errors; test with errors.Is.
var (
	// ErrNotDeltable: the two files differ in size, so one cannot be
	// stored as a delta of the other; store the file in full.
	ErrNotDeltable = errors.New("weights: files cannot be delta-encoded")
	// ErrDigest: a reconstructed file does not have the digest it should.
	ErrDigest = errors.New("weights: digest mismatch")
	// ErrDelta: a delta blob is malformed.
	ErrDelta = errors.New("weights: bad delta")
)

// Compressor names a delta encoding; it is the codec id a delta blob's
// header carries, so a decoder that does not know it says so instead of
// misreading the chunks.
type Compressor string

// The encodings EncodeDelta offers. DiffHuff is the default; DiffFSE (the
// previous default: the same streams with FSE in place of huff0, still
// decoded) and the others, which XOR the bits, split byte planes and
// compress them with a general-purpose compressor, are kept for comparison
// (`exgrpo bench weights` measures them; BENCHMARKS.md, weights).
//
// Why DiffHuff: after one AdamW step at lr 1e-6 a few percent of bf16
// elements change, almost all by one unit in the last place. XORed planes
// leave a sparse plane of low bytes, and an LZ compressor (zstd, S2) pays a
// sequence of 2-3 bytes for every isolated non-zero byte: about 20x on such
// a step. DiffHuff keeps only the changed elements: where they are (the
// gaps between them) and what they became, the difference of the elements
// as integers in an order-preserving key (so ±1 ulp is ±1) zigzagged (1, 2
// for -1, +1). An entropy coder (huff0, zstd's Huffman stage, from the same
// klauspost/compress module) spends close to the entropy of the gaps and
// of the low bytes, and the high bytes, almost all zero, go through zstd:
// about 46x on that step, with the entropy coder seeing only the ~4% of
// elements that changed. Finding them is a branch-free scan of 64 elements
// at a time (diffEncode), so encoding runs at about the speed of reading
// the two versions. FSE (tANS) spends 2% fewer bytes on the same streams
// but codes them at less than half huff0's speed: DiffFSE encodes at about
// 0.6x and decodes at 0.7x DiffHuff's rate (BENCHMARKS.md, weights).
const (
	DiffHuff Compressor = "diff-huff" // key difference, zigzag; gaps and low bytes huff0, high bytes zstd (elements of 2 and 4 bytes)
	DiffFSE  Compressor = "diff-fse"  // the same streams, gaps and low bytes FSE (the previous default)
	Zstd1    Compressor = "zstd1"     // XOR planes, zstd SpeedFastest
	Zstd3    Compressor = "zstd3"     // zstd, SpeedDefault
	S2       Compressor = "s2"
	Raw      Compressor = "raw" // no compression (for measuring the transform alone)
)

// DeltaOptions tune EncodeDelta.
type DeltaOptions struct {
	// ChunkBytes bounds one independently compressed chunk; default 4 MiB.
	// Chunks are the unit of parallelism in both directions.
	ChunkBytes int
	Compressor Compressor // default DiffHuff
	// Workers bounds the goroutines of one call; default GOMAXPROCS.
	Workers int
}

// DefaultDeltaOptions returns the defaults above.
func DefaultDeltaOptions() DeltaOptions {
	return DeltaOptions{ChunkBytes: 4 << 20, Compressor: DiffHuff, Workers: runtime.GOMAXPROCS(0)}
}

// maxChunk bounds a chunk a decoder accepts (a hostile header cannot make
// it allocate more than this per worker).
const maxChunk = 64 << 20

// deltaMagic opens every delta blob; the digit is the format version.
var deltaMagic = []byte("EXGRPOD1")

// deltaHeader is the JSON header of a delta blob. Layout: magic, uint32 LE
// header length, header, then each chunk's compressed bytes in order.
type deltaHeader struct {
	Size       int64      `json:"size"`          // target (= base) file size
	Target     string     `json:"target_sha256"` // hex SHA-256 of the reconstructed file
	Base       string     `json:"base_sha256"`   // hex SHA-256 of the file it applies to
	Compressor Compressor `json:"compressor"`
	// Chunks: [offset, length, element size, compressed length]; they tile
	// [0, Size) in order.
	Chunks [][4]int64 `json:"chunks"`
}

// segment is a byte range and the element size its XOR is split by.
type segment struct {
	off, n int64
	elem   int
}

// plan splits a file into segments: for two safetensors files with the same
// header bytes, the header (element size 1) and each tensor with its dtype's
// element size (gaps as size 1); otherwise the whole file as bytes.
func plan(base, target []byte) []segment {
	st, err := ParseSafetensors(target)
	if err != nil || !bytes.Equal(base[:min(int64(len(base)), st.DataStart)], target[:st.DataStart]) {
		return []segment{{0, int64(len(target)), 1}}
	}
	segs := []segment{{0, st.DataStart, 1}}
	at := st.DataStart
	for _, t := range st.Tensors {
		if t.Begin > at {
			segs = append(segs, segment{at, t.Begin - at, 1})
		}
		es, _ := ElemSize(t.Dtype)
		if t.End > t.Begin {
			segs = append(segs, segment{t.Begin, t.End - t.Begin, es})
		}
		at = t.End
	}
	if n := int64(len(target)); n > at {
		segs = append(segs, segment{at, n - at, 1})
	}
	return segs
}

// chunks cuts segments into pieces of at most max bytes, element-aligned.
func chunks(segs []segment, max int) []segment {
	var out []segment
	for _, s := range segs {
		step := int64(max / s.elem * s.elem)
		for off := int64(0); off < s.n; off += step {
			out = append(out, segment{s.off + off, min(step, s.n-off), s.elem})
		}
	}
	return out
}

// Digest is the hex SHA-256 of data, the digest manifests carry.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// EncodeDelta encodes target as a delta against base (equal sizes; else
// ErrNotDeltable): per tensor (for two safetensors files with the same
// header; otherwise the file as bytes), in chunks of at most
// opt.ChunkBytes coded on their own and in parallel. With DiffHuff and
// DiffFSE a chunk of 2- or 4-byte elements holds only its changed elements
// (diff.go); other chunks, and every chunk of the other compressors, hold
// the XOR of the two files' bits split into byte planes by the element
// size (all first bytes, then all second bytes, ...), compressed.
// baseDigest and targetDigest are the files' hex SHA-256 (computed when
// empty).
func EncodeDelta(base, target []byte, baseDigest, targetDigest string, opt DeltaOptions) ([]byte, error) {
	if len(base) != len(target) {
		return nil, fmt.Errorf("%w: base of %d bytes, target of %d", ErrNotDeltable, len(base), len(target))
	}
	opt = opt.withDefaults()
	if baseDigest == "" {
		baseDigest = Digest(base)
	}
	if targetDigest == "" {
		targetDigest = Digest(target)
	}
	cs := chunks(plan(base, target), opt.ChunkBytes)
	bodies := make([][]byte, len(cs))
	err := parallel(len(cs), opt.Workers, func() (func(i int) error, func()) {
		enc, err := getCompressor(opt.Compressor)
		return func(i int) error {
			if err != nil {
				return err
			}
			c := cs[i]
			bodies[i] = enc.encodeChunk(base[c.off:c.off+c.n], target[c.off:c.off+c.n], c.elem)
			return nil
		}, enc.release
	})
	if err != nil {
		return nil, err
	}
	h := deltaHeader{Size: int64(len(target)), Target: targetDigest, Base: baseDigest, Compressor: opt.Compressor,
		Chunks: make([][4]int64, len(cs))}
	total := 0
	for i, c := range cs {
		h.Chunks[i] = [4]int64{c.off, c.n, int64(c.elem), int64(len(bodies[i]))}
		total += len(bodies[i])
	}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("weights: encode delta header: %w", err)
	}
	out := make([]byte, 0, len(deltaMagic)+4+len(js)+total)
	out = append(out, deltaMagic...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(js)))
	out = append(out, js...)
	for _, b := range bodies {
		out = append(out, b...)
	}
	return out, nil
}

// DeltaInfo is what a delta blob's header says.
type DeltaInfo struct {
	Size                     int64
	TargetDigest, BaseDigest string
	Compressor               Compressor
	Chunks                   int
}

// parseDelta checks a delta blob's framing and returns its header and where
// each chunk's body starts.
func parseDelta(delta []byte) (deltaHeader, []int64, error) {
	var h deltaHeader
	if len(delta) < len(deltaMagic)+4 || !bytes.Equal(delta[:len(deltaMagic)], deltaMagic) {
		return h, nil, fmt.Errorf("%w: no delta magic", ErrDelta)
	}
	hl := int64(binary.LittleEndian.Uint32(delta[len(deltaMagic):]))
	at := int64(len(deltaMagic) + 4)
	if hl > int64(len(delta))-at {
		return h, nil, fmt.Errorf("%w: header of %d bytes in a blob of %d", ErrDelta, hl, len(delta))
	}
	if err := json.Unmarshal(delta[at:at+hl], &h); err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", ErrDelta, err)
	}
	at += hl
	if h.Size < 0 {
		return h, nil, fmt.Errorf("%w: size %d", ErrDelta, h.Size)
	}
	if !known(h.Compressor) {
		return h, nil, fmt.Errorf("%w: unknown compressor %q", ErrDelta, h.Compressor)
	}
	starts := make([]int64, len(h.Chunks))
	next := int64(0)
	for i, c := range h.Chunks {
		off, n, elem, cl := c[0], c[1], c[2], c[3]
		if off != next || n <= 0 || n > maxChunk || elem < 1 || elem > 8 || n%elem != 0 || cl < 0 || cl > int64(len(delta))-at {
			return h, nil, fmt.Errorf("%w: chunk %d %v does not follow at %d within the blob", ErrDelta, i, c, next)
		}
		starts[i] = at
		at += cl
		next = off + n
	}
	if next != h.Size || at != int64(len(delta)) {
		return h, nil, fmt.Errorf("%w: chunks cover %d of %d bytes and %d of %d blob bytes", ErrDelta, next, h.Size, at, len(delta))
	}
	return h, starts, nil
}

// ReadDeltaInfo parses a delta blob's header.
func ReadDeltaInfo(delta []byte) (DeltaInfo, error) {
	h, _, err := parseDelta(delta)
	if err != nil {
		return DeltaInfo{}, err
	}
	return DeltaInfo{Size: h.Size, TargetDigest: h.Target, BaseDigest: h.Base, Compressor: h.Compressor, Chunks: len(h.Chunks)}, nil
}

// ApplyDelta turns buf, which holds the base file, into the target file in
// place, then checks the result's SHA-256 against the one the delta names
// (ErrDigest when they differ: buf then holds neither file and must be
// discarded). workers bounds the goroutines (0: GOMAXPROCS).
func ApplyDelta(buf, delta []byte, workers int) error {
	if err := ApplyDeltaUnchecked(buf, delta, workers); err != nil {
		return err
	}
	h, _, _ := parseDelta(delta)
	if got := Digest(buf); got != h.Target {
		return fmt.Errorf("%w: reconstructed file has sha256 %s, the delta names %s", ErrDigest, got, h.Target)
	}
	return nil
}

// ApplyDeltaUnchecked is ApplyDelta without the final digest check, for a
// caller that checks the digest itself (or measures the two apart).
func ApplyDeltaUnchecked(buf, delta []byte, workers int) error {
	h, starts, err := parseDelta(delta)
	if err != nil {
		return err
	}
	if int64(len(buf)) != h.Size {
		return fmt.Errorf("%w: base of %d bytes, the delta is for %d", ErrDelta, len(buf), h.Size)
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return parallel(len(h.Chunks), workers, func() (func(i int) error, func()) {
		dec, err := getDecompressor(h.Compressor)
		return func(i int) error {
			if err != nil {
				return err
			}
			c := h.Chunks[i]
			off, n, elem := c[0], c[1], int(c[2])
			body := delta[starts[i] : starts[i]+c[3]]
			if err := dec.decodeChunk(buf[off:off+n], body, elem); err != nil {
				return fmt.Errorf("%w: chunk %d: %v", ErrDelta, i, err)
			}
			return nil
		}, dec.release
	})
}

func (o DeltaOptions) withDefaults() DeltaOptions {
	d := DefaultDeltaOptions()
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = d.ChunkBytes
	}
	o.ChunkBytes = min(o.ChunkBytes, maxChunk)
	if o.ChunkBytes < 8 {
		o.ChunkBytes = 8
	}
	if o.Compressor == "" {
		o.Compressor = d.Compressor
	}
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	return o
}

// parallel runs do(i) for i in [0, n) on up to workers goroutines, each
// built by mk (its own codec state) and closed at the end; the first error
// stops the rest.
func parallel(n, workers int, mk func() (do func(i int) error, done func())) error {
	workers = max(1, min(workers, n))
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			do, done := mk()
			defer done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if stop || i >= n {
					return
				}
				if err := do(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// known: a compressor this package encodes and decodes.
func known(k Compressor) bool {
	switch k {
	case DiffHuff, DiffFSE, Zstd1, Zstd3, S2, Raw:
		return true
	}
	return false
}

// Codec state (a zstd coder, scratch buffers of a chunk's size) is pooled
// per compressor: building it costs more than coding a small file. A
// compressor or decompressor is used by one goroutine at a time.
var compressorPools, decompressorPools sync.Map // Compressor -> *sync.Pool

func pool(m *sync.Map, k Compressor) *sync.Pool {
	p, _ := m.LoadOrStore(k, new(sync.Pool))
	return p.(*sync.Pool)
}

func getCompressor(k Compressor) (*compressor, error) {
	if c, ok := pool(&compressorPools, k).Get().(*compressor); ok {
		return c, nil
	}
	return newCompressor(k)
}

// release returns c to its pool (nil: nothing).
func (c *compressor) release() {
	if c != nil {
		pool(&compressorPools, c.kind).Put(c)
	}
}

func getDecompressor(k Compressor) (*decompressor, error) {
	if d, ok := pool(&decompressorPools, k).Get().(*decompressor); ok {
		return d, nil
	}
	return newDecompressor(k)
}

func (d *decompressor) release() {
	if d != nil {
		pool(&decompressorPools, d.kind).Put(d)
	}
}

type compressor struct {
	kind   Compressor
	z      *zstd.Encoder
	fse    fse.Scratch
	huff   huff0.Scratch
	diff   diffScratch // DiffHuff/DiffFSE scratch, reused across chunks
	zout   []byte      // zstd output of putPart, reused
	planes []byte      // XOR planes of a chunk, reused
}

func newCompressor(k Compressor) (*compressor, error) {
	c := &compressor{kind: k}
	var lvl zstd.EncoderLevel
	switch k {
	case Zstd1:
		lvl = zstd.SpeedFastest
	case Zstd3:
		lvl = zstd.SpeedDefault
	case DiffHuff, DiffFSE:
		lvl = zstd.SpeedFastest
		// Every part carries its own table: parts decode independently.
		c.huff.Reuse = huff0.ReusePolicyNone
	case S2, Raw:
		return c, nil
	default:
		return nil, fmt.Errorf("%w: unknown compressor %q", ErrDelta, k)
	}
	// A window no larger than a chunk: each chunk is its own frame, and the
	// default 8 MiB window makes every encoder allocate and clear tens of MB.
	z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("weights: zstd encoder: %w", err)
	}
	c.z = z
	return c, nil
}

// compress returns a new slice (the caller keeps it).
func (c *compressor) compress(src []byte) []byte {
	switch c.kind {
	case S2:
		return s2.Encode(nil, src)
	case Raw:
		return append([]byte(nil), src...)
	default:
		return c.z.EncodeAll(src, make([]byte, 0, len(src)/16+64))
	}
}

type decompressor struct {
	kind Compressor
	z    *zstd.Decoder
	fse  fse.Scratch
	huff huff0.Scratch
	// DiffHuff/DiffFSE scratch, reused across chunks
	gaps, lo, rest []byte
	planes         []byte // XOR planes of a chunk, reused
}

func newDecompressor(k Compressor) (*decompressor, error) {
	d := &decompressor{kind: k}
	switch k {
	case Zstd1, Zstd3, DiffHuff, DiffFSE:
		z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxChunk), zstd.IgnoreChecksum(true))
		if err != nil {
			return nil, fmt.Errorf("weights: zstd decoder: %w", err)
		}
		d.z = z
	case S2, Raw:
	default:
		return nil, fmt.Errorf("%w: unknown compressor %q", ErrDelta, k)
	}
	return d, nil
}

// decompress decodes src into dst (reused), expecting n bytes.
func (d *decompressor) decompress(src, dst []byte, n int) ([]byte, error) {
	switch d.kind {
	case S2:
		l, err := s2.DecodedLen(src)
		if err != nil {
			return dst, err
		}
		if l != n {
			return dst, fmt.Errorf("s2 block of %d bytes, want %d", l, n)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		return s2.Decode(dst[:n], src)
	case Raw:
		return append(dst, src...), nil
	default:
		if cap(dst) < n {
			dst = make([]byte, 0, n)
		}
		return d.z.DecodeAll(src, dst)
	}
}

// xorSplit writes base XOR target into dst as elem byte planes: plane p
// holds byte p of every element. len(dst) = len(base) = len(target), a
// multiple of elem.
func xorSplit(dst, base, target []byte, elem int) {
	n := len(target) / elem
	switch elem {
	case 1:
		for i := range target {
			dst[i] = base[i] ^ target[i]
		}
	case 2:
		lo, hi := dst[:n], dst[n:2*n]
		i := 0
		for ; i+4 <= n; i += 4 {
			x := binary.LittleEndian.Uint64(base[2*i:]) ^ binary.LittleEndian.Uint64(target[2*i:])
			lo[i], hi[i] = byte(x), byte(x>>8)
			lo[i+1], hi[i+1] = byte(x>>16), byte(x>>24)
			lo[i+2], hi[i+2] = byte(x>>32), byte(x>>40)
			lo[i+3], hi[i+3] = byte(x>>48), byte(x>>56)
		}
		for ; i < n; i++ {
			lo[i], hi[i] = base[2*i]^target[2*i], base[2*i+1]^target[2*i+1]
		}
	case 4:
		p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
		i := 0
		for ; i+2 <= n; i += 2 {
			x := binary.LittleEndian.Uint64(base[4*i:]) ^ binary.LittleEndian.Uint64(target[4*i:])
			p0[i], p1[i], p2[i], p3[i] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
			p0[i+1], p1[i+1], p2[i+1], p3[i+1] = byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56)
		}
		for ; i < n; i++ {
			for p := range 4 {
				dst[p*n+i] = base[4*i+p] ^ target[4*i+p]
			}
		}
	default:
		for i := range n {
			for p := range elem {
				dst[p*n+i] = base[elem*i+p] ^ target[elem*i+p]
			}
		}
	}
}

// xorJoin is xorSplit's inverse: buf (the base bytes) ^= the interleaved
// planes.
func xorJoin(buf, planes []byte, elem int) {
	n := len(buf) / elem
	switch elem {
	case 1:
		for i := range buf {
			buf[i] ^= planes[i]
		}
	case 2:
		lo, hi := planes[:n], planes[n:2*n]
		i := 0
		for ; i+4 <= n; i += 4 {
			x := uint64(lo[i]) | uint64(hi[i])<<8 | uint64(lo[i+1])<<16 | uint64(hi[i+1])<<24 |
				uint64(lo[i+2])<<32 | uint64(hi[i+2])<<40 | uint64(lo[i+3])<<48 | uint64(hi[i+3])<<56
			if x != 0 {
				binary.LittleEndian.PutUint64(buf[2*i:], binary.LittleEndian.Uint64(buf[2*i:])^x)
			}
		}
		for ; i < n; i++ {
			buf[2*i] ^= lo[i]
			buf[2*i+1] ^= hi[i]
		}
	case 4:
		p0, p1, p2, p3 := planes[:n], planes[n:2*n], planes[2*n:3*n], planes[3*n:4*n]
		i := 0
		for ; i+2 <= n; i += 2 {
			x := uint64(p0[i]) | uint64(p1[i])<<8 | uint64(p2[i])<<16 | uint64(p3[i])<<24 |
				uint64(p0[i+1])<<32 | uint64(p1[i+1])<<40 | uint64(p2[i+1])<<48 | uint64(p3[i+1])<<56
			if x != 0 {
				binary.LittleEndian.PutUint64(buf[4*i:], binary.LittleEndian.Uint64(buf[4*i:])^x)
			}
		}
		for ; i < n; i++ {
			for p := range 4 {
				buf[4*i+p] ^= planes[p*n+i]
			}
		}
	default:
		for i := range n {
			for p := range elem {
				buf[elem*i+p] ^= planes[p*n+i]
			}
		}
	}
}
