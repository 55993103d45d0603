package learner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
)

// ALGORITHM.md E7 with candidates whose prompts differ (interleaved, one of
// them BOS alone): every ranked entropy equals the mean entropy from
// policy.Score on that candidate alone, tolerance 1e-5, and the choice is
// the lowest.
func TestSelectTrajectoryMixedPrompts(t *testing.T) {
	m := tinyModel(t, 3)
	prompts := [][]int32{{tBOS, 3}, {tBOS, 5, 6}, {tBOS}}
	resp := [][]int32{{4, tEOS}, {2, 3, tEOS}, {6, 7, 7}, {tEOS}, {5, 5, 4, 3, tEOS}, {2, 2}, {7}}
	var cands []Rollout
	for i, r := range resp {
		p := prompts[i%len(prompts)]
		cands = append(cands, Rollout{ID: fmt.Sprint("c", i), PromptTokens: p, Tokens: r, LogProbs: make([]float32, len(r)), Reward: 1, Replayed: true})
	}
	want := make([]float64, len(cands))
	lo := 0
	for i, c := range cands {
		_, en := score(t, m, c)
		want[i] = MeanEntropy(en)
		if want[i] < want[lo]-1e-6 {
			lo = i
		}
	}
	cfg := DefaultConfig()
	cfg.Selection = SelectLowestEntropy
	got, ranking, err := SelectTrajectory(context.Background(), builtinOf(t, m), cfg, cands, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != lo {
		t.Errorf("chose %d, want %d (entropies %v)", got, lo, want)
	}
	if len(ranking) != len(cands) {
		t.Fatalf("ranking has %d entries, want %d", len(ranking), len(cands))
	}
	for _, r := range ranking {
		if math.Abs(r.Entropy-want[r.Index]) > 1e-5 {
			t.Errorf("candidate %d: entropy %v, Score alone %v (tol 1e-5)", r.Index, r.Entropy, want[r.Index])
		}
	}
}

// A candidate that does not fit the context, or has no prompt, is an error
// of the scoring, not a silent skip.
func TestSelectTrajectoryRejectsUnscorable(t *testing.T) {
	m := tinyModel(t, 1) // Context 16
	ok := Rollout{ID: "ok", PromptTokens: []int32{tBOS, 3}, Tokens: []int32{4, tEOS}, Reward: 1}
	for _, bad := range []Rollout{
		{ID: "long", PromptTokens: []int32{tBOS, 3}, Tokens: make([]int32, 15), Reward: 1},
		{ID: "no prompt", Tokens: []int32{4, tEOS}, Reward: 1},
	} {
		_, _, err := SelectTrajectory(context.Background(), builtinOf(t, m), DefaultConfig(), []Rollout{ok, bad}, nil)
		if !errors.Is(err, policy.ErrInput) {
			t.Errorf("%s: error %v, want policy.ErrInput", bad.ID, err)
		}
	}
}
