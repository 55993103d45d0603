package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// The chunk body of DiffHuff and DiffFSE for elements of 2 or 4 bytes:
// the uint32 LE count k of changed elements and the uint32 LE length of the
// gap stream, then three streams: the gaps between changed elements, the
// low bytes of the k changed elements' zigzagged key differences, and their
// other bytes (plane by plane). A stream is coded as parts, each a kind
// byte (streamRaw, streamRLE, streamFSE, streamZstd or streamHuff), a
// uint32 LE length and the bytes. DiffHuff cuts every stream into parts of
// pieceBytes decoded bytes (the last shorter; huff0 codes at most 256 KiB
// - 1 per block), codes the gaps and the low bytes with huff0 (4 streams)
// and the other bytes, almost all zero, with zstd. DiffFSE, the previous
// format, still decoded and offered for comparison, has one part per
// stream, FSE for the first two. Other element sizes (the header bytes, 1-
// and 8-byte dtypes) use XOR planes and zstd.
const (
	streamRaw  = 0
	streamRLE  = 1
	streamFSE  = 2 // DiffFSE only
	streamZstd = 3
	streamHuff = 4 // DiffHuff only
)

// pieceBytes is the decoded size of one part of a DiffHuff stream.
const pieceBytes = 1 << 17

// isDiff: the compressor codes elements of 2 and 4 bytes as key
// differences (the rest as XOR planes with zstd).
func isDiff(k Compressor) bool { return k == DiffHuff || k == DiffFSE }

// key16 maps bf16/fp16 bits to an integer order within each sign: flipping
// the magnitude bits of negatives makes a step of one ulp a step of one in
// the key on both sides of zero. It is its own inverse (bit 15 is kept).
func key16(v uint16) uint16 { return v ^ (v>>15)*0x7fff }

func key32(v uint32) uint32 { return v ^ (v>>31)*0x7fffffff }

// changed16 sets masks[w] bit e when element 64w+e of the bf16/fp16
// elements in b and t differs (len(b) = len(t) = 128 len(masks)), without
// branches. Per 8-byte word of four lanes, adding 0x7fff to each lane's
// low 15 bits carries into bit 15 when any is set, OR the lane's own bit
// 15 (nonZero16).
func changed16(masks []uint64, b, t []byte) {
	for w := range masks {
		b, t := b[128*w:128*w+128:128*w+128], t[128*w:128*w+128:128*w+128]
		masks[w] = nonZero16(binary.LittleEndian.Uint64(b[0:])^binary.LittleEndian.Uint64(t[0:]),
			binary.LittleEndian.Uint64(b[8:])^binary.LittleEndian.Uint64(t[8:]),
			binary.LittleEndian.Uint64(b[16:])^binary.LittleEndian.Uint64(t[16:]),
			binary.LittleEndian.Uint64(b[24:])^binary.LittleEndian.Uint64(t[24:])) |
			nonZero16(binary.LittleEndian.Uint64(b[32:])^binary.LittleEndian.Uint64(t[32:]),
				binary.LittleEndian.Uint64(b[40:])^binary.LittleEndian.Uint64(t[40:]),
				binary.LittleEndian.Uint64(b[48:])^binary.LittleEndian.Uint64(t[48:]),
				binary.LittleEndian.Uint64(b[56:])^binary.LittleEndian.Uint64(t[56:]))<<16 |
			nonZero16(binary.LittleEndian.Uint64(b[64:])^binary.LittleEndian.Uint64(t[64:]),
				binary.LittleEndian.Uint64(b[72:])^binary.LittleEndian.Uint64(t[72:]),
				binary.LittleEndian.Uint64(b[80:])^binary.LittleEndian.Uint64(t[80:]),
				binary.LittleEndian.Uint64(b[88:])^binary.LittleEndian.Uint64(t[88:]))<<32 |
			nonZero16(binary.LittleEndian.Uint64(b[96:])^binary.LittleEndian.Uint64(t[96:]),
				binary.LittleEndian.Uint64(b[104:])^binary.LittleEndian.Uint64(t[104:]),
				binary.LittleEndian.Uint64(b[112:])^binary.LittleEndian.Uint64(t[112:]),
				binary.LittleEndian.Uint64(b[120:])^binary.LittleEndian.Uint64(t[120:]))<<48
	}
}

