package replay

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// ALGORITHM.md E6: with K = 8, mu = 4, sigma = 1 and all seven buckets
// non-empty, p(k = 1..7) = 0.004, 0.054, 0.242, 0.399, 0.242, 0.054, 0.004
// to 3 decimals.
func TestE6BucketProbabilitiesK8(t *testing.T) {
	cfg := DefaultConfig()
	p := cfg.BucketProbabilities([]int{0, 1, 1, 1, 1, 1, 1, 1})
	want := []float64{0, 0.004, 0.054, 0.242, 0.399, 0.242, 0.054, 0.004}
	var sum float64
	for k := range want {
		if got := math.Round(p[k]*1000) / 1000; got != want[k] {
			t.Errorf("p(k=%d) = %.5f, rounds to %.3f, want %.3f", k, p[k], got, want[k])
		}
		sum += p[k]
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Fatalf("probabilities sum to %v, want 1 (tolerance 1e-12)", sum)
	}
	// Normalised over non-empty buckets only: with buckets 3 and 4 empty the
	// others share all the mass, in the ratio of their weights.
	p = cfg.BucketProbabilities([]int{0, 2, 2, 0, 0, 2, 2, 2})
	w := cfg.BucketWeights()
	if p[3] != 0 || p[4] != 0 {
		t.Fatalf("empty buckets got mass %v", p)
	}
	var total float64
	for _, k := range []int{1, 2, 5, 6, 7} {
		total += w[k]
	}
	for _, k := range []int{1, 2, 5, 6, 7} {
		if math.Abs(p[k]-w[k]/total) > 1e-12 {
			t.Errorf("p(k=%d) = %v, want w_k / sum = %v (tolerance 1e-12)", k, p[k], w[k]/total)
		}
	}
	if got := math.Round(p[5]*1000) / 1000; got != 0.674 {
		t.Errorf("p(5) with buckets 3,4 empty = %.4f, want 0.674 = 0.6065/(2*0.0111+2*0.1353+0.6065)", p[5])
	}
}

// ALGORITHM.md E6: 10^5 single-question draws from a pool with every bucket
// non-empty land in bucket k with frequency p(k) within 4.5 standard errors
// sqrt(p(1-p)/N) (about 0.007 for p = 0.399); also for a non-default mu and
// sigma, where a bucket far from mu must stay (almost) empty.
func TestE6EmpiricalBucketFrequencies(t *testing.T) {
	const N = 100_000
	for _, tc := range []struct {
		name      string
		mu, sigma float64
	}{
		{"default mu=4 sigma=1", 4, 1},
		{"mu=2 sigma=2", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Mu, cfg.Sigma = tc.mu, tc.sigma
			sizes := []int{0, 3, 3, 3, 3, 3, 3, 3}
			p := poolWithBuckets(t, cfg, sizes)
			want := cfg.BucketProbabilities(sizes)
			rng := rngFor(1)
			counts := make([]int, cfg.K)
			for range N {
				picks := p.Sample(1, rng)
				if len(picks) != 1 {
					t.Fatalf("Sample(1) gave %d picks", len(picks))
				}
				counts[picks[0].Bucket]++
			}
			for k := 1; k < cfg.K; k++ {
				f := float64(counts[k]) / N
				se := math.Sqrt(want[k] * (1 - want[k]) / N)
				if math.Abs(f-want[k]) > 4.5*se+1e-9 {
					t.Errorf("bucket %d: frequency %.4f, want %.4f +- %.4f", k, f, want[k], 4.5*se)
				}
			}
		})
	}
}

