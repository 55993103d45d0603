// Package replay is ExGRPO's experience pool (ALGORITHM.md E1-E7) as a pure
// state machine: no I/O, no clock, no goroutines.
//
// A Pool is a deterministic fold of step reports. Each Report says, per
// question of a training step, how many of its K rollouts were correct and
// carries the correct ones; Apply files them into buckets by that latest k,
// retires questions solved K of K, and does nothing before the delayed start
// (Report.Mixed false). Applying the same reports to an empty pool always gives
// the same state, byte for byte in Snapshot, which is what lets the replay
// service restart from a snapshot plus the reports after it, and lets an
// inspector rebuild the pool as of any step.
//
// Sample draws the questions to replay (Gaussian over buckets, E6), and
// Candidates lists the trajectories the learner scores to pick one (E7).
// Reading methods do not change the pool. A Pool is not safe for concurrent
// use while Apply runs; without Apply, reading methods may run concurrently.
package replay

import (
	"fmt"
	"slices"
)

// Trajectory is one successful rollout (ALGORITHM.md E1): token ids, never
// re-tokenised text, and the behaviour policy's per-token log-probs.
type Trajectory struct {
	ID            string    // trajectory id, unique within a run
	PolicyVersion int64     // version of the policy that sampled it
	Step          int64     // training step whose group it belonged to
	PromptTokens  []int32   // the question's prompt, as the learner rescoring it needs
	Tokens        []int32   // response token ids, EOS included when emitted; len >= 1
	LogProbs      []float32 // behaviour log-prob per response token; len == len(Tokens)
}

// Group is one question's group of a step, as the fold consumes it.
type Group struct {
	QuestionID string
	Size       int // rollouts in the group, K; must equal Config.K
	Correct    int // correct rollouts k, the replayed one included (ALGORITHM.md E2)
	// Successes are the correct rollouts (at most Correct of them; fewer is
	// allowed, e.g. when the replayed one is left out). Duplicates of stored
	// trajectories, by exact token sequence, are dropped.
	Successes []Trajectory
	// Replayed says the group held a replayed trajectory (E8); only
	// Config.ReplayLimit reads it (and only then is it recorded).
	Replayed bool
}

// Report is one training step as the fold consumes it. The replay service
// builds it from the learner's step report and the trajectories it names.
type Report struct {
	Step int64 // strictly increasing from report to report
	// Mixed says the step trained in mixed mode. Before the delayed start
	// (Mixed false) nothing is collected and nothing retires (ALGORITHM.md E5);
	// the report only advances the step.
	Mixed  bool
	Groups []Group // at most one per question
}

// stored is a trajectory as the pool keeps it: the caller's token and
// log-prob slices (one backing array each, no per-token structs), the prompt
// shared with the question when equal, and the hash used for dedup.
type stored struct {
	id      string
	tokens  []int32
	logps   []float32
	prompt  []int32
	version int64
	step    int64
	hash    uint64
}

// event is one step of a question's history, 24 bytes.
type event struct {
	step    int64
	correct uint8
	size    uint8
	from    uint8 // bucket before, 0 = none
	to      uint8 // bucket after, 0 = none
	flags   uint8
	added   uint32
}

const (
	flagRetired    = 1 << iota // the question was retired by this group
	flagWasRetired             // the question was already retired; nothing stored
	flagReplayed               // the group held a replayed trajectory
	flagKnownFlags = flagRetired | flagWasRetired | flagReplayed
)

// question is one question's state. k is its latest k in 1..K-1 once any
// mixed-mode group reported 1 <= k <= K-1 (0 before); pos is its index in
// buckets[k], -1 when it is in no bucket (no trajectory, or retired).
type question struct {
	id      string
	prompt  []int32
	trajs   []stored
	hist    []event
	pos     int32
	k       uint8
	retired bool
}

// member is one entry of a bucket array. The id is kept next to the index so
// that a sampled pick costs one memory access in a big pool, not two.
type member struct {
	id string
	qi int32 // index into Pool.qs
}

// Pool is the experience pool. Build one with New or Restore.
type Pool struct {
	cfg     Config
	qs      []question       // in order of first appearance in a mixed report
	index   map[string]int32 // question id -> index in qs
	buckets [][]member       // buckets[k], k = 1..K-1: swap-remove arrays
	hasStep bool
	step    int64 // last folded step, valid when hasStep
	retired int
	nTraj   int
	tokens  int64 // response tokens stored
}

// New returns an empty pool.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Pool{
		cfg:     cfg,
		index:   make(map[string]int32),
		buckets: make([][]member, cfg.K),
	}, nil
}

// LastStep returns the step of the last folded report; ok is false before the first.
func (p *Pool) LastStep() (step int64, ok bool) { return p.step, p.hasStep }