// nonZero16 is the 16-bit lane mask of four words (bit 4q+j: lane j of xq
// is non-zero), changed16's step: the four words' lane flags (bit 16j+15)
// are shifted so that word q, lane j sits at bit 16j+4q, and one multiply
// by 2^48+2^33+2^18+2^3 moves lane j's group right by 15j into bits 48..63
// in element order (4q+j). No two partial products share a bit, so nothing
// carries (TestChangedMasks checks it against the per-element test).
func nonZero16(x0, x1, x2, x3 uint64) uint64 {
	const low, high = 0x7fff7fff7fff7fff, 0x8000800080008000
	n0 := (((x0 & low) + low) | x0) & high
	n1 := (((x1 & low) + low) | x1) & high
	n2 := (((x2 & low) + low) | x2) & high
	n3 := (((x3 & low) + low) | x3) & high
	return (n0>>15 | n1>>11 | n2>>7 | n3>>3) * (1<<48 | 1<<33 | 1<<18 | 1<<3) >> 48
}

// changed32 is changed16 for fp32 elements (len(b) = 256 len(masks)): per
// word two 32-bit lanes, four words' flags at bits 32j+2q, one multiply by
// 2^56+2^25 gathering them into bits 56..63 in element order (2q+j).
func changed32(masks []uint64, b, t []byte) {
	const low, high = 0x7fffffff7fffffff, 0x8000000080000000
	for w := range masks {
		b, t := b[256*w:256*w+256:256*w+256], t[256*w:256*w+256:256*w+256]
		var mask uint64
		for g := 0; g < 8; g++ {
			bb, tb := b[32*g:32*g+32:32*g+32], t[32*g:32*g+32:32*g+32]
			x0 := binary.LittleEndian.Uint64(bb) ^ binary.LittleEndian.Uint64(tb)
			x1 := binary.LittleEndian.Uint64(bb[8:]) ^ binary.LittleEndian.Uint64(tb[8:])
			x2 := binary.LittleEndian.Uint64(bb[16:]) ^ binary.LittleEndian.Uint64(tb[16:])
			x3 := binary.LittleEndian.Uint64(bb[24:]) ^ binary.LittleEndian.Uint64(tb[24:])
			n0 := (((x0 & low) + low) | x0) & high
			n1 := (((x1 & low) + low) | x1) & high
			n2 := (((x2 & low) + low) | x2) & high
			n3 := (((x3 & low) + low) | x3) & high
			mask |= ((n0>>31 | n1>>29 | n2>>27 | n3>>25) * (1<<56 | 1<<25) >> 56) << (8 * g)
		}
		masks[w] = mask
	}
}

// flatten writes the indices 64w+e of the set bits e of masks[w], in
// order, to pos (len >= 64 len(masks) + 64) and returns their number. Per
// word the first eight are written whatever the count (a word of 64
// elements has two or three changes at lr 1e-6), so the loop has no branch
// that depends on the data; the rare word with more takes the loop after
// them.
func flatten(pos []uint16, masks []uint64) int {
	np := 0
	for w, mask := range masks {
		n := bits.OnesCount64(mask)
		p := pos[np : np+64 : np+64]
		off := uint16(64 * w)
		p[0] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[1] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[2] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[3] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[4] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[5] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[6] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		p[7] = off + uint16(bits.TrailingZeros64(mask))
		mask &= mask - 1
		for j := 8; mask != 0; j++ {
			p[j&63] = off + uint16(bits.TrailingZeros64(mask))
			mask &= mask - 1
		}
		np += n
	}
	return np
}

// appendGap appends gap g: as many 255s as it holds, then the rest.
func appendGap(gaps []byte, g int) []byte {
	for ; g >= 255; g -= 255 {
		gaps = append(gaps, 255)
	}
	return append(gaps, byte(g))
}

// putGap is appendGap with the common gap, under 255, kept inline in the
// coding loops.
func putGap(gaps []byte, g int) []byte {
	if g < 255 {
		return append(gaps, byte(g))
	}
	return appendGap(gaps, g)
}

// blockElems elements have their change positions gathered (dense,
// branch-free) before the changes are coded (one loop over the positions):
// the positions stay in L1, and the coding loop's exit is mispredicted
// once per block instead of once per word.
const blockElems = 2048

