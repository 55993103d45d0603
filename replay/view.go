package replay

// Stats is a read-only summary of the pool for inspection.
type Stats struct {
	// Step is the last folded step; HasStep is false before the first report.
	Step    int64
	HasStep bool
	// Buckets[k] is the number of questions sampled from bucket k, k = 1..K-1
	// (ALGORITHM.md E3); Buckets[0] is always 0. len(Buckets) == K.
	Buckets []int
	// Questions is the pool size: non-retired questions with >= 1 stored
	// trajectory, the population Sample draws from (ALGORITHM.md E6).
	Questions int
	// Retired is the number of retired questions (ALGORITHM.md E4).
	Retired int
	// Known is the number of questions ever seen in a mixed-mode report.
	Known int
	// Trajectories is the number of stored trajectories; Tokens their response tokens.
	Trajectories int
	Tokens       int64
}

// Stats returns the pool's summary.
func (p *Pool) Stats() Stats {
	s := Stats{
		Step: p.step, HasStep: p.hasStep, Buckets: make([]int, p.cfg.K),
		Retired: p.retired, Known: len(p.qs), Trajectories: p.nTraj, Tokens: p.tokens,
	}
	for k := 1; k < p.cfg.K; k++ {
		s.Buckets[k] = len(p.buckets[k])
		s.Questions += len(p.buckets[k])
	}
	return s
}

// Len is the pool size, Stats().Questions, without allocating.
func (p *Pool) Len() int {
	n := 0
	for k := 1; k < p.cfg.K; k++ {
		n += len(p.buckets[k])
	}
	return n
}

// Retired reports whether question id is retired (ALGORITHM.md E4); the
// fresh-question sampler skips it from the next epoch on.
func (p *Pool) Retired(id string) bool {
	qi, ok := p.index[id]
	return ok && p.qs[qi].retired
}

// RetiredIDs returns the retired questions, in order of first appearance.
func (p *Pool) RetiredIDs() []string {
	out := make([]string, 0, p.retired)
	for i := range p.qs {
		if p.qs[i].retired {
			out = append(out, p.qs[i].id)
		}
	}
	return out
}

// QuestionInfo is one question's current state.
type QuestionInfo struct {
	ID string
	// Bucket is the bucket the question is sampled from, 0 when it is in none
	// (no stored trajectory, or retired).
	Bucket int
	// LatestK is the latest k in 1..K-1 reported for it, 0 before any.
	LatestK      int
	Retired      bool
	Trajectories int
}

// Question returns one question's state; false when no mixed-mode report named it.
func (p *Pool) Question(id string) (QuestionInfo, bool) {
	qi, ok := p.index[id]
	if !ok {
		return QuestionInfo{}, false
	}
	q := &p.qs[qi]
	return QuestionInfo{ID: q.id, Bucket: int(p.bucketOf(q)), LatestK: int(q.k), Retired: q.retired, Trajectories: len(q.trajs)}, true
}

// Event is one mixed-mode step of a question's history.
type Event struct {
	Step    int64
	Correct int // k, correct rollouts of Size
	Size    int
	From    int  // bucket before the step, 0 = none
	To      int  // bucket after the step, 0 = none
	Added   int  // trajectories stored (after dedup)
	Retired bool // this step retired the question (ALGORITHM.md E4)
	// WasRetired: the question was already retired, so nothing was stored.
	WasRetired bool
}

// History returns a question's history, one event per mixed-mode step that
// named it, oldest first; nil for an unknown question.
func (p *Pool) History(id string) []Event {
	qi, ok := p.index[id]
	if !ok {
		return nil
	}
	h := p.qs[qi].hist
	out := make([]Event, len(h))
	for i, e := range h {
		out[i] = Event{
			Step: e.step, Correct: int(e.correct), Size: int(e.size), From: int(e.from), To: int(e.to),
			Added: int(e.added), Retired: e.flags&flagRetired != 0, WasRetired: e.flags&flagWasRetired != 0,
		}
	}
	return out
}

// Candidates returns the trajectories the learner scores to choose the one to
// replay for question id (ALGORITHM.md E7): the most recent MaxCandidates
// stored ones, oldest first, so that "ties go to the earliest stored" means
// the lowest index. Nil for an unknown or retired question.
//
// The slices inside are shared with the pool and must not be modified; they
// are never modified by the pool either, so they stay valid after later Applies.
func (p *Pool) Candidates(id string) []Trajectory {
	qi, ok := p.index[id]
	if !ok {
		return nil
	}
	ts := p.qs[qi].trajs
	ts = ts[max(0, len(ts)-p.cfg.MaxCandidates):]
	if len(ts) == 0 {
		return nil
	}
	out := make([]Trajectory, len(ts))
	for i := range ts {
		t := &ts[i]
		out[i] = Trajectory{
			ID: t.id, PolicyVersion: t.version, Step: t.step,
			PromptTokens: t.prompt, Tokens: t.tokens, LogProbs: t.logps,
		}
	}
	return out
}

// StoredIDs lists the ids of every trajectory the pool stores for question
// id, oldest first (Candidates, without the cap). Nil for an unknown question
// or one that stores nothing.
func (p *Pool) StoredIDs(id string) []string {
	qi, ok := p.index[id]
	if !ok || len(p.qs[qi].trajs) == 0 {
		return nil
	}
	out := make([]string, len(p.qs[qi].trajs))
	for i := range p.qs[qi].trajs {
		out[i] = p.qs[qi].trajs[i].id
	}
	return out
}