// ALGORITHM.md E6: n_exp = min(n, pool questions with >= 1 trajectory),
// distinct, never retired or trajectory-less questions, for both selections.
func TestE6SampleSizeAndMembership(t *testing.T) {
	for _, sel := range []Selection{SelectGaussian, SelectUniform} {
		t.Run(sel.String(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Selection = sel
			p := poolWithBuckets(t, cfg, []int{0, 2, 0, 3, 1, 4, 0, 2})
			mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{
				group("b3q0", 8, 8),   // retired
				group("nosucc", 8, 4), // k reported, no trajectory: not in the pool
				group("zero", 8, 0),   // never stored
			}})
			inPool := map[string]int{}
			for _, id := range []string{"b1q0", "b1q1", "b3q1", "b3q2", "b4q0", "b5q0", "b5q1", "b5q2", "b5q3", "b7q0", "b7q1"} {
				info, _ := p.Question(id)
				inPool[id] = info.Bucket
			}
			if p.Len() != len(inPool) {
				t.Fatalf("Len = %d, want %d", p.Len(), len(inPool))
			}
			for _, n := range []int{0, 1, 5, 11, 12, 100} {
				for seed := range uint64(20) {
					picks := p.Sample(n, rngFor(seed))
					if want := min(n, 11); len(picks) != want {
						t.Fatalf("Sample(%d) gave %d picks, want %d", n, len(picks), want)
					}
					seen := map[string]bool{}
					for _, pk := range picks {
						b, ok := inPool[pk.QuestionID]
						if !ok || b != pk.Bucket || seen[pk.QuestionID] {
							t.Fatalf("Sample(%d) pick %+v: in pool %v, bucket %d, repeated %v", n, pk, ok, b, seen[pk.QuestionID])
						}
						seen[pk.QuestionID] = true
					}
				}
			}
		})
	}
}

// ALGORITHM.md E6: a bucket asked for more than it holds gives all it has and
// the excess goes to buckets with spare questions. Bucket 4 (p = 0.51 over the
// non-empty buckets) holds 1 question; with n = 10 of 13 it is (almost) always
// taken, and every sample has exactly 10 distinct picks.
func TestE6ClipAndRedistribute(t *testing.T) {
	cfg := DefaultConfig()
	p := poolWithBuckets(t, cfg, []int{0, 0, 0, 6, 1, 6, 0, 0})
	hits := 0
	for seed := range uint64(500) {
		picks := p.Sample(10, rngFor(seed))
		n4 := 0
		for _, pk := range picks {
			if pk.Bucket == 4 {
				n4++
			}
		}
		if len(picks) != 10 || n4 > 1 {
			t.Fatalf("seed %d: %d picks, %d from the 1-question bucket", seed, len(picks), n4)
		}
		hits += n4
	}
	// P(bucket 4 gets no draw in 10) = (1-0.5134)^10 = 7.4e-4; allow up to 5 misses in 500.
	if hits < 495 {
		t.Fatalf("bucket 4 taken in %d of 500 samples, want >= 495", hits)
	}
}

// naiveSample is the reference for ALGORITHM.md E6, written the obvious way:
// normalised probabilities over the non-empty buckets, n categorical draws by
// inverse CDF, then each excess draw redrawn among buckets with spare
// questions proportionally to their weights, then a random permutation of each
// bucket's (sorted) members.
func naiveSample(cfg Config, members map[int][]string, n int, rng *rand.Rand) []Pick {
	total := 0
	for _, m := range members {
		total += len(m)
	}
	n = min(n, total)
	if cfg.Selection == SelectUniform {
		var all []Pick
		for k := 1; k < cfg.K; k++ {
			for _, id := range members[k] {
				all = append(all, Pick{id, k})
			}
		}
		perm := rng.Perm(len(all))
		out := make([]Pick, n)
		for i := range out {
			out[i] = all[perm[i]]
		}
		return out
	}
	w := cfg.BucketWeights()
	cat := func(ok func(k int) bool) int {
		var sum float64
		for k := 1; k < cfg.K; k++ {
			if ok(k) {
				sum += w[k]
			}
		}
		u := rng.Float64()
		acc := 0.0
		last := 0
		for k := 1; k < cfg.K; k++ {
			if ok(k) {
				acc += w[k] / sum
				last = k
				if u < acc {
					return k
				}
			}
		}
		return last
	}
	counts := make([]int, cfg.K)
	for range n {
		counts[cat(func(k int) bool { return len(members[k]) > 0 })]++
	}
	for k := 1; k < cfg.K; k++ {
		for counts[k] > len(members[k]) {
			counts[k]--
			counts[cat(func(j int) bool { return counts[j] < len(members[j]) })]++
		}
	}
	var out []Pick
	for k := 1; k < cfg.K; k++ {
		perm := rng.Perm(len(members[k]))
		for i := range counts[k] {
			out = append(out, Pick{members[k][perm[i]], k})
		}
	}
	return out
}

