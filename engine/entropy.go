package engine

import (
	"fmt"
	"math"

	"github.com/exgrpo/exgrpo/wire"
)

// Entropies turns a completion into per-token entropy values of the given
// kind (wire.EntropySample, wire.EntropyTopKLower, wire.EntropyTopKUpper;
// GPU.md "Engine actors": no engine returns entropies). vocab is V.
//
// With S the distinct tokens of a top-k list (the sampled one may be among
// them), p_i their probabilities and r = 1 - sum p_i the mass outside S:
//   - sample: -log p(sampled), an unbiased one-sample estimate of H;
//   - topk-lower: H_S + r * (-log p_cap), where H_S = -sum p_i log p_i and
//     p_cap is the smallest p_i of S other than the sampled token's: every
//     token outside S is at most that likely (engines list the top tokens,
//     the sampled one possibly added), so its -p log p >= p * (-log p_cap);
//   - topk-upper: H_S + r * log((V - |S|) / r), the rest mass spread evenly.
func Entropies(c Completion, kind string, vocab int) ([]float32, error) {
	out := make([]float32, len(c.Tokens))
	if kind == wire.EntropySample {
		for i, lp := range c.LogProbs {
			out[i] = -lp
		}
		return out, nil
	}
	if kind != wire.EntropyTopKLower && kind != wire.EntropyTopKUpper {
		return nil, fmt.Errorf("%w: entropy kind %q", ErrConfig, kind)
	}
	if len(c.Top) != len(c.Tokens) {
		return nil, fmt.Errorf("%w: entropy kind %q needs top log-probs", ErrConfig, kind)
	}
	for i, list := range c.Top {
		out[i] = float32(topKEntropy(list, c.Tokens[i], kind, vocab))
	}
	return out, nil
}

func topKEntropy(list []TokenLogProb, sampled int32, kind string, vocab int) float64 {
	seen := make(map[int32]bool, len(list))
	var hs, mass float64
	pcap := math.Inf(1)
	for _, e := range list {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		p := math.Exp(float64(e.LogProb))
		hs -= p * float64(e.LogProb)
		mass += p
		if e.ID != sampled {
			pcap = min(pcap, p)
		}
	}
	r := 1 - mass
	if r <= 1e-12 {
		return hs
	}
	if kind == wire.EntropyTopKLower {
		if math.IsInf(pcap, 1) || pcap <= 0 {
			return hs
		}
		return hs + r*(-math.Log(min(pcap, 1)))
	}
	rest := vocab - len(seen)
	if rest <= 0 {
		return hs
	}
	return hs + r*math.Log(float64(rest)/r)
}