// diffScratch is diffEncode's reusable state.
type diffScratch struct {
	masks          [blockElems / 64]uint64
	pos            [blockElems + 64]uint16
	gaps, lo, rest []byte
	zs             []uint32
}

// diffEncode gathers the changed elements of a chunk: gaps (the number of
// unchanged elements before each changed one, as bytes: 255 means "255 more
// and continue"), and the zigzag(key(target) - key(base)) of each changed
// element, low bytes in lo and the other bytes plane by plane in rest.
// Exact for every bit pattern (NaN, infinities, signed zeros): the key is a
// bijection and the difference wraps. Unchanged elements cost only their
// share of the 64-element masks; the work per changed element has no
// data-dependent branch but the rare gap of 255 or more. The slices are
// s's, valid until its next use.
func diffEncode(base, target []byte, elem int, s *diffScratch) (gaps, lo, rest []byte) {
	if elem != 2 && elem != 4 {
		panic(fmt.Sprintf("weights: diffEncode of %d-byte elements", elem))
	}
	m := len(target) / elem
	gaps, lo, rest, zs := s.gaps[:0], s.lo[:0], s.rest[:0], s.zs[:0]
	prev := -1
	i := 0
	for i+64 <= m {
		n := min(blockElems, (m-i)&^63) // whole words of 64 elements
		np := 0
		switch elem {
		case 2:
			b, t := base[2*i:2*(i+n)], target[2*i:2*(i+n)]
			changed16(s.masks[:n/64], b, t)
			np = flatten(s.pos[:], s.masks[:n/64])
			k := len(lo)
			lo, rest = slices.Grow(lo, np)[:k+np], slices.Grow(rest, np)[:k+np]
			gaps = slices.Grow(gaps, np)
			dl, dr := lo[k:k+np:k+np], rest[k:k+np:k+np]
			for j, p := range s.pos[:np] {
				e := int(p) & (blockElems - 1)
				d := int16(key16(binary.LittleEndian.Uint16(t[2*e:])) - key16(binary.LittleEndian.Uint16(b[2*e:])))
				z := uint16(d<<1) ^ uint16(d>>15)
				gaps, prev = putGap(gaps, i+e-prev-1), i+e
				dl[j], dr[j] = byte(z), byte(z>>8)
			}
		case 4:
			b, t := base[4*i:4*(i+n)], target[4*i:4*(i+n)]
			changed32(s.masks[:n/64], b, t)
			np = flatten(s.pos[:], s.masks[:n/64])
			k := len(lo)
			lo, zs = slices.Grow(lo, np)[:k+np], slices.Grow(zs, np)[:k+np]
			gaps = slices.Grow(gaps, np)
			dl, dz := lo[k:k+np:k+np], zs[k:k+np:k+np]
			for j, p := range s.pos[:np] {
				e := int(p) & (blockElems - 1)
				d := int32(key32(binary.LittleEndian.Uint32(t[4*e:])) - key32(binary.LittleEndian.Uint32(b[4*e:])))
				z := uint32(d<<1) ^ uint32(d>>31)
				gaps, prev = putGap(gaps, i+e-prev-1), i+e
				dl[j], dz[j] = byte(z), z
			}
		}
		i += n
	}
	for ; i < m; i++ { // fewer than 64 elements
		switch elem {
		case 2:
			if d := int16(key16(binary.LittleEndian.Uint16(target[2*i:])) - key16(binary.LittleEndian.Uint16(base[2*i:]))); d != 0 {
				z := uint16(d<<1) ^ uint16(d>>15)
				gaps = appendGap(gaps, i-prev-1)
				prev = i
				lo, rest = append(lo, byte(z)), append(rest, byte(z>>8))
			}
		case 4:
			if d := int32(key32(binary.LittleEndian.Uint32(target[4*i:])) - key32(binary.LittleEndian.Uint32(base[4*i:]))); d != 0 {
				z := uint32(d<<1) ^ uint32(d>>31)
				gaps = appendGap(gaps, i-prev-1)
				prev = i
				lo, zs = append(lo, byte(z)), append(zs, z)
			}
		}
	}
	if elem == 4 {
		for p := 1; p < 4; p++ {
			for _, z := range zs {
				rest = append(rest, byte(z>>(8*p)))
			}
		}
	}
	s.gaps, s.lo, s.rest, s.zs = gaps, lo, rest, zs
	return gaps, lo, rest
}

