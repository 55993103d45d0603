package learner

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Ranked is one stored trajectory considered for replay with its mean token
// entropy under the current policy (E7).
type Ranked struct {
	ID      string
	Index   int     // position in the candidate list given (oldest first)
	Entropy float64 // mean per-token entropy of the response, EOS included, in nats
}

// MeanEntropy is the masked mean of per-token entropies over a response (E7);
// NaN for an empty response, so that it never wins a ranking.
func MeanEntropy(ents []float32) float64 {
	if len(ents) == 0 {
		return math.NaN()
	}
	var s float64
	for _, h := range ents {
		s += float64(h)
	}
	return s / float64(len(ents))
}

// Rank orders candidates by mean entropy for the selection rule (E7) and
// returns the chosen candidate's position in the input and the full ranking.
// Lowest entropy: ascending, ties to the earliest (lowest Index). Highest
// entropy: descending, ties to the earliest. Random: a uniform draw from rng;
// the ranking is then the ascending one, for inspection. NaN entropies sort
// last in every rule.
func Rank(sel Selection, cands []Ranked, rng *rand.Rand) (chosen int, ranking []Ranked) {
	if len(cands) == 0 {
		return -1, nil
	}
	ranking = append([]Ranked(nil), cands...)
	desc := sel == SelectHighestEntropy
	sort.SliceStable(ranking, func(a, b int) bool {
		ea, eb := ranking[a].Entropy, ranking[b].Entropy
		na, nb := math.IsNaN(ea), math.IsNaN(eb)
		switch {
		case na || nb:
			return !na && nb
		case ea != eb:
			if desc {
				return ea > eb
			}
			return ea < eb
		default:
			return ranking[a].Index < ranking[b].Index
		}
	})
	if sel == SelectRandom {
		return rng.IntN(len(cands)), ranking
	}
	for i, c := range cands {
		if c.Index == ranking[0].Index {
			return i, ranking
		}
	}
	return 0, ranking // unreachable: ranking[0] comes from cands
}
