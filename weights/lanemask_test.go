package weights

import (
	"math/rand/v2"
	"testing"
)

// TestLaneMask against the obvious per-lane test, on random words with
// random lanes zeroed.
func TestLaneMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 100000 {
		x := rng.Uint64()
		for j := range 4 {
			switch rng.IntN(4) {
			case 0:
				x &^= 0xffff << (16 * j)
			case 1:
				x = x&^(0xffff<<(16*j)) | uint64(1)<<(16*j+rng.IntN(16))
			}
		}
		var want uint16
		for j := range 4 {
			if uint16(x>>(16*j)) != 0 {
				want |= 1 << j
			}
		}
		if got := laneMask(x); got != want {
			t.Fatalf("laneMask(%#x) = %04b, want %04b", x, got, want)
		}
	}
}
