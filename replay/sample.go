package replay

import "math/rand/v2"

// Pick is one question drawn for replay.
type Pick struct {
	QuestionID string
	Bucket     int // its bucket, its latest k (ALGORITHM.md E3)
}

// Sample draws n_exp = min(n, Len()) distinct pool questions for replay
// (ALGORITHM.md E6), using only rng for randomness; the pool is not changed.
// The caller computes n = floor(rho * B).
//
// SelectGaussian: bucket k gets weight exp(-(k-Mu)^2 / (2 Sigma^2)),
// normalised over non-empty buckets; per-bucket counts are drawn from the
// multinomial; a bucket asked for more than it holds gives all it has and each
// excess draw is redrawn, one at a time, among the buckets that still have
// spare questions, proportional to their weights; inside a bucket questions are
// drawn uniformly without replacement. Picks come bucket by bucket (k
// ascending), in draw order inside a bucket.
//
// SelectUniform: n_exp questions uniformly without replacement from the whole
// pool, in draw order.
func (p *Pool) Sample(n int, rng *rand.Rand) []Pick {
	total := p.Len()
	n = min(n, total)
	if n <= 0 {
		return nil
	}
	out := make([]Pick, 0, n)
	if p.cfg.Selection == SelectUniform {
		return p.sampleUniform(out, n, total, rng)
	}
	counts := p.bucketCounts(n, rng)
	for k := 1; k < p.cfg.K; k++ {
		if counts[k] == 0 {
			continue
		}
		b := p.buckets[k]
		var d distinct
		for range counts[k] {
			out = append(out, Pick{QuestionID: b[d.next(len(b), rng)].id, Bucket: k})
		}
	}
	return out
}

// bucketCounts draws how many questions each bucket gives (ALGORITHM.md E6):
// multinomial over the normalised Gaussian weights, then clip and redistribute.
// 1 <= n <= Len().
func (p *Pool) bucketCounts(n int, rng *rand.Rand) []int {
	K := p.cfg.K
	w := p.cfg.relativeWeights(func(k int) bool { return len(p.buckets[k]) > 0 })
	counts := make([]int, K)
	cum := make([]float64, K) // cum[k] = w[1] + ... + w[k]
	for k := 1; k < K; k++ {
		cum[k] = cum[k-1] + w[k]
	}
	for range n {
		u := rng.Float64() * cum[K-1]
		k := 1
		for k < K-1 && (u >= cum[k] || w[k] == 0) {
			k++
		}
		for w[k] == 0 { // rounding ran past the last non-empty bucket
			k--
		}
		counts[k]++
	}
	excess := 0
	for k := 1; k < K; k++ {
		if s := len(p.buckets[k]); counts[k] > s {
			excess += counts[k] - s
			counts[k] = s
		}
	}
	spare := func(k int) bool { return counts[k] < len(p.buckets[k]) }
	for ; excess > 0; excess-- {
		counts[drawBucket(w, spare, rng)]++
	}
	return counts
}

// drawBucket draws k >= 1 with probability proportional to w[k] among the k
// with ok(k). Should every such weight have underflowed to 0 (possible only
// for the spare buckets of a huge K far from Mu) it returns the first k with
// ok(k), so that redistribution always terminates.
func drawBucket(w []float64, ok func(int) bool, rng *rand.Rand) int {
	var sum float64
	last, first := -1, -1
	for k, x := range w {
		if x > 0 && ok(k) {
			sum += x
			last = k
		}
		if first < 0 && k > 0 && ok(k) {
			first = k
		}
	}
	if last < 0 {
		return first
	}
	u := rng.Float64() * sum
	for k, x := range w {
		if x > 0 && ok(k) {
			if u < x {
				return k
			}
			u -= x
		}
	}
	return last // rounding left u just above the last weight
}

// sampleUniform draws n distinct questions uniformly from the whole pool
// (the "no question selection" ablation), treating the buckets as one array.
func (p *Pool) sampleUniform(out []Pick, n, total int, rng *rand.Rand) []Pick {
	var d distinct
	for range n {
		i := d.next(total, rng)
		for k := 1; k < p.cfg.K; k++ {
			if b := p.buckets[k]; i < len(b) {
				out = append(out, Pick{QuestionID: b[i].id, Bucket: k})
				break
			} else {
				i -= len(b)
			}
		}
	}
	return out
}

// distinct draws indices of [0, size) uniformly without replacement by a
// Fisher-Yates shuffle whose swaps are remembered on the side instead of
// applied to the array, so the pool stays untouched and each draw costs O(1)
// whatever size is. The first draws keep their swaps in a small array
// (cheaper than a map at the usual 64 picks), later ones in a map.
type distinct struct {
	drawn int
	small [smallSwaps]swap
	nSm   int
	swaps map[int]int // position -> value, for positions whose value moved
}

const smallSwaps = 64

type swap struct{ pos, val int }

func (d *distinct) at(i int) int {
	for _, s := range d.small[:d.nSm] {
		if s.pos == i {
			return s.val
		}
	}
	if v, ok := d.swaps[i]; ok {
		return v
	}
	return i
}

func (d *distinct) set(i, v int) {
	for j := range d.small[:d.nSm] {
		if d.small[j].pos == i {
			d.small[j].val = v
			return
		}
	}
	if d.nSm < smallSwaps {
		d.small[d.nSm] = swap{i, v}
		d.nSm++
		return
	}
	if d.swaps == nil {
		d.swaps = make(map[int]int)
	}
	d.swaps[i] = v
}

// next returns the next distinct index; at most size calls per distinct.
func (d *distinct) next(size int, rng *rand.Rand) int {
	i := d.drawn
	j := i + rng.IntN(size-i)
	vi, vj := d.at(i), d.at(j)
	d.set(j, vi)
	d.drawn++
	return vj
}