// diffApply adds the k = len(lo) changed elements back: buf holds the base
// and becomes the target. It reports gaps that run past the chunk or name
// more or fewer elements than lo holds.
func diffApply(buf []byte, elem int, gaps, lo, rest []byte) error {
	m, k := len(buf)/elem, len(lo)
	i, v := -1, 0
	for gi := 0; gi < len(gaps); gi++ {
		g := int(gaps[gi])
		for gaps[gi] == 255 {
			if gi++; gi == len(gaps) {
				return fmt.Errorf("gap stream ends inside a gap")
			}
			g += int(gaps[gi])
		}
		i += g + 1
		if i >= m || v >= k {
			return fmt.Errorf("gaps name element %d (change %d) of %d elements, %d changes", i, v, m, k)
		}
		switch elem {
		case 2:
			z := uint16(lo[v]) | uint16(rest[v])<<8
			d := (z >> 1) ^ -(z & 1)
			binary.LittleEndian.PutUint16(buf[2*i:], key16(key16(binary.LittleEndian.Uint16(buf[2*i:]))+d))
		case 4:
			z := uint32(lo[v]) | uint32(rest[v])<<8 | uint32(rest[k+v])<<16 | uint32(rest[2*k+v])<<24
			d := (z >> 1) ^ -(z & 1)
			binary.LittleEndian.PutUint32(buf[4*i:], key32(key32(binary.LittleEndian.Uint32(buf[4*i:]))+d))
		}
		v++
	}
	if v != k {
		return fmt.Errorf("gaps name %d changes, the chunk holds %d", v, k)
	}
	return nil
}

// putStream appends one stream. DiffHuff: parts of pieceBytes, huff0 (or
// zstd when asked) where it pays, RLE for one repeated byte, else the bytes
// as they are. DiffFSE: one part, FSE in place of huff0.
func (c *compressor) putStream(out, data []byte, useZstd bool) []byte {
	if c.kind == DiffFSE {
		return c.putPart(out, data, useZstd)
	}
	for len(data) > pieceBytes {
		out = c.putPart(out, data[:pieceBytes], useZstd)
		data = data[pieceBytes:]
	}
	return c.putPart(out, data, useZstd)
}

func (c *compressor) putPart(out, data []byte, useZstd bool) []byte {
	kind, enc := byte(streamRaw), data
	var err error
	switch {
	case useZstd:
		if len(data) > 0 {
			kind, enc = streamZstd, c.z.EncodeAll(data, c.zout[:0])
			c.zout = enc[:0]
		}
	case c.kind == DiffFSE:
		if enc, err = fse.Compress(data, &c.fse); err == nil {
			kind = streamFSE
		}
	default:
		if enc, _, err = huff0.Compress4X(data, &c.huff); err == nil {
			kind = streamHuff
		}
	}
	if errors.Is(err, fse.ErrUseRLE) || errors.Is(err, huff0.ErrUseRLE) {
		kind, enc = streamRLE, data[:1]
	} else if err != nil { // incompressible
		kind, enc = streamRaw, data
	}
	out = append(out, kind)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(enc)))
	return append(out, enc...)
}

// getStream reads one stream of want bytes from body into dst (reused);
// it returns the decoded bytes and the rest of body.
func (d *decompressor) getStream(body, dst []byte, want int) ([]byte, []byte, error) {
	if cap(dst) < want {
		dst = make([]byte, 0, want)
	}
	dst = dst[:0]
	if d.kind == DiffFSE {
		return d.getPart(body, dst, want)
	}
	for {
		var err error
		if dst, body, err = d.getPart(body, dst, min(pieceBytes, want-len(dst))); err != nil {
			return nil, nil, err
		}
		if len(dst) == want {
			return dst, body, nil
		}
	}
}

