package experiment

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/verifier"
)

// Step is one training step of a run, as the curves and diagnostics need it.
type Step struct {
	Step     int64   `json:"step"`
	Rollouts int     `json:"rollouts"` // fresh rollouts so far, this step's included
	Mixed    bool    `json:"mixed"`
	Reward   float64 `json:"reward"` // batch Pass@1 over fresh rollouts (E5)
	Entropy  float64 `json:"entropy"`
	// FreshEntropy is the mean token entropy of the step's fresh rollouts
	// (from sampling), FreshCorrectEntropy of the correct ones only;
	// ReplayedEntropy is the mean (over replayed trajectories) of the chosen
	// trajectory's mean token entropy under the policy that replays it (E7).
	FreshEntropy        float64 `json:"fresh_entropy"`
	FreshCorrectEntropy float64 `json:"fresh_correct_entropy"`
	ReplayedEntropy     float64 `json:"replayed_entropy"`
	// Groups with signal have 0 < k < K (a non-zero advantage, E9).
	FreshGroups    int `json:"fresh_groups"`
	FreshSignal    int `json:"fresh_signal"`
	Replayed       int `json:"replayed"`
	ReplayedSignal int `json:"replayed_signal"`
	ReplayedAllOK  int `json:"replayed_all_correct"` // k = K: no signal, and the question retires
	ReplayedOnly   int `json:"replayed_only"`        // k = 1: the replayed success is the group's only one
	// ReplayedFrom[k] counts replayed questions drawn from bucket k.
	ReplayedFrom []int `json:"replayed_from"`
	// Buckets[k] is the pool's occupancy of bucket k after the fold.
	Buckets     []int   `json:"buckets"`
	Pool        int     `json:"pool"`
	Retired     int     `json:"retired"`
	Skipped     int     `json:"skipped"`
	StepSeconds float64 `json:"step_seconds"`
	Epoch       int     `json:"epoch"`
	// ReplayedTokenShare is the replayed share of the step's response
	// tokens; ReplayedGradShare the replayed share of its policy-gradient
	// weight (learner.StepSummary.ReplayedCoefShare: sum of |dL/dlogp| over
	// replayed tokens over the sum over all tokens, E10-E12).
	ReplayedTokenShare float64 `json:"replayed_token_share"`
	ReplayedGradShare  float64 `json:"replayed_grad_share"`
	// FirstClipped is the fraction of the first mini-batch's fresh tokens
	// on the PPO clipped branch (E10), Clipped the same over the step.
	FirstClipped float64 `json:"first_clipped"`
	Clipped      float64 `json:"clipped"`
}

// ReplayStats is how a run's replays spread over questions (issue 16:
// E6 weights buckets, not questions, so a thin medium bucket is replayed
// at nearly every step).
type ReplayStats struct {
	Replays   int `json:"replays"`   // replayed groups
	Questions int `json:"questions"` // distinct questions replayed
	Max       int `json:"max"`       // replays of the most replayed question
	// Top10Share is the share of all replays that went to the 10 most
	// replayed questions.
	Top10Share float64 `json:"top10_share"`
	// Hist[i] is the number of questions replayed n times, n in
	// [2^i, 2^(i+1)): 1, 2-3, 4-7, 8-15, ...
	Hist []int `json:"hist"`
}

// NewReplayStats summarises replay counts per question.
func NewReplayStats(counts map[string]int) ReplayStats {
	var st ReplayStats
	ns := make([]int, 0, len(counts))
	for _, n := range counts {
		if n <= 0 {
			continue
		}
		ns = append(ns, n)
		st.Replays += n
		st.Max = max(st.Max, n)
		b := bits.Len(uint(n)) - 1
		for len(st.Hist) <= b {
			st.Hist = append(st.Hist, 0)
		}
		st.Hist[b]++
	}
	st.Questions = len(ns)
	sort.Sort(sort.Reverse(sort.IntSlice(ns)))
	top := 0
	for i := 0; i < len(ns) && i < 10; i++ {
		top += ns[i]
	}
	if st.Replays > 0 {
		st.Top10Share = float64(top) / float64(st.Replays)
	}
	return st
}

// Eval is one in-distribution evaluation during a run.
type Eval struct {
	Step     int64   `json:"step"`
	Rollouts int     `json:"rollouts"`
	Pass1    float64 `json:"pass1"`
}

