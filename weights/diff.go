package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/fse"
)

// The DiffFSE chunk body for elements of 2 or 4 bytes: the uint32 LE count
// k of changed elements and the uint32 LE length of the gap stream, then
// three streams: the gaps between changed elements, the low bytes of the k
// changed elements' zigzagged key differences, and their other bytes (plane
// by plane). The first two are FSE-coded, the third zstd (it is almost all
// zero); each
// stream is a kind byte (streamRaw, streamRLE, streamFSE or streamZstd), a
// uint32 LE length and the bytes. Unchanged runs of four elements are
// skipped with one 8-byte compare, so the cost follows the changes, not the
// file. Other element sizes (the header bytes, 1- and 8-byte dtypes) use
// XOR planes and zstd.
const (
	streamRaw  = 0
	streamRLE  = 1
	streamFSE  = 2
	streamZstd = 3
)

// key16 maps bf16/fp16 bits to an integer order within each sign: flipping
// the magnitude bits of negatives makes a step of one ulp a step of one in
// the key on both sides of zero. It is its own inverse (bit 15 is kept).
func key16(v uint16) uint16 { return v ^ (v>>15)*0x7fff }

func key32(v uint32) uint32 { return v ^ (v>>31)*0x7fffffff }

// laneMask returns bit j set when 16-bit lane j of x is non-zero, without
// branches: adding 0x7fff to the low 15 bits carries into bit 15 when any
// is set, OR the lane's own bit 15; a multiply then gathers the four bits
// 15, 31, 47, 63 into bits 45..48.
func laneMask(x uint64) uint16 {
	const low, high = 0x7fff7fff7fff7fff, 0x8000800080008000
	nz := (((x & low) + low) | x) & high
	return uint16((nz >> 15) * (1 + 1<<15 + 1<<30 + 1<<45) >> 45 & 0xf)
}

// diffEncode gathers the changed elements of a chunk: gaps (the number of
// unchanged elements before each changed one, as bytes: 255 means "255 more
// and continue"), and the zigzag(key(target) - key(base)) of each changed
// element, low bytes in lo and the other bytes plane by plane in rest.
// Exact for every bit pattern (NaN, infinities, signed zeros): the key is a
// bijection and the difference wraps.
func diffEncode(base, target []byte, elem int, gaps, lo, rest []byte) (_, _, _ []byte) {
	m := len(target) / elem
	gaps, lo, rest = gaps[:0], lo[:0], rest[:0]
	prev := -1
	gap := func(i int) {
		g := i - prev - 1
		for g >= 255 {
			gaps = append(gaps, 255)
			g -= 255
		}
		gaps = append(gaps, byte(g))
		prev = i
	}
	switch elem {
	case 2:
		i := 0
		var as, xs [4]uint64
		for ; i+16 <= m; i += 16 {
			// 16 elements per round. A branch-free mask says which lanes
			// changed; the loop then visits only those (at lr 1e-6 about
			// half the rounds have none, and a changed round has one or two):
			// branches follow the changes, not the lanes.
			bb, tb := base[2*i:2*i+32:2*i+32], target[2*i:2*i+32:2*i+32]
			as[0], as[1], as[2], as[3] = binary.LittleEndian.Uint64(bb), binary.LittleEndian.Uint64(bb[8:]), binary.LittleEndian.Uint64(bb[16:]), binary.LittleEndian.Uint64(bb[24:])
			xs[0] = as[0] ^ binary.LittleEndian.Uint64(tb)
			xs[1] = as[1] ^ binary.LittleEndian.Uint64(tb[8:])
			xs[2] = as[2] ^ binary.LittleEndian.Uint64(tb[16:])
			xs[3] = as[3] ^ binary.LittleEndian.Uint64(tb[24:])
			mask := laneMask(xs[0]) | laneMask(xs[1])<<4 | laneMask(xs[2])<<8 | laneMask(xs[3])<<12
			for mask != 0 {
				l := bits.TrailingZeros16(mask)
				mask &= mask - 1
				q, j := l>>2, l&3
				va := uint16(as[q&3] >> (16 * j))
				d := int16(key16(va^uint16(xs[q&3]>>(16*j))) - key16(va))
				z := uint16(d<<1) ^ uint16(d>>15)
				e := i + l
				if g := e - prev - 1; g < 255 {
					gaps = append(gaps, byte(g))
					prev = e
				} else {
					gap(e)
				}
				lo, rest = append(lo, byte(z)), append(rest, byte(z>>8))
			}
		}
		for ; i < m; i++ {
			if d := int16(key16(binary.LittleEndian.Uint16(target[2*i:])) - key16(binary.LittleEndian.Uint16(base[2*i:]))); d != 0 {
				z := uint16(d<<1) ^ uint16(d>>15)
				gap(i)
				lo, rest = append(lo, byte(z)), append(rest, byte(z>>8))
			}
		}
		return gaps, lo, rest
	case 4:
		var zs []uint32
		for i := range m {
			a, b := binary.LittleEndian.Uint32(base[4*i:]), binary.LittleEndian.Uint32(target[4*i:])
			if a == b {
				continue
			}
			d := int32(key32(b) - key32(a))
			z := uint32(d<<1) ^ uint32(d>>31)
			gap(i)
			lo, zs = append(lo, byte(z)), append(zs, z)
		}
		for p := 1; p < 4; p++ {
			for _, z := range zs {
				rest = append(rest, byte(z>>(8*p)))
			}
		}
		return gaps, lo, rest
	}
	panic(fmt.Sprintf("weights: diffEncode of %d-byte elements", elem))
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

// putStream appends one stream: FSE when it pays, RLE for one repeated
// byte, zstd when asked, else the bytes as they are.
func (c *compressor) putStream(out, data []byte, useZstd bool) []byte {
	kind, enc := byte(streamRaw), data
	if useZstd && len(data) > 0 {
		kind, enc = streamZstd, c.z.EncodeAll(data, nil)
	} else if e, err := fse.Compress(data, &c.fse); err == nil {
		kind, enc = streamFSE, e
	} else if errors.Is(err, fse.ErrUseRLE) {
		kind, enc = streamRLE, data[:1]
	}
	out = append(out, kind)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(enc)))
	return append(out, enc...)
}