// getPart appends one part of n decoded bytes to dst (which has the
// capacity) and returns it and the rest of body.
func (d *decompressor) getPart(body, dst []byte, n int) ([]byte, []byte, error) {
	if len(body) < 5 {
		return nil, nil, fmt.Errorf("stream header cut short")
	}
	kind, ln := body[0], int(binary.LittleEndian.Uint32(body[1:]))
	if ln > len(body)-5 {
		return nil, nil, fmt.Errorf("stream of %d bytes in %d", ln, len(body)-5)
	}
	enc, body := body[5:5+ln], body[5+ln:]
	at := len(dst)
	part := dst[at : at : at+n] // the decoders append to part within dst
	var err error
	switch {
	case kind == streamRaw:
		part = append(part, enc...)
	case kind == streamRLE:
		if ln != 1 {
			return nil, nil, fmt.Errorf("RLE stream of %d bytes", ln)
		}
		part = part[:n]
		for i := range part {
			part[i] = enc[0]
		}
	case kind == streamFSE && d.kind == DiffFSE:
		d.fse.DecompressLimit, d.fse.Out = n, part
		if part, err = fse.Decompress(enc, &d.fse); err != nil {
			return nil, nil, fmt.Errorf("fse: %w", err)
		}
		d.fse.Out = nil // part stays the caller's
	case kind == streamHuff && d.kind == DiffHuff:
		s, rem, err := huff0.ReadTable(enc, &d.huff)
		if err != nil {
			return nil, nil, fmt.Errorf("huff0 table: %w", err)
		}
		if part, err = s.Decoder().Decompress4X(part, rem); err != nil {
			return nil, nil, fmt.Errorf("huff0: %w", err)
		}
	case kind == streamZstd:
		if part, err = d.z.DecodeAll(enc, part); err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("stream kind %d", kind)
	}
	if len(part) != n {
		return nil, nil, fmt.Errorf("stream part decoded to %d bytes, want %d", len(part), n)
	}
	dst = dst[:at+n]
	if n > 0 && &part[0] != &dst[at] { // a decoder that did not decode in place
		copy(dst[at:], part)
	}
	return dst, body, nil
}

// encodeChunk transforms and compresses one chunk. The result is a new
// slice.
func (c *compressor) encodeChunk(base, target []byte, elem int) []byte {
	if !isDiff(c.kind) || (elem != 2 && elem != 4) {
		c.planes = slices.Grow(c.planes[:0], len(target))[:len(target)]
		xorSplit(c.planes, base, target, elem)
		return c.compress(c.planes)
	}
	gaps, lo, rest := diffEncode(base, target, elem, &c.diff)
	out := make([]byte, 0, 64+len(lo)/2)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(lo)))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(gaps)))
	if len(lo) == 0 {
		return out
	}
	out = c.putStream(out, gaps, false)
	out = c.putStream(out, lo, false)
	return c.putStream(out, rest, true)
}

// decodeChunk decodes one chunk body into buf (which holds the base bytes
// and becomes the target's).
func (d *decompressor) decodeChunk(buf, body []byte, elem int) error {
	n := len(buf)
	if !isDiff(d.kind) || (elem != 2 && elem != 4) {
		planes, err := d.decompress(body, d.planes[:0], n)
		if err != nil {
			return err
		}
		d.planes = planes
		if len(planes) != n {
			return fmt.Errorf("decompressed to %d bytes, want %d", len(planes), n)
		}
		xorJoin(buf, planes, elem)
		return nil
	}
	if len(body) < 8 {
		return fmt.Errorf("body of %d bytes", len(body))
	}
	m := n / elem
	k, ng := int(binary.LittleEndian.Uint32(body)), int(binary.LittleEndian.Uint32(body[4:]))
	if k > m || ng < k || ng > k+m/255+1 {
		return fmt.Errorf("%d changes and %d gap bytes in %d elements", k, ng, m)
	}
	body = body[8:]
	if k == 0 {
		if len(body) != 0 {
			return fmt.Errorf("no changes but %d more bytes", len(body))
		}
		return nil
	}
	var gaps, lo, rest []byte
	var err error
	if gaps, body, err = d.getStream(body, d.gaps, ng); err != nil {
		return fmt.Errorf("gaps: %w", err)
	}
	d.gaps = gaps
	if lo, body, err = d.getStream(body, d.lo, k); err != nil {
		return fmt.Errorf("low bytes: %w", err)
	}
	d.lo = lo
	if rest, body, err = d.getStream(body, d.rest, k*(elem-1)); err != nil {
		return fmt.Errorf("high bytes: %w", err)
	}
	d.rest = rest
	if len(body) != 0 {
		return fmt.Errorf("%d bytes after the streams", len(body))
	}
	return diffApply(buf, elem, gaps, lo, rest)
}
