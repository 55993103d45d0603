package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// diffEncodeNaive is diffEncode's reference: one element at a time.
func diffEncodeNaive(base, target []byte, elem int) (gaps, lo, rest []byte) {
	m := len(target) / elem
	var zs []uint32
	prev := -1
	for i := range m {
		var z uint32
		switch elem {
		case 2:
			d := int16(key16(binary.LittleEndian.Uint16(target[2*i:])) - key16(binary.LittleEndian.Uint16(base[2*i:])))
			z = uint32(uint16(d<<1) ^ uint16(d>>15))
		case 4:
			d := int32(key32(binary.LittleEndian.Uint32(target[4*i:])) - key32(binary.LittleEndian.Uint32(base[4*i:])))
			z = uint32(d<<1) ^ uint32(d>>31)
		}
		if z == 0 {
			continue
		}
		g := i - prev - 1
		prev = i
		for ; g >= 255; g -= 255 {
			gaps = append(gaps, 255)
		}
		gaps = append(gaps, byte(g))
		lo, zs = append(lo, byte(z)), append(zs, z)
	}
	for p := 1; p < elem; p++ {
		for _, z := range zs {
			rest = append(rest, byte(z>>(8*p)))
		}
	}
	return gaps, lo, rest
}

// randomChanges returns a base of n elements of elem bytes and a target
// where each element differs with probability p (by a random amount, in a
// random byte, or in every byte), so that single-lane, single-byte and
// whole-word differences all occur.
func randomChanges(rng *rand.Rand, n, elem int, p float64) (base, target []byte) {
	base, target = make([]byte, n*elem), make([]byte, n*elem)
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	copy(target, base)
	for i := range n {
		if rng.Float64() >= p {
			continue
		}
		e := target[elem*i : elem*i+elem]
		switch rng.IntN(3) {
		case 0:
			e[rng.IntN(elem)] ^= byte(1 + rng.IntN(255))
		case 1:
			e[rng.IntN(elem)] ^= 1 << rng.IntN(8)
		default:
			for j := range e {
				e[j] = byte(rng.Uint32())
			}
			e[0] = base[elem*i] ^ 1 // certainly changed
		}
	}
	return base, target
}

// TestChangedMasks: changed16 and changed32 against the per-element test,
// on densities from none to all and on single-bit differences in every
// bit position (the carry trick must see bit 15/31 and bit 0 alike).
func TestChangedMasks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, elem := range []int{2, 4} {
		check := func(b, tg []byte) {
			t.Helper()
			var want uint64
			for e := range 64 {
				if !bytes.Equal(b[elem*e:elem*e+elem], tg[elem*e:elem*e+elem]) {
					want |= 1 << e
				}
			}
			got := make([]uint64, 1)
			if elem == 2 {
				changed16(got, b, tg)
			} else {
				changed32(got, b, tg)
			}
			if got[0] != want {
				t.Fatalf("%d-byte elements: mask %064b, want %064b", elem, got[0], want)
			}
		}
		for _, p := range []float64{0, 0.01, 0.05, 0.3, 0.9, 1} {
			for range 2000 {
				check(randomChanges(rng, 64, elem, p))
			}
		}
		for bit := range 8 * elem {
			for e := range 64 {
				b := make([]byte, 64*elem)
				tg := make([]byte, 64*elem)
				tg[elem*e+bit/8] ^= 1 << (bit % 8)
				check(b, tg)
				check(tg, b)
			}
		}
	}
}

// TestDiffEncodeMatchesNaive: the blocked, branch-free diffEncode gives
// exactly the reference's streams, for bf16 and fp32, lengths that are not
// a multiple of the word (64) or block (2048) size, densities from none
// changed to all changed, and gaps past 255 (the escape) and past a block.
func TestDiffEncodeMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	var s diffScratch
	for _, elem := range []int{2, 4} {
		for _, n := range []int{0, 1, 63, 64, 65, 127, 2047, 2048, 2049, 4096 + 64 + 3, 70001} {
			for _, p := range []float64{0, 0.0005, 0.004, 0.0423, 0.5, 1} {
				base, target := randomChanges(rng, n, elem, p)
				wg, wl, wr := diffEncodeNaive(base, target, elem)
				g, l, r := diffEncode(base, target, elem, &s)
				if !bytes.Equal(g, wg) || !bytes.Equal(l, wl) || !bytes.Equal(r, wr) {
					t.Fatalf("%d-byte elements, n %d, p %g: streams differ from the reference (gaps %d/%d, lo %d/%d, rest %d/%d bytes)",
						elem, n, p, len(g), len(wg), len(l), len(wl), len(r), len(wr))
				}
			}
		}
	}
}