// getStream reads one stream of want bytes from body into dst (reused);
// it returns the decoded bytes and the rest of body.
func (d *decompressor) getStream(body, dst []byte, want int) ([]byte, []byte, error) {
	if len(body) < 5 {
		return nil, nil, fmt.Errorf("stream header cut short")
	}
	kind, ln := body[0], int(binary.LittleEndian.Uint32(body[1:]))
	if ln > len(body)-5 {
		return nil, nil, fmt.Errorf("stream of %d bytes in %d", ln, len(body)-5)
	}
	enc, body := body[5:5+ln], body[5+ln:]
	if cap(dst) < want {
		dst = make([]byte, 0, want)
	}
	dst = dst[:0]
	var err error
	switch kind {
	case streamRaw:
		dst = append(dst, enc...)
	case streamRLE:
		if ln != 1 {
			return nil, nil, fmt.Errorf("RLE stream of %d bytes", ln)
		}
		dst = dst[:want]
		for i := range dst {
			dst[i] = enc[0]
		}
	case streamFSE:
		d.fse.DecompressLimit, d.fse.Out = want, dst
		if dst, err = fse.Decompress(enc, &d.fse); err != nil {
			return nil, nil, fmt.Errorf("fse: %w", err)
		}
		d.fse.Out = nil // dst stays the caller's
	case streamZstd:
		if dst, err = d.z.DecodeAll(enc, dst); err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("stream kind %d", kind)
	}
	if len(dst) != want {
		return nil, nil, fmt.Errorf("stream decoded to %d bytes, want %d", len(dst), want)
	}
	return dst, body, nil
}

// encodeChunk transforms and compresses one chunk; scratch has the chunk's
// length. The result is a new slice.
func (c *compressor) encodeChunk(scratch, base, target []byte, elem int) []byte {
	if c.kind != DiffFSE || (elem != 2 && elem != 4) {
		xorSplit(scratch, base, target, elem)
		return c.compress(scratch)
	}
	gaps, lo, rest := diffEncode(base, target, elem, c.gaps, scratch[:0], c.rest)
	c.gaps, c.rest = gaps[:0], rest[:0]
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
// and becomes the target's); scratch is reused and returned.
func (d *decompressor) decodeChunk(buf, body, scratch []byte, elem int) ([]byte, error) {
	n := len(buf)
	if d.kind != DiffFSE || (elem != 2 && elem != 4) {
		var err error
		if scratch, err = d.decompress(body, scratch[:0], n); err != nil {
			return scratch, err
		}
		if len(scratch) != n {
			return scratch, fmt.Errorf("decompressed to %d bytes, want %d", len(scratch), n)
		}
		xorJoin(buf, scratch, elem)
		return scratch, nil
	}
	if len(body) < 8 {
		return scratch, fmt.Errorf("body of %d bytes", len(body))
	}
	m := n / elem
	k, ng := int(binary.LittleEndian.Uint32(body)), int(binary.LittleEndian.Uint32(body[4:]))
	if k > m || ng < k || ng > k+m/255+1 {
		return scratch, fmt.Errorf("%d changes and %d gap bytes in %d elements", k, ng, m)
	}
	body = body[8:]
	if k == 0 {
		if len(body) != 0 {
			return scratch, fmt.Errorf("no changes but %d more bytes", len(body))
		}
		return scratch, nil
	}
	var gaps, lo, rest []byte
	var err error
	if gaps, body, err = d.getStream(body, d.gaps, ng); err != nil {
		return scratch, fmt.Errorf("gaps: %w", err)
	}
	d.gaps = gaps
	if lo, body, err = d.getStream(body, scratch, k); err != nil {
		return scratch, fmt.Errorf("low bytes: %w", err)
	}
	if rest, body, err = d.getStream(body, d.rest, k*(elem-1)); err != nil {
		return lo, fmt.Errorf("high bytes: %w", err)
	}
	d.rest = rest
	if len(body) != 0 {
		return lo, fmt.Errorf("%d bytes after the streams", len(body))
	}
	return lo, diffApply(buf, elem, gaps, lo, rest)
}
