package learner

import (
	"fmt"
	"math"
)

// Item is one response of a mini-batch as the objective sees it.
type Item struct {
	// Advantage is the trajectory's Dr.GRPO advantage, shared by all of its
	// response tokens (E9).
	Advantage float32
	// Behaviour holds the behaviour log-prob of each response token: the
	// actor's record for a fresh rollout (E10), the stored one for replayed
	// experience (E11).
	Behaviour []float32
	// Replayed selects the policy-shaped loss of E11.
	Replayed bool
}

// ObjectiveStats describes one evaluation of the objective.
type ObjectiveStats struct {
	Loss           float64 // PolicyLoss + EntropyTerm, the value minimised
	PolicyLoss     float64 // sum of token losses / LMax (E10-E12)
	EntropyTerm    float64 // -CEnt * mean token entropy (E13)
	MeanEntropy    float64 // mean token entropy over the mini-batch, nats
	Tokens         int     // response tokens in the mini-batch
	ReplayedTokens int     // of which replayed
	Clipped        int     // fresh tokens whose PPO surrogate took the clipped branch (zero gradient)
	MeanRatioFresh float64 // mean w over fresh tokens (1 when on-policy and unchanged)
	MeanRatioRep   float64 // mean w over replayed tokens
	// Engine/trainer mismatch over fresh tokens (GPU.md): on the first
	// mini-batch of a step, before any update, w is the ratio of the
	// trainer's probability to the engine's, 1 when they agree.
	MeanAbsLogW float64 // mean |log w| over fresh tokens
	Capped      int     // fresh tokens whose w exceeded TruncCap (truncated)
	// CoefMass is the sum over the mini-batch's response tokens of
	// |dL/dlogp_t| (the policy term of E10-E12, entropy bonus excluded);
	// CoefMassReplayed the same sum over replayed tokens only. The
	// parameter gradient is sum_t (dL/dlogp_t) grad logp_t, so
	// CoefMassReplayed / CoefMass is the replayed share of its weight
	// (not of its norm: token gradients are not parallel).
	CoefMass, CoefMassReplayed float64
}

// Objective evaluates the ExGRPO loss of one mini-batch and its derivatives
// with respect to each response token's current log-prob and entropy, the
// two inputs of the policy's backward pass. logps and ents are the current
// policy's values (policy.Pass.LogProbs and Entropies), one row per item and
// one entry per response token. mixed selects mixed mode (E5); before it,
// fresh tokens use the PPO clipped surrogate and no item may be replayed.
//
// Per token t of a response with advantage A (ALGORITHM.md E10, E11):
//
//	fresh, mixed:      w = exp(logp - logp_behaviour),  loss = -A*w,                    dloss/dlogp = -A*w
//	fresh, not mixed:  loss = -min(A*w, A*clip(w, 1-eps, 1+eps)),                        dloss/dlogp = -A*w or 0 when clipped
//	replayed:          w = exp(logp - logp_stored),     loss = -A*f(w), f(w) = w/(w+beta), dloss/dlogp = -A*beta/(w+beta)^2 * w
//	replayed, no shaping: loss = -A*w; replayed, no IS correction: logp_stored := logp (detached), so w = 1
//	fresh, TruncCap C > 0: w := min(w, C) in the two fresh rows above (value and gradient, truncated IS)
//
// and the mini-batch loss is (E12, E13)
//
//	L = sum_t loss_t / LMax  -  CEnt * (sum_t H_t) / N,   N = number of response tokens,
//
// so dL/dlogp_t = dloss_t/dlogp_t / LMax and dL/dH_t = -CEnt / N. Sums run in
// float64; the derivatives are returned as float32 in fresh slices.
func Objective(cfg Config, mixed bool, items []Item, logps, ents [][]float32) (ObjectiveStats, [][]float32, [][]float32, error) {
	return objective(cfg, mixed, items, logps, ents, 0)
}