// RunResult is one run's record.
type RunResult struct {
	Setting string `json:"setting"`
	Arm     string `json:"arm"`
	Seed    uint64 `json:"seed"`
	// BaseID and FinalID are held-out pass@1 before and after training;
	// FinalOOD is pass@1 per out-of-distribution set at the end, OOD their mean.
	BaseID   float64            `json:"base_id"`
	FinalID  float64            `json:"final_id"`
	BaseOOD  map[string]float64 `json:"base_ood"`
	FinalOOD map[string]float64 `json:"final_ood"`
	OOD      float64            `json:"ood"`
	BaseOODM float64            `json:"base_ood_mean"`
	Evals    []Eval             `json:"evals"`
	Steps    []Step             `json:"steps"`
	Rollouts int                `json:"rollouts"`
	// Exhausted says every training question retired before the budget
	// was spent (E4): the run stopped early, solved.
	Exhausted   bool    `json:"exhausted"`
	MixedFrom   int64   `json:"mixed_from"` // first mixed step, -1 if never
	WallSeconds float64 `json:"wall_seconds"`
	// Checkpoint is the final policy's file name inside the run directory
	// ("" when not saved), for `exgrpo eval --checkpoint`.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Replays is the spread of the run's replays over questions.
	Replays ReplayStats `json:"replays"`
	// RetiredPass1 is the final policy's pass@1 on the training questions
	// it retired (E4), RetiredN of them evaluated (at most HeldOut, evenly
	// spaced in order of retirement; 0 when none retired). It measures
	// whether retired questions are forgotten.
	RetiredPass1 float64 `json:"retired_pass1"`
	RetiredN     int     `json:"retired_n"`
	// SolvedPass1 is the same on the training questions that had at least
	// one all-correct group during the run (k = K, whatever the mode),
	// SolvedN of them: defined for every arm, on-policy and never-retiring
	// ones included, so that arms compare on what they once solved.
	SolvedPass1 float64 `json:"solved_pass1"`
	SolvedN     int     `json:"solved_n"`
}

// Env is what the runs of a setting share: the base model and the datasets.
type Env struct {
	Setting Setting
	Base    policy.Checkpoint
	Train   task.Dataset
	HeldOut task.Dataset
	OOD     []task.Dataset
}

// NewEnv loads (or pretrains and caches, see task.BaseModel) the setting's
// base model and draws its datasets at the plan's sizes.
func NewEnv(ctx context.Context, p Plan, s Setting, cacheDir string, progress func(task.PretrainProgress)) (Env, error) {
	ck, _, err := task.BaseModel(ctx, cacheDir, s.Pretrain, progress)
	if err != nil {
		return Env{}, fmt.Errorf("experiment: setting %s: %w", s.Name, err)
	}
	e := Env{Setting: s, Base: ck}
	if e.Train, err = task.Generate(s.Name+"-train", s.Train, s.Questions, s.DataSeed); err != nil {
		return e, fmt.Errorf("experiment: setting %s: %w", s.Name, err)
	}
	ho := s.Train
	ho.Split = task.SplitHeldOut
	if e.HeldOut, err = task.Generate(s.Name+"-heldout", ho, p.HeldOut, 2); err != nil {
		return e, fmt.Errorf("experiment: setting %s: %w", s.Name, err)
	}
	for _, name := range p.OODSets {
		for _, b := range task.BuiltinSets() {
			if b.Name != name {
				continue
			}
			ds, err := task.Generate(b.Name, b.Spec, p.OODQuestions, b.Seed)
			if err != nil {
				return e, fmt.Errorf("experiment: OOD set %s: %w", name, err)
			}
			e.OOD = append(e.OOD, ds)
		}
	}
	return e, nil
}

// evalSeed fixes the sampling of every evaluation so that all runs and all
// points of a curve are measured with the same random stream.
const evalSeed = 7

// Evaluate returns pass@1 of m on ds (EvalSamples samples per question at
// temperature 1, a fixed sampling seed).
func Evaluate(m *policy.Model, ds task.Dataset, samples int) (float64, error) {
	rep, err := task.Evaluate(m, task.BuiltinTokenizer(), ds, samples, 1, rand.New(rand.NewPCG(evalSeed, 0x6576616c)))
	if err != nil {
		return 0, fmt.Errorf("experiment: evaluate %s: %w", ds.Name, err)
	}
	return rep.Overall.Pass1, nil
}