// Config returns the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// Apply folds one report into the pool (ALGORITHM.md E2-E5). It validates the
// whole report first and leaves the pool unchanged on error: ErrStaleReport when
// Step is not after the last folded step (a redelivery), ErrBadReport otherwise.
//
// Ownership: Apply keeps the Tokens, LogProbs and PromptTokens slices of the
// trajectories it stores, without copying (unless a slice's capacity exceeds
// its length by more than 1/8, then it keeps an exact-size copy); the caller
// must not modify them afterwards. Slices it does not store (duplicates,
// reports before the delayed start, retired questions) are not retained.
func (p *Pool) Apply(r Report) error {
	if p.hasStep && r.Step <= p.step {
		return fmt.Errorf("%w: step %d, already folded up to step %d", ErrStaleReport, r.Step, p.step)
	}
	if err := p.validate(r); err != nil {
		return err
	}
	p.hasStep, p.step = true, r.Step
	if !r.Mixed {
		return nil // ALGORITHM.md E5: before the delayed start nothing is collected
	}
	for i := range r.Groups {
		p.fold(r.Step, &r.Groups[i])
	}
	return nil
}

func (p *Pool) validate(r Report) error {
	K := p.cfg.K
	seen := make(map[string]struct{}, len(r.Groups))
	for i := range r.Groups {
		g := &r.Groups[i]
		switch {
		case g.QuestionID == "":
			return fmt.Errorf("%w: step %d group %d: empty question id", ErrBadReport, r.Step, i)
		case g.Size != K:
			return fmt.Errorf("%w: step %d question %s: group size %d, the pool is configured for K = %d",
				ErrBadReport, r.Step, g.QuestionID, g.Size, K)
		case g.Correct < 0 || g.Correct > g.Size:
			return fmt.Errorf("%w: step %d question %s: %d correct of %d", ErrBadReport, r.Step, g.QuestionID, g.Correct, g.Size)
		case len(g.Successes) > g.Correct:
			return fmt.Errorf("%w: step %d question %s: %d successes for %d correct",
				ErrBadReport, r.Step, g.QuestionID, len(g.Successes), g.Correct)
		}
		if _, dup := seen[g.QuestionID]; dup {
			return fmt.Errorf("%w: step %d: question %s appears twice", ErrBadReport, r.Step, g.QuestionID)
		}
		seen[g.QuestionID] = struct{}{}
		for j := range g.Successes {
			t := &g.Successes[j]
			if len(t.Tokens) == 0 || len(t.Tokens) != len(t.LogProbs) {
				return fmt.Errorf("%w: step %d question %s trajectory %q: %d tokens and %d log-probs (need equal, >= 1)",
					ErrBadReport, r.Step, g.QuestionID, t.ID, len(t.Tokens), len(t.LogProbs))
			}
		}
	}
	return nil
}

// fold applies one validated group (ALGORITHM.md E2-E4, with
// Config.RetireAfter and Config.ReplayLimit).
func (p *Pool) fold(step int64, g *Group) {
	qi, ok := p.index[g.QuestionID]
	if !ok {
		qi = int32(len(p.qs))
		p.qs = append(p.qs, question{id: g.QuestionID, pos: -1})
		p.index[g.QuestionID] = qi
	}
	q := &p.qs[qi]
	ev := event{step: step, correct: uint8(g.Correct), size: uint8(g.Size), from: p.bucketOf(q)}
	if g.Replayed && p.cfg.ReplayLimit > 0 {
		// Recorded only where the limit needs it, so that a pool of the
		// paper's rules has the snapshot bytes it had before the limit existed.
		ev.flags |= flagReplayed
	}
	switch {
	case q.retired:
		// ALGORITHM.md E4: retirement is permanent; a retired question still
		// drawn by the fresh sampler in the current epoch stores nothing.
		ev.flags |= flagWasRetired
	case g.Correct == g.Size && p.cfg.RetireAfter > 0 && allCorrectRun(q.hist)+1 >= p.cfg.RetireAfter:
		// ALGORITHM.md E4: all correct (m times in a row) -> retired, out of
		// the pool and its buckets.
		p.unbucket(qi)
		for _, t := range q.trajs {
			p.tokens -= int64(len(t.tokens))
		}
		p.nTraj -= len(q.trajs)
		q.trajs, q.prompt, q.retired, q.k = nil, nil, true, 0
		p.retired++
		ev.flags |= flagRetired
	case g.Correct == g.Size:
		// All correct, not (yet) retiring: nothing stored, and out of its
		// bucket, there being no bucket K (E3); the trajectories stay.
		p.unbucket(qi)
	case g.Correct == 0:
		// ALGORITHM.md E2: nothing stored; the old bucket and trajectories stay.
	default:
		// ALGORITHM.md E2/E3: store every new correct rollout; bucket = latest k.
		for j := range g.Successes {
			if p.add(q, &g.Successes[j]) {
				ev.added++
			}
		}
		if q.k != uint8(g.Correct) {
			p.unbucket(qi)
			q.k = uint8(g.Correct)
		}
		if q.pos < 0 && len(q.trajs) > 0 {
			b := &p.buckets[q.k]
			q.pos = int32(len(*b))
			*b = append(*b, member{id: q.id, qi: qi})
		}
	}
	// Config.ReplayLimit: a question replayed that many times leaves its
	// bucket for good.
	if p.cfg.ReplayLimit > 0 && replays(q.hist)+int(ev.flags&flagReplayed/flagReplayed) >= p.cfg.ReplayLimit {
		p.unbucket(qi)
	}
	ev.to = p.bucketOf(q)
	q.hist = append(q.hist, ev)
}

