package learner

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("q%02d", i)
	}
	return out
}

// An epoch visits every active question exactly once, shuffled with the seed.
func TestFreshSamplerEpochs(t *testing.T) {
	s, err := NewFreshSampler(ids(10), rand.New(rand.NewPCG(1, 0)))
	if err != nil {
		t.Fatal(err)
	}
	var epoch0, epoch1 []string
	for range 5 {
		b, err := s.Next(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		epoch0 = append(epoch0, b...)
	}
	for range 5 {
		b, _ := s.Next(2, nil)
		epoch1 = append(epoch1, b...)
	}
	if s.Epoch() != 1 {
		t.Fatalf("epoch %d after 20 draws of 10 questions, want 1", s.Epoch())
	}
	for name, e := range map[string][]string{"epoch0": epoch0, "epoch1": epoch1} {
		got := slices.Clone(e)
		slices.Sort(got)
		if !slices.Equal(got, ids(10)) {
			t.Errorf("%s is not a permutation of the dataset: %v", name, e)
		}
	}
	if slices.Equal(epoch0, epoch1) || slices.Equal(epoch0, ids(10)) {
		t.Errorf("epochs not reshuffled: %v then %v", epoch0, epoch1)
	}
	// Same seed, same calls: same draws.
	s2, _ := NewFreshSampler(ids(10), rand.New(rand.NewPCG(1, 0)))
	var again []string
	for range 5 {
		b, _ := s2.Next(2, nil)
		again = append(again, b...)
	}
	if !slices.Equal(again, epoch0) {
		t.Errorf("not deterministic: %v vs %v", again, epoch0)
	}
}

// ALGORITHM.md E4: a question retired during epoch e may still be drawn later
// in e, and is never drawn from epoch e+1 on.
func TestFreshSamplerRetirementE4(t *testing.T) {
	s, _ := NewFreshSampler(ids(6), rand.New(rand.NewPCG(7, 0)))
	first, _ := s.Next(1, nil)
	rest, _ := s.Next(5, nil) // the rest of epoch 0
	// Retire the last question of epoch 0 after the first draw: replay the
	// same seed and retire it before it comes up.
	target := rest[4]
	s2, _ := NewFreshSampler(ids(6), rand.New(rand.NewPCG(7, 0)))
	f2, _ := s2.Next(1, nil)
	if f2[0] != first[0] {
		t.Fatal("not deterministic")
	}
	s2.Retire(target)
	r2, _ := s2.Next(5, nil)
	if !slices.Contains(r2, target) {
		t.Fatalf("question %s retired mid-epoch 0 was not drawn in epoch 0: %v", target, r2)
	}
	if s2.Active() != 5 {
		t.Fatalf("active = %d, want 5", s2.Active())
	}
	for e := 1; e <= 3; e++ {
		b, err := s2.Next(5, nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(b, target) {
			t.Fatalf("retired question %s drawn in epoch %d: %v", target, s2.Epoch(), b)
		}
		if s2.Epoch() != e {
			t.Fatalf("epoch %d, want %d", s2.Epoch(), e)
		}
	}
	if s2.Retire("unknown") {
		t.Error("unknown id reported as known")
	}
}

// Excluded questions (replayed in the same step) are not drawn but stay due:
// over the epoch every question is still served exactly once.
func TestFreshSamplerExclude(t *testing.T) {
	s, _ := NewFreshSampler(ids(8), rand.New(rand.NewPCG(3, 0)))
	ex := map[string]bool{"q03": true, "q05": true}
	b, err := s.Next(6, ex)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(b, "q03") || slices.Contains(b, "q05") {
		t.Fatalf("excluded question drawn: %v", b)
	}
	c, _ := s.Next(2, nil)
	all := append(slices.Clone(b), c...)
	slices.Sort(all)
	if !slices.Equal(all, ids(8)) || s.Epoch() != 0 {
		t.Fatalf("epoch 0 lost or repeated questions: %v (epoch %d)", all, s.Epoch())
	}
	// A batch never repeats a question, even across an epoch boundary.
	for range 20 {
		b, err := s.Next(5, nil)
		if err != nil {
			t.Fatal(err)
		}
		u := slices.Clone(b)
		slices.Sort(u)
		if len(slices.Compact(u)) != 5 {
			t.Fatalf("duplicate in a batch: %v", b)
		}
	}
}

func TestFreshSamplerExhausted(t *testing.T) {
	s, _ := NewFreshSampler(ids(3), rand.New(rand.NewPCG(1, 0)))
	if _, err := s.Next(4, nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("4 of 3: %v, want ErrExhausted", err)
	}
	s, _ = NewFreshSampler(ids(3), rand.New(rand.NewPCG(1, 0)))
	for _, id := range ids(3) {
		s.Retire(id)
	}
	if _, err := s.Next(1, nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("all retired: %v, want ErrExhausted", err)
	}
	if _, err := NewFreshSampler([]string{"a", "a"}, rand.New(rand.NewPCG(1, 0))); err == nil {
		t.Fatal("duplicate ids accepted")
	}
}

// ALGORITHM.md E4, property test: under random retirements and exclusions,
// a batch never repeats a question or contains an excluded one, and a
// question retired during epoch r is never drawn in an epoch after r.
func TestFreshSamplerPropertyE4(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		all := ids(30)
		s, _ := NewFreshSampler(all, rand.New(rand.NewPCG(seed, 1)))
		retiredAt := map[string]int{}
		for call := range 60 {
			n := 1 + rng.IntN(6)
			ex := map[string]bool{}
			for range rng.IntN(4) {
				ex[all[rng.IntN(len(all))]] = true
			}
			ep0 := s.Epoch()
			b, err := s.Next(n, ex)
			if errors.Is(err, ErrExhausted) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			ep1 := s.Epoch()
			oldest := ep1
			if ep1 != ep0 {
				oldest = ep0 // draws may come from the epoch that just ended
			}
			seen := map[string]bool{}
			for _, id := range b {
				if seen[id] || ex[id] {
					t.Fatalf("seed %d call %d: %s repeated or excluded in %v", seed, call, id, b)
				}
				seen[id] = true
				if r, ok := retiredAt[id]; ok && oldest > r {
					t.Fatalf("seed %d call %d: %s retired in epoch %d drawn in epoch >= %d", seed, call, id, r, oldest)
				}
			}
			if len(b) != n {
				t.Fatalf("got %d, want %d", len(b), n)
			}
			for _, id := range b {
				if _, done := retiredAt[id]; !done && rng.IntN(8) == 0 {
					s.Retire(id)
					retiredAt[id] = s.Epoch()
				}
			}
		}
	}
}

// A sampler restored from State, with a generator in the same state, draws
// exactly what the original draws, across epoch boundaries and retirements
// (E4 survives a restart).
func TestFreshSamplerRestore(t *testing.T) {
	all := ids(12)
	srcA := rand.NewPCG(4, 5)
	a, _ := NewFreshSampler(all, rand.New(srcA))
	a.Next(5, nil)
	a.Retire("q03")
	a.Next(4, map[string]bool{"q07": true, "q01": true})
	a.Retire("q09")
	st := a.State()
	srcB := *srcA // the generator's state at State time
	b, err := RestoreFreshSampler(all, st, rand.New(&srcB))
	if err != nil {
		t.Fatal(err)
	}
	for call := range 12 {
		x, errA := a.Next(5, nil)
		y, errB := b.Next(5, nil)
		if (errA == nil) != (errB == nil) || !slices.Equal(x, y) || a.Epoch() != b.Epoch() {
			t.Fatalf("call %d: original %v (epoch %d, %v), restored %v (epoch %d, %v)", call, x, a.Epoch(), errA, y, b.Epoch(), errB)
		}
	}
	bad := st
	bad.Order = append(slices.Clone(st.Order), "nope")
	if _, err := RestoreFreshSampler(all, bad, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("unknown question accepted")
	}
}