// objective is Objective for one micro-batch of a mini-batch of entTokens
// response tokens (E13's N; 0 = the items' own count): only the entropy
// derivative -CEnt/N depends on the rest of the mini-batch.
func objective(cfg Config, mixed bool, items []Item, logps, ents [][]float32, entTokens int) (ObjectiveStats, [][]float32, [][]float32, error) {
	var st ObjectiveStats
	if len(logps) != len(items) || len(ents) != len(items) {
		return st, nil, nil, fmt.Errorf("%w: %d items, %d log-prob rows, %d entropy rows", ErrShape, len(items), len(logps), len(ents))
	}
	for i, it := range items {
		if len(logps[i]) != len(it.Behaviour) || len(ents[i]) != len(it.Behaviour) {
			return st, nil, nil, fmt.Errorf("%w: item %d has %d behaviour log-probs, %d current log-probs, %d entropies", ErrShape, i, len(it.Behaviour), len(logps[i]), len(ents[i]))
		}
		if it.Replayed && !mixed {
			return st, nil, nil, fmt.Errorf("%w: item %d is replayed before the delayed start (E5)", ErrGroup, i)
		}
		st.Tokens += len(it.Behaviour)
	}
	dLogp := make([][]float32, len(items))
	dEnt := make([][]float32, len(items))
	if st.Tokens == 0 {
		return st, dLogp, dEnt, nil
	}

	lmax := float64(cfg.LMax)
	if entTokens <= 0 {
		entTokens = st.Tokens
	}
	entGrad := float32(-cfg.CEnt / float64(entTokens))
	var sumLoss, sumEnt, sumWFresh, sumWRep, sumAbsLogW float64
	freshTokens := 0
	for i, it := range items {
		a := float64(it.Advantage)
		dLogp[i] = make([]float32, len(it.Behaviour))
		dEnt[i] = make([]float32, len(it.Behaviour))
		for t, lb := range it.Behaviour {
			lp := float64(logps[i][t])
			sumEnt += float64(ents[i][t])
			dEnt[i][t] = entGrad
			var loss, grad float64
			switch {
			case it.Replayed: // ALGORITHM.md E11
				behaviour := float64(lb)
				if cfg.NoISCorrection {
					behaviour = lp
				}
				w := math.Exp(lp - behaviour)
				sumWRep += w
				st.ReplayedTokens++
				if cfg.NoPolicyShaping {
					loss, grad = -a*w, -a*w
				} else {
					f := w / (w + cfg.Beta)
					fp := cfg.Beta / ((w + cfg.Beta) * (w + cfg.Beta))
					loss, grad = -a*f, -a*fp*w // dw/dlogp = w
				}
			case mixed: // ALGORITHM.md E10, mixed mode: no clipping
				w := math.Exp(lp - float64(lb))
				sumWFresh += w
				sumAbsLogW += math.Abs(lp - float64(lb))
				freshTokens++
				w = truncate(cfg, w, &st)
				loss, grad = -a*w, -a*w
			default: // ALGORITHM.md E10, before the delayed start: PPO clip
				w := math.Exp(lp - float64(lb))
				sumWFresh += w
				sumAbsLogW += math.Abs(lp - float64(lb))
				freshTokens++
				w = truncate(cfg, w, &st)
				unclipped := a * w
				clipped := a * math.Min(math.Max(w, 1-cfg.Eps), 1+cfg.Eps)
				if unclipped <= clipped {
					loss, grad = -unclipped, -a*w
				} else {
					loss, grad = -clipped, 0
					st.Clipped++
				}
			}
			sumLoss += loss
			dLogp[i][t] = float32(grad / lmax) // ALGORITHM.md E12
			st.CoefMass += math.Abs(grad / lmax)
			if it.Replayed {
				st.CoefMassReplayed += math.Abs(grad / lmax)
			}
		}
	}
	st.PolicyLoss = sumLoss / lmax
	st.MeanEntropy = sumEnt / float64(st.Tokens)
	st.EntropyTerm = -cfg.CEnt * st.MeanEntropy // ALGORITHM.md E13
	st.Loss = st.PolicyLoss + st.EntropyTerm
	if freshTokens > 0 {
		st.MeanRatioFresh = sumWFresh / float64(freshTokens)
		st.MeanAbsLogW = sumAbsLogW / float64(freshTokens)
	}
	if st.ReplayedTokens > 0 {
		st.MeanRatioRep = sumWRep / float64(st.ReplayedTokens)
	}
	return st, dLogp, dEnt, nil
}

// truncate is truncated importance sampling on a fresh token (GPU.md,
// engine/trainer mismatch): with TruncCap > 0, w above the cap is replaced
// by the cap in the token's loss and gradient (sg(min(w, C))·A·∇logp, the
// estimator of verl and slime), and counted.
func truncate(cfg Config, w float64, st *ObjectiveStats) float64 {
	if cfg.TruncCap > 0 && w > cfg.TruncCap {
		st.Capped++
		return cfg.TruncCap
	}
	return w
}
