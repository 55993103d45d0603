package learner

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
)

// SelectTrajectory chooses which stored trajectory of a replayed question to
// replay (ALGORITHM.md E7). cands are the question's stored successful
// trajectories, oldest first; only the most recent cfg.Candidates are
// considered. For the entropy rules the candidates are scored under the
// current policy at the sampling temperature (cfg.Temperature) with one
// trainer ScoreShared call per distinct prompt (a question's candidates
// normally share it), which equals Score on each prompt+response to float32
// rounding, and a candidate's value is the mean entropy of the full
// next-token distribution softmax(z/T) over its response tokens, EOS
// included.
// The random rule does not score (its ranking lists the candidates in stored
// order with NaN entropies). rng is used by the random rule only and may be
// nil otherwise.
//
// It returns the chosen position in cands and the ranking (lowest entropy
// first for the lowest and random rules, highest first for the highest rule).
func SelectTrajectory(ctx context.Context, tr trainer.Trainer, cfg Config, cands []Rollout, rng *rand.Rand) (chosen int, ranking []Ranked, err error) {
	if len(cands) == 0 {
		return -1, nil, fmt.Errorf("%w: no candidate trajectory to replay", ErrGroup)
	}
	first := max(0, len(cands)-cfg.Candidates) // E7 cap: the most recent
	pool := cands[first:]
	ranked := make([]Ranked, len(pool))
	for i, c := range pool {
		ranked[i] = Ranked{ID: c.ID, Index: first + i, Entropy: math.NaN()}
	}
	if cfg.Selection != SelectRandom {
		for _, c := range pool {
			if len(c.Tokens) == 0 {
				return -1, nil, fmt.Errorf("%w: candidate %q has no response tokens", ErrGroup, c.ID)
			}
		}
		// A question's candidates share its prompt: one policy.ScoreShared
		// call per distinct prompt (normally one) runs it once.
		for _, idx := range byPrompt(pool) {
			responses := make([][]int32, len(idx))
			for j, i := range idx {
				responses[j] = pool[i].Tokens
			}
			_, ents, err := tr.ScoreShared(ctx, pool[idx[0]].PromptTokens, responses, cfg.temperature())
			if err != nil {
				return -1, nil, fmt.Errorf("learner: score replay candidates: %w", err)
			}
			for j, i := range idx {
				ranked[i].Entropy = MeanEntropy(ents[j])
			}
		}
	} else if rng == nil {
		return -1, nil, fmt.Errorf("%w: random trajectory selection needs a seeded rng", ErrConfig)
	}
	c, ranking := Rank(cfg.Selection, ranked, rng)
	return first + c, ranking, nil
}

// byPrompt groups the positions of cands by equal prompt tokens, groups in
// order of first appearance, positions in order inside each.
func byPrompt(cands []Rollout) [][]int {
	var groups [][]int
next:
	for i, c := range cands {
		for g, idx := range groups {
			if slices.Equal(cands[idx[0]].PromptTokens, c.PromptTokens) {
				groups[g] = append(idx, i)
				continue next
			}
		}
		groups = append(groups, []int{i})
	}
	return groups
}

// concat builds the policy's view of a trajectory: prompt then response.
func concat(prompt, response []int32) policy.Seq {
	toks := make([]int32, 0, len(prompt)+len(response))
	toks = append(append(toks, prompt...), response...)
	return policy.Seq{Tokens: toks, PromptLen: len(prompt)}
}
