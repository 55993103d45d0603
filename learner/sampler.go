package learner

import (
	"fmt"
	"math/rand/v2"
)

// FreshSampler draws a step's fresh questions from a dataset, epoch by epoch.
// Each epoch visits every question that was not retired before the epoch
// began, in an order shuffled with the sampler's seed. A question retired
// during an epoch may still come up later in that same epoch; from the next
// epoch on it is never drawn again (ALGORITHM.md E4, which follows the
// reference code's filtering of the dataset at epoch boundaries).
//
// The sampler is deterministic: the same seed, dataset and sequence of calls
// give the same draws. It is not safe for concurrent use.
type FreshSampler struct {
	ids     []string     // dataset order
	retired map[int]bool // by dataset index
	index   map[string]int
	rng     *rand.Rand
	epoch   int
	order   []int // this epoch's permutation of active questions
	pos     int   // next position in order
	// deferred holds questions skipped because the caller excluded them
	// (for example because they are replayed in the same step); they are
	// served first by the next call, so a question is never lost from its
	// epoch.
	deferred []int
}

// NewFreshSampler returns a sampler over question ids (dataset order; ids
// must be unique). The sampler owns rng from now on.
func NewFreshSampler(ids []string, rng *rand.Rand) (*FreshSampler, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: empty dataset", ErrExhausted)
	}
	s := &FreshSampler{
		ids:     append([]string(nil), ids...),
		retired: map[int]bool{},
		index:   make(map[string]int, len(ids)),
		rng:     rng,
		epoch:   -1,
	}
	for i, id := range ids {
		if _, dup := s.index[id]; dup {
			return nil, fmt.Errorf("learner: fresh sampler: duplicate question id %q", id)
		}
		s.index[id] = i
	}
	return s, nil
}

// Epoch returns the current epoch, counted from 0 (-1 before the first draw).
func (s *FreshSampler) Epoch() int { return s.epoch }

// Retire marks a question as retired (ALGORITHM.md E4): it is not part of any
// epoch that begins after this call. Unknown ids are ignored (they may come
// from the pool of another dataset); the result says whether id was known.
func (s *FreshSampler) Retire(id string) bool {
	i, ok := s.index[id]
	if ok {
		s.retired[i] = true
	}
	return ok
}

// Active returns the number of questions not retired.
func (s *FreshSampler) Active() int { return len(s.ids) - len(s.retired) }

// Next draws n distinct question ids, none of them in exclude (which may be
// nil). It fails with ErrExhausted when fewer than n questions can be drawn
// even across an epoch boundary.
func (s *FreshSampler) Next(n int, exclude map[string]bool) ([]string, error) {
	out := make([]string, 0, n)
	taken := map[int]bool{}
	ok := func(i int) bool { return !taken[i] && !exclude[s.ids[i]] }

	// Deferred questions first, in the order they were skipped.
	keep := s.deferred[:0:0]
	for _, i := range s.deferred {
		if len(out) < n && ok(i) {
			out = append(out, s.ids[i])
			taken[i] = true
		} else {
			keep = append(keep, i)
		}
	}
	s.deferred = keep

	// Two epoch boundaries without a single draw mean nothing drawable is left.
	emptyEpochs := 0
	for len(out) < n {
		if s.pos >= len(s.order) {
			if emptyEpochs == 2 {
				return nil, fmt.Errorf("%w: want %d, got %d of %d active questions", ErrExhausted, n, len(out), s.Active())
			}
			s.newEpoch()
			emptyEpochs++
			continue
		}
		i := s.order[s.pos]
		s.pos++
		if !ok(i) {
			// Excluded now, or already taken in this call before an epoch
			// boundary: it stays due and is served by a later call.
			s.deferred = append(s.deferred, i)
			continue
		}
		out = append(out, s.ids[i])
		taken[i] = true
		emptyEpochs = 0
	}
	return out, nil
}

// newEpoch filters retired questions out and shuffles the rest (E4).
func (s *FreshSampler) newEpoch() {
	s.epoch++
	s.order = s.order[:0]
	for i := range s.ids {
		if !s.retired[i] {
			s.order = append(s.order, i)
		}
	}
	s.rng.Shuffle(len(s.order), func(a, b int) { s.order[a], s.order[b] = s.order[b], s.order[a] })
	s.pos = 0
	// Questions still deferred from the finished epoch are in the new order
	// (unless retired), so they are not served twice.
	s.deferred = s.deferred[:0]
}

// FreshState is a FreshSampler's position, for checkpoints: with it a
// restarted learner continues the current epoch exactly where it stopped.
type FreshState struct {
	Epoch    int      `json:"epoch"`    // current epoch, -1 before the first draw
	Order    []string `json:"order"`    // the current epoch's order
	Pos      int      `json:"pos"`      // next position in Order
	Deferred []string `json:"deferred"` // questions skipped by exclusion, served first
	Retired  []string `json:"retired"`  // retired questions, dataset order
}

// State returns the sampler's position. The slices are fresh copies.
func (s *FreshSampler) State() FreshState {
	st := FreshState{Epoch: s.epoch, Pos: s.pos}
	for _, i := range s.order {
		st.Order = append(st.Order, s.ids[i])
	}
	for _, i := range s.deferred {
		st.Deferred = append(st.Deferred, s.ids[i])
	}
	for i, id := range s.ids {
		if s.retired[i] {
			st.Retired = append(st.Retired, id)
		}
	}
	return st
}

// RestoreFreshSampler rebuilds a sampler over ids at position st. rng shuffles
// the epochs after the current one; give it the state the saved sampler's
// generator had at State time (or a seed derived from the run's seed and
// st.Epoch) to make the continuation deterministic.
func RestoreFreshSampler(ids []string, st FreshState, rng *rand.Rand) (*FreshSampler, error) {
	s, err := NewFreshSampler(ids, rng)
	if err != nil {
		return nil, err
	}
	look := func(what string, names []string) ([]int, error) {
		out := make([]int, 0, len(names))
		for _, id := range names {
			i, ok := s.index[id]
			if !ok {
				return nil, fmt.Errorf("learner: restore fresh sampler: %s names unknown question %q", what, id)
			}
			out = append(out, i)
		}
		return out, nil
	}
	if s.order, err = look("order", st.Order); err != nil {
		return nil, err
	}
	if s.deferred, err = look("deferred", st.Deferred); err != nil {
		return nil, err
	}
	retired, err := look("retired", st.Retired)
	if err != nil {
		return nil, err
	}
	for _, i := range retired {
		s.retired[i] = true
	}
	if st.Pos < 0 || st.Pos > len(s.order) || st.Epoch < -1 {
		return nil, fmt.Errorf("learner: restore fresh sampler: position %d of %d in epoch %d", st.Pos, len(s.order), st.Epoch)
	}
	s.epoch, s.pos = st.Epoch, st.Pos
	return s, nil
}