// TestDiffEdgeCases: delta round trips of bf16 and fp32 tensors where no
// element changed, every element changed (streams longer than one huff0
// part), sizes that are not a multiple of a word (64 elements) or a block
// (2048), changes only at the ends, and runs of unchanged elements longer
// than a gap byte holds; for DiffHuff and DiffFSE, with chunks that cut
// tensors mid-way and whole tensors in one chunk.
func TestDiffEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	type tc struct {
		name string
		edit func(i, n int, old uint32) uint32 // the target element i of n
	}
	cases := []tc{
		{"none changed", func(_, _ int, old uint32) uint32 { return old }},
		{"all changed by one", func(_, _ int, old uint32) uint32 { return old + 1 }},
		{"all changed at random", func(_, _ int, old uint32) uint32 { return old ^ (1 + rng.Uint32()>>1) }},
		{"first and last", func(i, n int, old uint32) uint32 {
			if i == 0 || i == n-1 {
				return old ^ 0x8001
			}
			return old
		}},
		{"every 1000th", func(i, _ int, old uint32) uint32 {
			if i%1000 == 999 {
				return old - 1
			}
			return old
		}},
		{"specials", func(i, _ int, _ uint32) uint32 { return specials32[i%len(specials32)] }},
	}
	sizes := []int{1, 63, 65, 2047, 2049, 300001}
	for _, c := range cases {
		for _, n := range sizes {
			gen16 := func(i int) uint16 { return uint16(rng.Uint32()) }
			gen32 := func(i int) uint32 { return rng.Uint32() }
			base := model(t, n, n, gen16, gen32)
			st, err := ParseSafetensors(base)
			if err != nil {
				t.Fatal(err)
			}
			target := append([]byte(nil), base...)
			for _, ti := range st.Tensors {
				data := target[ti.Begin:ti.End]
				switch ti.Dtype {
				case "BF16":
					for i := range n {
						binary.LittleEndian.PutUint16(data[2*i:], uint16(c.edit(i, n, uint32(binary.LittleEndian.Uint16(data[2*i:])))))
					}
				case "F32":
					for i := range n {
						binary.LittleEndian.PutUint32(data[4*i:], c.edit(i, n, binary.LittleEndian.Uint32(data[4*i:])))
					}
				}
			}
			for _, comp := range []Compressor{DiffHuff, DiffFSE} {
				for _, chunk := range []int{0, 4096 + 2} {
					t.Run(fmt.Sprintf("%s/n=%d/%s/chunk=%d", c.name, n, comp, chunk), func(t *testing.T) {
						d := roundTrip(t, base, target, DeltaOptions{Compressor: comp, ChunkBytes: chunk})
						if bytes.Equal(base, target) && chunk == 0 && len(d) > 1000 { // 3 chunks of 8 bytes, the header's bytes, the header
							t.Errorf("no change: delta of %d bytes", len(d))
						}
					})
				}
			}
		}
	}
}

// TestDeltaUnknownCompressor: a blob whose codec id this package does not
// know is refused with ErrDelta naming it, before any chunk is read.
func TestDeltaUnknownCompressor(t *testing.T) {
	base, target := []byte("0123456789abcdef"), []byte("0123456789abcdeF")
	d, err := EncodeDelta(base, target, "", "", DeltaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(d, []byte(`"diff-huff"`), []byte(`"diff-hufz"`), 1)
	if bytes.Equal(bad, d) {
		t.Fatal("the header does not name diff-huff")
	}
	err = ApplyDelta(append([]byte(nil), base...), bad, 1)
	if !errors.Is(err, ErrDelta) || !strings.Contains(err.Error(), `unknown compressor "diff-hufz"`) {
		t.Errorf("unknown codec: err %v, want ErrDelta naming it", err)
	}
	if _, err := EncodeDelta(base, target, "", "", DeltaOptions{Compressor: "diff-hufz"}); !errors.Is(err, ErrDelta) {
		t.Errorf("encode with an unknown codec: err %v, want ErrDelta", err)
	}
}