// ALGORITHM.md E6 property: Sample and the naive reference have the same
// distribution, for both selections and several pool shapes (clipping
// included). For each question, its inclusion frequency over T = 20000 samples
// of each must agree by a two-proportion z-test with |z| <= 4.5; so must each
// bucket's probability of giving exactly c questions.
func TestE6SamplerMatchesNaiveReference(t *testing.T) {
	const T = 20000
	shapes := []struct {
		sizes []int
		n     int
	}{
		{[]int{0, 3, 0, 5, 2, 10, 1, 4}, 12},
		{[]int{0, 1, 1, 1, 1, 1, 1, 1}, 3},
		{[]int{0, 0, 0, 20, 0, 0, 0, 2}, 5},
	}
	for _, sel := range []Selection{SelectGaussian, SelectUniform} {
		for si, sh := range shapes {
			t.Run(fmt.Sprintf("%s/shape%d", sel, si), func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.Selection = sel
				p := poolWithBuckets(t, cfg, sh.sizes)
				members := map[int][]string{}
				for k := 1; k < cfg.K; k++ {
					for i := range sh.sizes[k] {
						members[k] = append(members[k], fmt.Sprintf("b%dq%d", k, i))
					}
					sort.Strings(members[k])
				}
				type tally struct {
					incl  map[string]int
					count map[[2]int]int // (bucket, picks from it) -> samples
				}
				run := func(sample func(*rand.Rand) []Pick, seed uint64) tally {
					tl := tally{map[string]int{}, map[[2]int]int{}}
					rng := rngFor(seed)
					for range T {
						per := make([]int, cfg.K)
						picks := sample(rng)
						if len(picks) != min(sh.n, p.Len()) {
							t.Fatalf("%d picks, want %d", len(picks), min(sh.n, p.Len()))
						}
						for _, pk := range picks {
							tl.incl[pk.QuestionID]++
							per[pk.Bucket]++
						}
						for k := 1; k < cfg.K; k++ {
							tl.count[[2]int{k, per[k]}]++
						}
					}
					return tl
				}
				fast := run(func(r *rand.Rand) []Pick { return p.Sample(sh.n, r) }, 11)
				ref := run(func(r *rand.Rand) []Pick { return naiveSample(cfg, members, sh.n, r) }, 12)
				z := func(a, b int) float64 {
					pa, pb := float64(a)/T, float64(b)/T
					pp := (pa + pb) / 2
					if pp == 0 || pp == 1 {
						return 0
					}
					return (pa - pb) / math.Sqrt(pp*(1-pp)*2/T)
				}
				for _, ids := range members {
					for _, id := range ids {
						if zz := z(fast.incl[id], ref.incl[id]); math.Abs(zz) > 4.5 {
							t.Errorf("%s included %d vs reference %d of %d (z = %.2f)", id, fast.incl[id], ref.incl[id], T, zz)
						}
					}
				}
				keys := map[[2]int]bool{}
				for key := range fast.count {
					keys[key] = true
				}
				for key := range ref.count {
					keys[key] = true
				}
				for key := range keys {
					if zz := z(fast.count[key], ref.count[key]); math.Abs(zz) > 4.5 {
						t.Errorf("bucket %d giving %d: %d vs reference %d of %d (z = %.2f)", key[0], key[1], fast.count[key], ref.count[key], T, zz)
					}
				}
			})
		}
	}
}

// Sampling reads the pool only: the same seed gives the same picks, before and
// after other samples.
func TestSampleIsPureGivenSeed(t *testing.T) {
	p := poolWithBuckets(t, DefaultConfig(), []int{0, 4, 4, 4, 4, 4, 4, 4})
	before := p.Snapshot()
	a := p.Sample(9, rngFor(3))
	for seed := range uint64(10) {
		p.Sample(20, rngFor(seed))
	}
	if b := p.Sample(9, rngFor(3)); !slices.Equal(a, b) {
		t.Fatalf("same seed, different picks: %v vs %v", a, b)
	}
	if !slices.Equal(before, p.Snapshot()) {
		t.Fatal("Sample changed the pool")
	}
}

// The distinct-index drawer is a permutation: drawing size indices gives each once.
func TestDistinctIsPermutation(t *testing.T) {
	for _, size := range []int{1, 2, 7, 100} {
		var d distinct
		rng := rngFor(uint64(size))
		got := make([]int, size)
		for i := range got {
			got[i] = d.next(size, rng)
		}
		slices.Sort(got)
		for i, v := range got {
			if v != i {
				t.Fatalf("size %d: sorted draws %v are not 0..%d", size, got, size-1)
			}
		}
	}
}
