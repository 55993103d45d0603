package learner

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"github.com/exgrpo/exgrpo/replay"
)

// E4 with RetireAfter = m: the fresh sampler's rule (Retirement) and the
// replay pool's (replay.Config.RetireAfter) fold the same steps into the
// same retirements, for m = 0 (never), 1 (the paper), 2 and 3, with
// steps before the delayed start that count for neither; and a rule
// restored from its state mid-way goes on exactly like the original.
func TestRetirementAgreesWithPool(t *testing.T) {
	const K, nq, steps = 4, 12, 300
	for _, m := range []int{0, 1, 2, 3} {
		t.Run(fmt.Sprintf("m=%d", m), func(t *testing.T) {
			cfg := replay.DefaultConfig()
			cfg.K, cfg.Mu, cfg.RetireAfter = K, 2, m
			pool, err := replay.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rule := NewRetirement(m)
			var restored *Retirement
			rng := rand.New(rand.NewPCG(uint64(m), 1))
			var got []string
			for s := range steps {
				sum := StepSummary{Step: int64(s), Mixed: s >= 5}
				rep := replay.Report{Step: int64(s), Mixed: sum.Mixed}
				for _, qi := range rng.Perm(nq)[:4] {
					q := fmt.Sprintf("q%02d", qi)
					k := K // mostly solved questions, so that runs of k = K occur
					if rng.IntN(3) == 0 {
						k = rng.IntN(K)
					}
					sum.Groups = append(sum.Groups, GroupSummary{QuestionID: q, Size: K, Correct: k})
					g := replay.Group{QuestionID: q, Size: K, Correct: k}
					for j := range k {
						g.Successes = append(g.Successes, replay.Trajectory{ID: fmt.Sprintf("%d/%s/%d", s, q, j),
							Tokens: []int32{int32(s), int32(j)}, LogProbs: []float32{-1, -1}})
					}
					rep.Groups = append(rep.Groups, g)
				}
				if err := pool.Apply(rep); err != nil {
					t.Fatal(err)
				}
				out := rule.Fold(sum)
				got = append(got, out...)
				if restored != nil {
					if o := restored.Fold(sum); !reflect.DeepEqual(o, out) {
						t.Fatalf("step %d: restored rule retires %v, original %v", s, o, out)
					}
				}
				if s == steps/2 {
					restored = RestoreRetirement(m, rule.State())
				}
				for _, q := range out {
					if !pool.Retired(q) {
						t.Fatalf("step %d: rule retires %s, the pool does not", s, q)
					}
				}
			}
			want := pool.RetiredIDs()
			sort.Strings(want)
			sort.Strings(got)
			if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("rule retired %v, pool %v", got, want)
			}
			if m == 0 && len(got) != 0 {
				t.Fatalf("m = 0 retired %v", got)
			}
			if m >= 1 && len(got) == 0 {
				t.Fatal("m >= 1 retired nothing: the test exercises nothing")
			}
		})
	}
}