// allCorrectRun is the number of all-correct groups at the end of a
// question's history (Config.RetireAfter).
func allCorrectRun(h []event) int {
	n := 0
	for i := len(h) - 1; i >= 0 && h[i].correct == h[i].size && h[i].flags&flagWasRetired == 0; i-- {
		n++
	}
	return n
}

// replays is the number of replayed groups in a question's history
// (Config.ReplayLimit).
func replays(h []event) int {
	n := 0
	for _, e := range h {
		if e.flags&flagReplayed != 0 {
			n++
		}
	}
	return n
}

// bucketOf is the bucket a question is sampled from, 0 when none.
func (p *Pool) bucketOf(q *question) uint8 {
	if q.pos < 0 {
		return 0
	}
	return q.k
}

// unbucket swap-removes question qi from its bucket, if it is in one.
func (p *Pool) unbucket(qi int32) {
	q := &p.qs[qi]
	if q.pos < 0 {
		return
	}
	b := p.buckets[q.k]
	last := b[len(b)-1]
	b[q.pos] = last
	p.qs[last.qi].pos = q.pos
	p.buckets[q.k] = b[:len(b)-1]
	q.pos = -1
}

// add stores t in q unless q holds a trajectory with the same token sequence
// (ALGORITHM.md E2 dedup). It reports whether t was stored.
func (p *Pool) add(q *question, t *Trajectory) bool {
	h := hashTokens(t.Tokens)
	for i := range q.trajs {
		if q.trajs[i].hash == h && slices.Equal(q.trajs[i].tokens, t.Tokens) {
			return false
		}
	}
	if len(q.prompt) == 0 && len(t.PromptTokens) > 0 {
		q.prompt = exact(t.PromptTokens)
	}
	prompt := t.PromptTokens
	if slices.Equal(prompt, q.prompt) {
		prompt = q.prompt // share one copy per question
	} else {
		prompt = exact(prompt)
	}
	q.trajs = append(q.trajs, stored{
		id: t.ID, tokens: exact(t.Tokens), logps: exact(t.LogProbs), prompt: prompt,
		version: t.PolicyVersion, step: t.Step, hash: h,
	})
	p.nTraj++
	p.tokens += int64(len(t.Tokens))
	return true
}

// exact returns s itself when its backing array is about its length (the
// usual case: a decoder's exact-size slice) and a copy otherwise, so that the
// pool never pins a much larger array behind a short slice.
func exact[T int32 | float32](s []T) []T {
	if cap(s)-len(s) <= len(s)/8 {
		return s
	}
	return slices.Clone(s)
}

// hashTokens is a fast 64-bit hash of a token sequence for dedup; equality
// is always confirmed on the tokens themselves, so collisions cost time, never
// correctness. It reads two tokens per multiply in two independent lanes (four
// tokens per round), which keeps it a small fraction of a fold.
func hashTokens(ts []int32) uint64 {
	const m1, m2 = 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f
	a := uint64(len(ts)) ^ 0xcbf29ce484222325
	b := a ^ m2
	i := 0
	for ; i+4 <= len(ts); i += 4 {
		x := uint64(uint32(ts[i])) | uint64(uint32(ts[i+1]))<<32
		y := uint64(uint32(ts[i+2])) | uint64(uint32(ts[i+3]))<<32
		a = (a ^ x) * m1
		a ^= a >> 31
		b = (b ^ y) * m2
		b ^= b >> 29
	}
	for ; i < len(ts); i++ {
		a = (a ^ uint64(uint32(ts[i]))) * m1
		a ^= a >> 31
	}
	h := (a ^ b>>17 ^ b<<23) * m2
	return h ^ h>>32
}