// evalOOD evaluates m on every OOD set and returns per-set pass@1 and the mean.
func evalOOD(m *policy.Model, e Env, samples int) (map[string]float64, float64, error) {
	out := map[string]float64{}
	var sum float64
	for _, ds := range e.OOD {
		v, err := Evaluate(m, ds, samples)
		if err != nil {
			return nil, 0, err
		}
		out[ds.Name] = v
		sum += v
	}
	if len(e.OOD) == 0 {
		return out, 0, nil
	}
	return out, sum / float64(len(e.OOD)), nil
}

// question is a training question as the loop needs it.
type question struct {
	p      task.Problem
	prompt []int32
}

// Run trains one arm of e's setting with one seed until the plan's budget
// of fresh rollouts is spent, and evaluates it. progress (may be nil) is
// called after every step with the rollouts spent so far. The base model in
// e is not modified.
func Run(ctx context.Context, p Plan, e Env, a Arm, seed uint64, progress func(rollouts int)) (RunResult, *policy.Model, error) {
	start := time.Now()
	res := RunResult{Setting: e.Setting.Name, Arm: a.Name, Seed: seed, MixedFrom: -1}
	lcfg, err := p.settingConfig(e.Setting, a)
	if err != nil {
		return res, nil, fmt.Errorf("%w: arm %s: %w", ErrConfig, a.Name, err)
	}
	pcfg, err := p.poolConfig(a)
	if err != nil {
		return res, nil, fmt.Errorf("%w: arm %s: %w", ErrConfig, a.Name, err)
	}
	m := e.Base.Model.Clone()
	l, err := learner.New(lcfg, m, nil)
	if err != nil {
		return res, nil, err
	}
	pool, err := replay.New(pcfg)
	if err != nil {
		return res, nil, err
	}
	tok := task.BuiltinTokenizer()
	check, err := verifier.Lookup(task.KindArith)
	if err != nil {
		return res, nil, err
	}
	qs := map[string]question{}
	ids := make([]string, 0, len(e.Train.Problems))
	for _, pr := range e.Train.Problems {
		enc, err := task.EncodePrompt(tok, pr)
		if err != nil {
			return res, nil, err
		}
		qs[pr.ID] = question{p: pr, prompt: enc}
		ids = append(ids, pr.ID)
	}
	fresh, err := learner.NewFreshSampler(ids, rand.New(rand.NewPCG(seed, 0x66726573)))
	if err != nil {
		return res, nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x72756e))       // sampling
	pickRng := rand.New(rand.NewPCG(seed, 0x7069636b)) // pool draws and random selection
	verify := func(id string, toks []int32) float32 {
		if check.Check(qs[id].p.Answer, task.ResponseText(tok, toks)).Correct {
			return 1
		}
		return 0
	}
	opts := policy.SampleOptions{Temperature: 1, MaxNew: p.MaxNew, EOS: tok.EOS()}

	if res.BaseID, err = Evaluate(m, e.HeldOut, p.EvalSamples); err != nil {
		return res, nil, err
	}
	res.Evals = append(res.Evals, Eval{Step: 0, Rollouts: 0, Pass1: res.BaseID})
	if res.BaseOOD, res.BaseOODM, err = evalOOD(m, e, p.EvalSamples); err != nil {
		return res, nil, err
	}

	mixed := learner.InitialMixed(lcfg)
	var step int64
	replays := map[string]int{}
	var retiredIDs, solvedIDs []string
	solved := map[string]bool{}
	retire := learner.NewRetirement(lcfg.RetireAfter)
	for res.Rollouts < p.Budget {
		if err := ctx.Err(); err != nil {
			return res, nil, err
		}
		t0 := time.Now()
		if mixed && res.MixedFrom < 0 {
			res.MixedFrom = step
		}
		st := Step{Step: step, Mixed: mixed, ReplayedFrom: make([]int, p.K)}

		// Pool questions (E6) and their replayed trajectory (E7).
		type pending struct {
			id  string
			rep *learner.Rollout
			rk  []learner.Ranked
		}
		var plan []pending
		exclude := map[string]bool{}
		var repEnt float64
		for _, pick := range pool.Sample(lcfg.PoolQuestions(mixed), pickRng) {
			var cands []learner.Rollout
			for _, c := range pool.Candidates(pick.QuestionID) {
				cands = append(cands, learner.Rollout{ID: c.ID, PromptTokens: c.PromptTokens, Tokens: c.Tokens,
					LogProbs: c.LogProbs, Version: c.PolicyVersion, Replayed: true})
			}
			i, ranking, err := l.SelectTrajectory(cands, pickRng)
			if err != nil {
				return res, nil, err
			}
			rep := cands[i]
			rep.Reward = verify(pick.QuestionID, rep.Tokens) // E9: re-verified
			h := chosenEntropy(ranking, rep.ID)
			if math.IsNaN(h) { // random selection does not score; score the chosen one for the diagnostics
				_, ents, err := m.Score([]policy.Seq{{Tokens: append(append([]int32(nil), rep.PromptTokens...), rep.Tokens...), PromptLen: len(rep.PromptTokens)}})
				if err != nil {
					return res, nil, err
				}
				h = learner.MeanEntropy(ents[0])
			}
			repEnt += h
			st.ReplayedFrom[pick.Bucket]++
			replays[pick.QuestionID]++
			plan = append(plan, pending{id: pick.QuestionID, rep: &rep, rk: ranking})
			exclude[pick.QuestionID] = true
		}
		ids, err := fresh.Next(lcfg.B-len(plan), exclude)
		if errors.Is(err, learner.ErrExhausted) {
			res.Exhausted = true
			break
		} else if err != nil {
			return res, nil, err
		}
		for _, id := range ids {
			plan = append(plan, pending{id: id})
		}

		// One sampling call for the whole step: K-1 rollouts beside a
		// replayed trajectory, K for a fresh question (E8).
		var prompts [][]int32
		for _, pd := range plan {
			n := lcfg.K
			if pd.rep != nil {
				n--
			}
			for range n {
				prompts = append(prompts, qs[pd.id].prompt)
			}
		}
		out, err := m.Sample(prompts, opts, rng)
		if err != nil {
			return res, nil, fmt.Errorf("experiment: sample: %w", err)
		}
		groups := make([]learner.Group, 0, len(plan))
		var fEnt, fcEnt, fTok, fcTok float64
		j := 0
		for _, pd := range plan {
			n := lcfg.K
			if pd.rep != nil {
				n--
			}
			rs := make([]learner.Rollout, n)
			for i := range n {
				s := out[j]
				j++
				rs[i] = learner.Rollout{ID: fmt.Sprintf("%d/%s/%d", step, pd.id, i), PromptTokens: qs[pd.id].prompt,
					Tokens: s.Tokens, LogProbs: s.LogProbs, Version: step, Reward: verify(pd.id, s.Tokens)}
				for _, h := range s.Entropies {
					fEnt += float64(h)
					if rs[i].Reward == 1 {
						fcEnt += float64(h)
					}
				}
				fTok += float64(len(s.Entropies))
				if rs[i].Reward == 1 {
					fcTok += float64(len(s.Entropies))
				}
			}
			g, err := learner.NewGroup(pd.id, lcfg.K, pd.rep, rs, pd.rk)
			if err != nil {
				return res, nil, err
			}
			groups = append(groups, g)
		}
		res.Rollouts += len(prompts)
		sum, err := l.Step(learner.StepInput{Step: step, PolicyVersion: step, Mixed: mixed, Groups: groups})
		if err != nil {
			return res, nil, err
		}

		// The replay fold (E2-E5): each group's correct fresh rollouts (a
		// replayed one is stored already).
		rrep := replay.Report{Step: step, Mixed: sum.Mixed}
		for gi, g := range groups {
			k := sum.Groups[gi].Correct
			signal := k > 0 && k < lcfg.K
			if k == lcfg.K && !solved[g.QuestionID] {
				solved[g.QuestionID] = true
				solvedIDs = append(solvedIDs, g.QuestionID)
			}
			if g.Replayed() {
				st.Replayed++
				switch {
				case signal:
					st.ReplayedSignal++
				case k == lcfg.K:
					st.ReplayedAllOK++
				}
				if k == 1 && g.Rollouts[0].Reward == 1 {
					st.ReplayedOnly++
				}
			} else {
				st.FreshGroups++
				if signal {
					st.FreshSignal++
				}
			}
			rg := replay.Group{QuestionID: g.QuestionID, Size: sum.Groups[gi].Size, Correct: k, Replayed: g.Replayed()}
			for _, r := range g.Rollouts {
				if r.Reward == 1 && !r.Replayed {
					rg.Successes = append(rg.Successes, replay.Trajectory{ID: r.ID, PolicyVersion: r.Version, Step: step,
						PromptTokens: r.PromptTokens, Tokens: r.Tokens, LogProbs: r.LogProbs})
				}
			}
			rrep.Groups = append(rrep.Groups, rg)
		}
		if err := pool.Apply(rrep); err != nil {
			return res, nil, err
		}
		for _, id := range retire.Fold(sum) { // E4, the pool's rule (RetireAfter)
			if fresh.Retire(id) {
				retiredIDs = append(retiredIDs, id)
			}
		}
		ps := pool.Stats()
		st.Rollouts, st.Reward, st.Entropy, st.Skipped = res.Rollouts, sum.Pass1, sum.Entropy, sum.Skipped
		st.Buckets, st.Pool, st.Retired, st.Epoch = ps.Buckets, ps.Questions, ps.Retired, fresh.Epoch()
		if fTok > 0 {
			st.FreshEntropy = fEnt / fTok
		}
		if fcTok > 0 {
			st.FreshCorrectEntropy = fcEnt / fcTok
		}
		if st.Replayed > 0 {
			st.ReplayedEntropy = repEnt / float64(st.Replayed)
		}
		if sum.Tokens > 0 {
			st.ReplayedTokenShare = float64(sum.ReplayedTokens) / float64(sum.Tokens)
		}
		st.ReplayedGradShare, st.FirstClipped, st.Clipped = sum.ReplayedCoefShare, sum.FirstClipped, sum.ClippedFraction
		st.StepSeconds = time.Since(t0).Seconds()
		res.Steps = append(res.Steps, st)
		mixed = sum.NextMixed
		step++
		if step%int64(p.EvalEvery) == 0 && res.Rollouts < p.Budget {
			v, err := Evaluate(m, e.HeldOut, p.EvalSamples)
			if err != nil {
				return res, nil, err
			}
			res.Evals = append(res.Evals, Eval{Step: step, Rollouts: res.Rollouts, Pass1: v})
		}
		if progress != nil {
			progress(res.Rollouts)
		}
	}
	if res.FinalID, err = Evaluate(m, e.HeldOut, p.EvalSamples); err != nil {
		return res, nil, err
	}
	res.Evals = append(res.Evals, Eval{Step: step, Rollouts: res.Rollouts, Pass1: res.FinalID})
	if res.FinalOOD, res.OOD, err = evalOOD(m, e, p.EvalSamples); err != nil {
		return res, nil, err
	}
	res.Replays = NewReplayStats(replays)
	if ds := retiredSet(e.Train, retiredIDs, p.HeldOut); len(ds.Problems) > 0 {
		if res.RetiredPass1, err = Evaluate(m, ds, p.EvalSamples); err != nil {
			return res, nil, err
		}
		res.RetiredN = len(ds.Problems)
	}
	if ds := retiredSet(e.Train, solvedIDs, p.HeldOut); len(ds.Problems) > 0 {
		if res.SolvedPass1, err = Evaluate(m, ds, p.EvalSamples); err != nil {
			return res, nil, err
		}
		res.SolvedN = len(ds.Problems)
	}
	res.WallSeconds = time.Since(start).Seconds()
	return res, m, nil
}

// retiredSet is the dataset of at most n of the training questions ids
// (retired or solved ones, in the order they were), evenly spaced over
// ids, so that early and late ones are both measured.
func retiredSet(train task.Dataset, ids []string, n int) task.Dataset {
	by := make(map[string]task.Problem, len(train.Problems))
	for _, p := range train.Problems {
		by[p.ID] = p
	}
	ds := task.Dataset{Name: train.Name + "-retired"}
	if len(ids) == 0 || n <= 0 {
		return ds
	}
	m := min(n, len(ids))
	for i := range m {
		if p, ok := by[ids[i*len(ids)/m]]; ok {
			ds.Problems = append(ds.Problems, p)
		}
	}
	return ds
}

// chosenEntropy is the E7 entropy of the ranked candidate id (NaN when the
// rule did not score, or id is absent).
func chosenEntropy(ranking []learner.Ranked, id string) float64 {
	for _, r := range ranking {
		if r.ID == id {
			return r.Entropy
		}
	}
	return math.NaN()
}
