package replay

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// traj builds a trajectory with the given response tokens and log-probs -0.1*(i+1).
func traj(id string, tokens ...int32) Trajectory {
	lps := make([]float32, len(tokens))
	for i := range lps {
		lps[i] = -0.1 * float32(i+1)
	}
	return Trajectory{ID: id, PolicyVersion: 1, Step: 0, PromptTokens: []int32{1, 2, 3}, Tokens: tokens, LogProbs: lps}
}

// group builds a K-sized group with k correct, whose successes are the given trajectories.
func group(q string, K, k int, succ ...Trajectory) Group {
	return Group{QuestionID: q, Size: K, Correct: k, Successes: succ}
}

func mustNew(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustApply(t testing.TB, p *Pool, r Report) {
	t.Helper()
	if err := p.Apply(r); err != nil {
		t.Fatalf("apply step %d: %v", r.Step, err)
	}
}

// poolWithBuckets returns a pool whose bucket k holds sizes[k] questions,
// named "b<k>q<i>", each with one trajectory.
func poolWithBuckets(t testing.TB, cfg Config, sizes []int) *Pool {
	t.Helper()
	p := mustNew(t, cfg)
	r := Report{Step: 1, Mixed: true}
	for k := 1; k < len(sizes); k++ {
		for i := range sizes[k] {
			id := fmt.Sprintf("b%dq%d", k, i)
			r.Groups = append(r.Groups, group(id, cfg.K, k, traj(id+"/0", int32(k), int32(i))))
		}
	}
	mustApply(t, p, r)
	return p
}

// randomReports generates n reports over a universe of nq questions. The first
// warm reports are not mixed. Tokens come from a 3-symbol vocabulary with
// lengths 1..4, so duplicates are frequent; prompts are fixed per question
// except now and then, to exercise unshared prompts.
func randomReports(seed uint64, K, nq, n, warm int) []Report {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([]Report, n)
	step := int64(0)
	for s := range out {
		step += 1 + int64(rng.IntN(3))
		r := Report{Step: step, Mixed: s >= warm}
		perm := rng.Perm(nq)[:1+rng.IntN(min(nq, 12))]
		for _, qi := range perm {
			q := fmt.Sprintf("q%03d", qi)
			var k int
			switch u := rng.IntN(20); {
			case u == 0:
				k = K
			case u < 5:
				k = 0
			default:
				k = 1 + rng.IntN(K-1)
			}
			g := Group{QuestionID: q, Size: K, Correct: k}
			for j := range rng.IntN(k + 1) {
				toks := make([]int32, 1+rng.IntN(4))
				for i := range toks {
					toks[i] = int32(rng.IntN(3))
				}
				lps := make([]float32, len(toks))
				for i := range lps {
					lps[i] = -rng.Float32()
				}
				prompt := []int32{int32(qi), 9}
				if rng.IntN(10) == 0 {
					prompt = []int32{int32(qi), 8, 8}
				}
				g.Successes = append(g.Successes, Trajectory{
					ID: fmt.Sprintf("%d/%s/%d", step, q, j), PolicyVersion: step, Step: step,
					PromptTokens: prompt, Tokens: toks, LogProbs: lps,
				})
			}
			r.Groups = append(r.Groups, g)
		}
		out[s] = r
	}
	return out
}

func nan() float64 { var z float64; return z / z }

func rngFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }
