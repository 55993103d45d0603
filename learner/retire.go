package learner

import "sort"

// Retirement decides, step by step, which questions leave the fresh
// sampler (ALGORITHM.md E4 with Config.RetireAfter = m): a question
// retires after m consecutive all-correct groups (k = K) in mixed-mode
// steps; any group with k < K starts its count again. m = 1 is the paper
// (StepSummary.Retired); m = 0 never retires. It folds the same step
// summaries the replay pool folds from the step reports, with the same
// rule (replay.Config.RetireAfter), so learner and pool agree on every
// retirement. Before the delayed start nothing counts (E5), as in the
// pool. It is deterministic and not safe for concurrent use.
type Retirement struct {
	after   int
	streak  map[string]int  // consecutive all-correct groups, questions with > 0 only
	retired map[string]bool // retired questions
}

// NewRetirement returns the rule with m = after (>= 0).
func NewRetirement(after int) *Retirement {
	return &Retirement{after: after, streak: map[string]int{}, retired: map[string]bool{}}
}

// Fold takes one step's summary and returns the questions it retires, in
// group order; a question already retired is never returned again.
func (r *Retirement) Fold(sum StepSummary) []string {
	if !sum.Mixed {
		return nil
	}
	var out []string
	for _, g := range sum.Groups {
		if r.retired[g.QuestionID] {
			continue
		}
		if g.Correct != g.Size {
			delete(r.streak, g.QuestionID)
			continue
		}
		r.streak[g.QuestionID]++
		if r.after > 0 && r.streak[g.QuestionID] >= r.after {
			delete(r.streak, g.QuestionID)
			r.retired[g.QuestionID] = true
			out = append(out, g.QuestionID)
		}
	}
	return out
}

// RetirementState is what a checkpoint keeps of a Retirement.
type RetirementState struct {
	Retired []string       `json:"retired"` // sorted
	Streaks map[string]int `json:"streaks"` // questions with a count > 0
}

// State returns the rule's state (fresh copies).
func (r *Retirement) State() RetirementState {
	st := RetirementState{Streaks: make(map[string]int, len(r.streak))}
	for q := range r.retired {
		st.Retired = append(st.Retired, q)
	}
	sort.Strings(st.Retired)
	for q, n := range r.streak {
		st.Streaks[q] = n
	}
	return st
}

// RestoreRetirement rebuilds a rule with m = after at state st.
func RestoreRetirement(after int, st RetirementState) *Retirement {
	r := NewRetirement(after)
	for _, q := range st.Retired {
		r.retired[q] = true
	}
	for q, n := range st.Streaks {
		if n > 0 && !r.retired[q] {
			r.streak[q] = n
		}
	}
	return r
}
