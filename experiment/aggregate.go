package experiment

import (
	"math"
	"sort"
)

// Cell is a figure over seeds: mean, sample standard deviation (0 for one
// seed), minimum and maximum.
type Cell struct {
	Mean float64 `json:"mean"`
	SD   float64 `json:"sd"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	N    int     `json:"n"`
}

// NewCell summarises xs; the zero Cell when xs is empty.
func NewCell(xs []float64) Cell {
	if len(xs) == 0 {
		return Cell{}
	}
	c := Cell{N: len(xs), Min: math.Inf(1), Max: math.Inf(-1)}
	for _, x := range xs {
		c.Mean += x
		c.Min, c.Max = math.Min(c.Min, x), math.Max(c.Max, x)
	}
	c.Mean /= float64(len(xs))
	if len(xs) > 1 {
		var ss float64
		for _, x := range xs {
			ss += (x - c.Mean) * (x - c.Mean)
		}
		c.SD = math.Sqrt(ss / float64(len(xs)-1))
	}
	return c
}

// Row is one arm of one setting over its seeds.
type Row struct {
	Setting string `json:"setting"`
	Arm     string `json:"arm"`
	Seeds   int    `json:"seeds"`
	BaseID  Cell   `json:"base_id"`
	FinalID Cell   `json:"final_id"`
	BaseOOD Cell   `json:"base_ood"`
	OOD     Cell   `json:"ood"`
	// OODSets is the final pass@1 per OOD set.
	OODSets map[string]Cell `json:"ood_sets"`
	// Target is the setting's on-policy mean final held-out pass@1; Reach
	// the rollouts at the first evaluation at or above it, over the Reached
	// seeds that got there (evaluations are EvalEvery steps apart, so this
	// is a coarse figure).
	Target  float64 `json:"target"`
	Reach   Cell    `json:"reach_rollouts"`
	Reached int     `json:"reached"`
	// Over all steps of all seeds: the share of fresh groups with a
	// learning signal (0 < k < K), and of replayed groups with a signal,
	// all correct (k = K) and with the replayed success as the only one.
	FreshSignal    float64 `json:"fresh_signal"`
	ReplayedGroups int     `json:"replayed_groups"`
	ReplayedSignal float64 `json:"replayed_signal"`
	ReplayedAllOK  float64 `json:"replayed_all_correct"`
	ReplayedOnly   float64 `json:"replayed_only"`
	// Mean token entropies over mixed steps with replay: replayed
	// trajectories (under the replaying policy), fresh rollouts, and the
	// correct fresh ones.
	ReplayedEntropy     float64 `json:"replayed_entropy"`
	FreshEntropy        float64 `json:"fresh_entropy"`
	FreshCorrectEntropy float64 `json:"fresh_correct_entropy"`
	// FinalBuckets is the mean pool occupancy of buckets 0..K-1 at the last
	// step; ReplayedFrom the share of replayed questions drawn from each.
	FinalBuckets []float64 `json:"final_buckets"`
	ReplayedFrom []float64 `json:"replayed_from"`
	FinalPool    Cell      `json:"final_pool"`
	Retired      Cell      `json:"retired"`
	StepSeconds  Cell      `json:"step_seconds"`
	Steps        Cell      `json:"steps"`
	Exhausted    int       `json:"exhausted"`
	MixedFrom    Cell      `json:"mixed_from"` // over the seeds that switched
	// Issue 16 diagnostics. ReplayedTokenShare and ReplayedGradShare are
	// means over the steps with replay (Step.ReplayedTokenShare,
	// Step.ReplayedGradShare); FirstClipped and Clipped means over all
	// steps. ReplayQuestions, ReplayMax and ReplayTop10 are over seeds
	// (ReplayStats); ReplayHist the mean number of questions per
	// replay-count bin; RetiredPass1 the final pass@1 on retired training
	// questions over the seeds that retired any.
	ReplayedTokenShare float64   `json:"replayed_token_share"`
	ReplayedGradShare  float64   `json:"replayed_grad_share"`
	FirstClipped       float64   `json:"first_clipped"`
	Clipped            float64   `json:"clipped"`
	ReplayQuestions    Cell      `json:"replay_questions"`
	ReplayMax          Cell      `json:"replay_max"`
	ReplayTop10        Cell      `json:"replay_top10_share"`
	ReplayHist         []float64 `json:"replay_hist"`
	RetiredPass1       Cell      `json:"retired_pass1"`
	SolvedPass1        Cell      `json:"solved_pass1"`
}

// Aggregate folds runs into one Row per (setting, arm), in the plan's order.
// The reach target of a setting is the mean final held-out pass@1 of its
// first on-policy arm; without one, Target is 0 and Reach empty.
func Aggregate(p Plan, runs []RunResult) []Row {
	by := map[[2]string][]RunResult{}
	for _, r := range runs {
		k := [2]string{r.Setting, r.Arm}
		by[k] = append(by[k], r)
	}
	var rows []Row
	for _, s := range p.Settings {
		target := math.NaN()
		for _, a := range s.Arms {
			if a.OnPolicy {
				if rs := by[[2]string{s.Name, a.Name}]; len(rs) > 0 {
					var xs []float64
					for _, r := range rs {
						xs = append(xs, r.FinalID)
					}
					target = NewCell(xs).Mean
				}
				break
			}
		}
		for _, a := range s.Arms {
			rs := by[[2]string{s.Name, a.Name}]
			if len(rs) == 0 {
				continue
			}
			rows = append(rows, aggregateArm(p, s.Name, a.Name, rs, target))
		}
	}
	return rows
}

func aggregateArm(p Plan, setting, arm string, rs []RunResult, target float64) Row {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Seed < rs[j].Seed })
	row := Row{Setting: setting, Arm: arm, Seeds: len(rs), OODSets: map[string]Cell{},
		FinalBuckets: make([]float64, p.K), ReplayedFrom: make([]float64, p.K)}
	col := func(f func(RunResult) float64) Cell {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return NewCell(xs)
	}
	row.BaseID = col(func(r RunResult) float64 { return r.BaseID })
	row.FinalID = col(func(r RunResult) float64 { return r.FinalID })
	row.BaseOOD = col(func(r RunResult) float64 { return r.BaseOODM })
	row.OOD = col(func(r RunResult) float64 { return r.OOD })
	for name := range rs[0].FinalOOD {
		row.OODSets[name] = col(func(r RunResult) float64 { return r.FinalOOD[name] })
	}
	row.Steps = col(func(r RunResult) float64 { return float64(len(r.Steps)) })
	row.StepSeconds = col(func(r RunResult) float64 {
		var s float64
		for _, st := range r.Steps {
			s += st.StepSeconds
		}
		return s / math.Max(1, float64(len(r.Steps)))
	})
	row.FinalPool = col(func(r RunResult) float64 { return float64(last(r).Pool) })
	row.Retired = col(func(r RunResult) float64 { return float64(last(r).Retired) })
	var mixedFrom []float64
	for _, r := range rs {
		if r.MixedFrom >= 0 {
			mixedFrom = append(mixedFrom, float64(r.MixedFrom))
		}
		if r.Exhausted {
			row.Exhausted++
		}
	}
	row.MixedFrom = NewCell(mixedFrom)

	if !math.IsNaN(target) {
		row.Target = target
		var reach []float64
		for _, r := range rs {
			if n, ok := RolloutsToReach(r.Evals, target); ok {
				reach = append(reach, float64(n))
			}
		}
		row.Reach, row.Reached = NewCell(reach), len(reach)
	}

	var fresh, freshSig, repOK, repOnly, repSig int
	var repFrom = make([]int, p.K)
	var hRep, hFresh, hFreshOK float64
	var nMixed, nFreshOK int
	for _, r := range rs {
		for _, st := range r.Steps {
			fresh += st.FreshGroups
			freshSig += st.FreshSignal
			row.ReplayedGroups += st.Replayed
			repSig += st.ReplayedSignal
			repOK += st.ReplayedAllOK
			repOnly += st.ReplayedOnly
			for k, n := range st.ReplayedFrom {
				if k < len(repFrom) {
					repFrom[k] += n
				}
			}
			if st.Replayed > 0 {
				hRep += st.ReplayedEntropy
				hFresh += st.FreshEntropy
				nMixed++
				if st.FreshCorrectEntropy > 0 {
					hFreshOK += st.FreshCorrectEntropy
					nFreshOK++
				}
			}
		}
		if l := last(r); len(l.Buckets) == p.K {
			for k, n := range l.Buckets {
				row.FinalBuckets[k] += float64(n) / float64(len(rs))
			}
		}
	}
	row.FreshSignal = ratio(freshSig, fresh)
	row.ReplayedSignal = ratio(repSig, row.ReplayedGroups)
	row.ReplayedAllOK = ratio(repOK, row.ReplayedGroups)
	row.ReplayedOnly = ratio(repOnly, row.ReplayedGroups)
	for k, n := range repFrom {
		row.ReplayedFrom[k] = ratio(n, row.ReplayedGroups)
	}
	if nMixed > 0 {
		row.ReplayedEntropy, row.FreshEntropy = hRep/float64(nMixed), hFresh/float64(nMixed)
	}
	if nFreshOK > 0 {
		row.FreshCorrectEntropy = hFreshOK / float64(nFreshOK)
	}
	diagnostics(&row, rs)
	return row
}

// diagnostics fills the issue 16 figures of row from its runs.
func diagnostics(row *Row, rs []RunResult) {
	var tok, grad, first, clip float64
	var nRep, nAll int
	var retired, solved []float64
	for _, r := range rs {
		for _, st := range r.Steps {
			first += st.FirstClipped
			clip += st.Clipped
			nAll++
			if st.Replayed > 0 {
				tok += st.ReplayedTokenShare
				grad += st.ReplayedGradShare
				nRep++
			}
		}
		if r.RetiredN > 0 {
			retired = append(retired, r.RetiredPass1)
		}
		if r.SolvedN > 0 {
			solved = append(solved, r.SolvedPass1)
		}
		for i, n := range r.Replays.Hist {
			for len(row.ReplayHist) <= i {
				row.ReplayHist = append(row.ReplayHist, 0)
			}
			row.ReplayHist[i] += float64(n) / float64(len(rs))
		}
	}
	if nRep > 0 {
		row.ReplayedTokenShare, row.ReplayedGradShare = tok/float64(nRep), grad/float64(nRep)
	}
	if nAll > 0 {
		row.FirstClipped, row.Clipped = first/float64(nAll), clip/float64(nAll)
	}
	col := func(f func(RunResult) float64) Cell {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return NewCell(xs)
	}
	if row.ReplayedGroups > 0 {
		row.ReplayQuestions = col(func(r RunResult) float64 { return float64(r.Replays.Questions) })
		row.ReplayMax = col(func(r RunResult) float64 { return float64(r.Replays.Max) })
		row.ReplayTop10 = col(func(r RunResult) float64 { return r.Replays.Top10Share })
	}
	row.RetiredPass1 = NewCell(retired)
	row.SolvedPass1 = NewCell(solved)
}

// RolloutsToReach returns the rollouts at the first evaluation whose
// pass@1 is at least target, and whether there is one.
func RolloutsToReach(evals []Eval, target float64) (int, bool) {
	for _, e := range evals {
		if e.Pass1 >= target {
			return e.Rollouts, true
		}
	}
	return 0, false
}

func last(r RunResult) Step {
	if len(r.Steps) == 0 {
		return Step{}
	}
	return r.Steps[len(r.Steps)-1]
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
