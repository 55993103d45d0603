package learner

import (
	"fmt"
	"math"
)

// Rollout is one trajectory of a group as the learner sees it: a fresh
// rollout sampled for this step, or the replayed experience of a pool
// question. The learner reads the slices and never modifies them.
type Rollout struct {
	ID           string
	PromptTokens []int32   // the question as encoded for the policy
	Tokens       []int32   // response tokens, EOS included when emitted
	LogProbs     []float32 // behaviour log-prob per response token: recorded by the actor (fresh) or stored with the experience (replayed)
	Version      int64     // policy version that sampled it
	Reward       float32   // 0 or 1 from the verifier; a replayed trajectory is re-verified
	Reason       string    // the verifier's verdict reason
	Replayed     bool
}

func (r Rollout) validate() error {
	if len(r.Tokens) == 0 {
		return fmt.Errorf("%w: rollout %q has no response tokens", ErrGroup, r.ID)
	}
	if len(r.LogProbs) != len(r.Tokens) {
		return fmt.Errorf("%w: rollout %q has %d log-probs for %d tokens", ErrGroup, r.ID, len(r.LogProbs), len(r.Tokens))
	}
	if r.Reward != 0 && r.Reward != 1 {
		return fmt.Errorf("%w: rollout %q has reward %v, want 0 or 1", ErrGroup, r.ID, r.Reward)
	}
	for _, lp := range r.LogProbs {
		// A log-prob is <= 0; allow rounding noise from other backends.
		if math.IsNaN(float64(lp)) || lp > 1e-3 {
			return fmt.Errorf("%w: rollout %q has behaviour log-prob %v", ErrGroup, r.ID, lp)
		}
	}
	return nil
}

// Group is one question's K trajectories with their advantages (E8, E9).
type Group struct {
	QuestionID string
	// Rollouts holds the replayed trajectory first when there is one, then
	// the fresh rollouts in the order given.
	Rollouts []Rollout
	// Advantages[i] is the Dr.GRPO advantage of Rollouts[i] (E9).
	Advantages []float32
	// Candidates is the E7 ranking of the replayed question's stored
	// trajectories (lowest entropy first), kept for the step report.
	Candidates []Ranked
}

// Replayed reports whether the group's first rollout is replayed experience.
func (g Group) Replayed() bool { return len(g.Rollouts) > 0 && g.Rollouts[0].Replayed }

// Correct returns k, the number of correct rollouts, the replayed one
// included (E2 counts it).
func (g Group) Correct() int {
	k := 0
	for _, r := range g.Rollouts {
		if r.Reward == 1 {
			k++
		}
	}
	return k
}

// NewGroup assembles a group of exactly k rollouts (ALGORITHM.md E8): the
// replayed trajectory (nil for a fresh question) followed by k-1 fresh ones,
// or k fresh ones. It computes the advantages (E9). A group short of rollouts
// (for instance after stale ones were dropped) is an error: the caller must
// top it up, because the advantage baseline is the mean over K.
func NewGroup(questionID string, k int, replayed *Rollout, fresh []Rollout, candidates []Ranked) (Group, error) {
	want := k
	if replayed != nil {
		want = k - 1
	}
	if len(fresh) != want {
		return Group{}, fmt.Errorf("%w: question %q has %d fresh rollouts, want %d (K = %d, replayed = %t)", ErrGroup, questionID, len(fresh), want, k, replayed != nil)
	}
	g := Group{QuestionID: questionID, Rollouts: make([]Rollout, 0, k), Candidates: candidates}
	if replayed != nil {
		r := *replayed
		r.Replayed = true
		g.Rollouts = append(g.Rollouts, r)
	}
	for _, r := range fresh {
		if r.Replayed {
			return Group{}, fmt.Errorf("%w: question %q: fresh rollout %q is marked replayed", ErrGroup, questionID, r.ID)
		}
		g.Rollouts = append(g.Rollouts, r)
	}
	for _, r := range g.Rollouts {
		if err := r.validate(); err != nil {
			return Group{}, fmt.Errorf("question %q: %w", questionID, err)
		}
	}
	g.Advantages = Advantages(rewards(g.Rollouts))
	return g, nil
}

func rewards(rs []Rollout) []float32 {
	out := make([]float32, len(rs))
	for i, r := range rs {
		out[i] = r.Reward
	}
	return out
}

// Advantages returns the Dr.GRPO advantages A_i = r_i - mean_j r_j, without
// dividing by the standard deviation (ALGORITHM.md E9). The mean is taken in
// float64 so that a group of identical rewards gets exactly zero.
func Advantages(r []float32) []float32 {
	if len(r) == 0 {
		return nil
	}
	var sum float64
	for _, x := range r {
		sum += float64(x)
	}
	mean := sum / float64(len(r))
	out := make([]float32, len(r))
	for i, x := range r {
		out[i] = float32(float64(x) - mean)
	}
	return out
}

// FilterStale keeps the fresh rollouts that the policy of version current
// may train on, those with current - Version <= s (current equals the step
// while no learner restart renumbered the versions), and returns how many it
// dropped (the asynchrony
// extension of ALGORITHM.md). Replayed experience is never dropped here: it
// is off-policy by design and corrected by E11. The input is not modified.
func FilterStale(current int64, s int, rs []Rollout) (kept []Rollout, dropped int) {
	kept = make([]Rollout, 0, len(rs))
	for _, r := range rs {
		if !r.Replayed && current-r.Version > int64(s) {
			dropped++
			continue
		}
		kept = append(kept, r)
	}
	return kept, dropped
}

// Pass1 returns the batch Pass@1 of a step (E5): correct fresh rollouts over
// all fresh rollouts. Replayed trajectories are left out because they were
// not sampled this step (they are correct by construction); the delayed-start
// switch is decided before any replay happens, so this only affects the
// reported figure once mixed mode is on. It returns 0 for no rollouts.
func Pass1(groups []Group) float64 {
	n, k := 0, 0
	for _, g := range groups {
		for _, r := range g.Rollouts {
			if r.Replayed {
				continue
			}
			n++
			if r.Reward == 1 {
				k++
			}
		}
	}
	if n == 0 {
		return 0
	}
	return float64(k) / float64(n)
}

// NextMixed is the delayed-start switch (ALGORITHM.md E5). Given whether the
// step just trained was in mixed mode and its batch Pass@1, it says whether
// the next step is. Mixed mode is sticky; it begins on the step after the
// first step whose Pass@1 exceeds cfg.Start; never in the on-policy baseline.
// The state is one bit, so a restarted learner recovers it from the last step
// report (its Mixed flag and Pass@1).
func NextMixed(cfg Config, mixed bool, pass1 float64) bool {
	if cfg.OnPolicyOnly {
		return false
	}
	return mixed || pass1 > cfg.Start
}

// InitialMixed says whether step 0 trains in mixed mode: only when the
// threshold is <= 0 (E5, the paper's setting for a weak base model).
func InitialMixed(cfg Config) bool {
	return !cfg.OnPolicyOnly && cfg.Start <= 0
}
