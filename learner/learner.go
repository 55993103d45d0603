package learner

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
)

// AdamW returns the optimiser settings of E14.
func (c Config) AdamW() policy.AdamWConfig {
	return policy.AdamWConfig{
		LR: c.LR, Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.AdamEps, WeightDecay: c.WeightDecay,
		ClipNorm: c.ClipNorm, SkipNorm: c.SkipNorm,
	}
}

// Learner owns the trainer of the policy being trained (the built-in Go
// model or a PyTorch worker, see package trainer) and performs the update of
// one step. It is not safe for concurrent use: like the trainer it drives,
// one goroutine drives it.
type Learner struct {
	cfg Config
	tr  trainer.Trainer

	// behaviour holds the trainer's log-probs of recent fresh trajectories
	// (Config.TrainerBehaviour), by trajectory id; order is their FIFO.
	behaviour map[string][]float32
	order     []string
}

// New returns a learner training the built-in model with the built-in Go
// trainer. opt may be nil for a fresh AdamW built from cfg, or an optimiser
// restored from a checkpoint (its moments and step count are kept, the
// hyper-parameters come from cfg).
func New(cfg Config, model *policy.Model, opt *policy.AdamW) (*Learner, error) {
	return NewWithTokenizer(cfg, model, opt, nil)
}

// NewWithTokenizer is New with the model's tokenizer, which the trainer
// writes beside the weights when it saves them (Trainer.SaveWeights: how a
// version's files are made for weights/transfer); nil as New.
func NewWithTokenizer(cfg Config, model *policy.Model, opt *policy.AdamW, tok *policy.Tokenizer) (*Learner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if model == nil {
		return nil, fmt.Errorf("%w: nil model", ErrConfig)
	}
	tr, err := trainer.NewBuiltin(model, tok, cfg.AdamW(), trainer.BuiltinOptions{})
	if err != nil {
		return nil, fmt.Errorf("learner: %w", err)
	}
	if opt != nil {
		if len(opt.M) != len(model.Params) || len(opt.V) != len(model.Params) {
			return nil, fmt.Errorf("%w: optimiser state for %d parameters, model has %d", ErrConfig, len(opt.M), len(model.Params))
		}
		o, _ := tr.Optimizer(context.Background())
		copy(o.M, opt.M)
		copy(o.V, opt.V)
		o.T = opt.T
	}
	return NewTrainer(cfg, tr)
}

// NewTrainer returns a learner training through tr, whose optimiser must
// have been built with cfg.AdamW(). The learner does not Close tr.
func NewTrainer(cfg Config, tr trainer.Trainer) (*Learner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tr == nil {
		return nil, fmt.Errorf("%w: nil trainer", ErrConfig)
	}
	return &Learner{cfg: cfg, tr: tr, behaviour: map[string][]float32{}}, nil
}

// Config returns the learner's configuration.
func (l *Learner) Config() Config { return l.cfg }

// Trainer returns the trainer the learner drives.
func (l *Learner) Trainer() trainer.Trainer { return l.tr }

// Model returns the built-in weights being trained, nil when the trainer
// holds another architecture. The caller may read them (to publish
// weights, or Clone them for sampling) between steps.
func (l *Learner) Model() *policy.Model {
	m, err := l.tr.Weights(context.Background())
	if err != nil {
		return nil
	}
	return m
}

// Optimizer returns the AdamW state of the built-in architecture, nil for
// another one.
func (l *Learner) Optimizer() *policy.AdamW {
	o, err := l.tr.Optimizer(context.Background())
	if err != nil {
		return nil
	}
	return o
}

// SelectTrajectory runs E7 with the current policy; see the function of the
// same name.
func (l *Learner) SelectTrajectory(cands []Rollout, rng *rand.Rand) (chosen int, ranking []Ranked, err error) {
	return SelectTrajectory(context.Background(), l.tr, l.cfg, cands, rng)
}

// SelectTrajectoryContext is SelectTrajectory with a context for the
// trainer's calls.
func (l *Learner) SelectTrajectoryContext(ctx context.Context, cands []Rollout, rng *rand.Rand) (chosen int, ranking []Ranked, err error) {
	return SelectTrajectory(ctx, l.tr, l.cfg, cands, rng)
}

// StepInput is what one step trains on.
type StepInput struct {
	Step          int64 // learner step number
	PolicyVersion int64 // version the step's fresh rollouts were asked from
	// Mixed is this step's mode (E5): InitialMixed for step 0, then the
	// previous summary's NextMixed.
	Mixed bool
	// Groups are the step's complete groups (NewGroup), fresh and replayed.
	Groups []Group
	// StaleDropped is how many fresh rollouts FilterStale dropped while the
	// step's groups were gathered; it is passed through to the summary.
	StaleDropped int
}

// GroupSummary is one group of a step as the step report records it (the
// service copies it into wire.GroupReport; the replay pool folds it, E2-E4).
type GroupSummary struct {
	QuestionID    string
	Size          int  // K
	Correct       int  // k, the replayed trajectory included (E2)
	Replayed      bool // the group holds replayed experience
	ReplayedID    string
	TrajectoryIDs []string // replayed first when present
	Rewards       []float32
	Advantages    []float32
	Reasons       []string
	Candidates    []Ranked // E7 ranking of the replayed question's candidates
}

// StepSummary is the outcome of one step: its figures and groups, and the
// mode of the next step.
type StepSummary struct {
	Step          int64
	PolicyVersion int64
	Pass1         float64 // batch Pass@1 over fresh rollouts (E5)
	Mixed         bool    // this step trained in mixed mode; collection on (E5)
	NextMixed     bool    // the next step's mode (E5)
	Groups        []GroupSummary
	// Loss, PolicyLoss and EntropyTerm average the mini-batches' values,
	// each taken before its own update.
	Loss, PolicyLoss, EntropyTerm float64
	Entropy                       float64 // mean token entropy over the step's response tokens
	GradNorm                      float64 // largest pre-clip gradient norm of the step's updates
	Skipped                       int     // updates skipped for a non-finite or too large norm (E14)
	Updates                       []policy.StepInfo
	Tokens, ReplayedTokens        int
	Clipped                       int // fresh tokens on the PPO clipped branch (before the delayed start)
	StaleDropped                  int
	// Engine/trainer mismatch, measured at the first mini-batch (before any
	// update of the step, so w compares the trainer with the engine only):
	// mean |log w| over its fresh tokens and the fraction of them whose w
	// exceeded Config.TruncCap (0 when the cap is off).
	MismatchLogW   float64
	CappedFraction float64
	// TrainerBehaviour is how many replayed trajectories trained with the
	// trainer's own stored log-probs (Config.TrainerBehaviour).
	TrainerBehaviour int
	// ReplayedCoefShare is the replayed share of the step's policy
	// gradient weight: over every mini-batch, the sum of |dL/dlogp_t| over
	// replayed tokens divided by the same sum over all response tokens
	// (ObjectiveStats.CoefMass; 0 when the step has no token with a
	// non-zero coefficient). With w near 1 a replayed token weighs
	// beta/(1+beta)^2 = 0.083 of a fresh token of the same |A| (E11).
	ReplayedCoefShare float64
	// FirstClipped is the fraction of the first mini-batch's fresh tokens
	// on the PPO clipped branch (E10, before the delayed start: 0 unless
	// the trainer disagrees with the sampler, since the first update has
	// not moved the policy yet); ClippedFraction the same over all
	// mini-batches (Clipped over fresh tokens).
	FirstClipped, ClippedFraction float64
}

// Retired returns the questions whose group was all correct (E4): the
// caller retires them from the fresh sampler, and the replay pool does so
// when it folds the report. Before the delayed start nothing is collected or
// retired (E5), as in the replay pool's fold, so it returns nil then.
func (s StepSummary) Retired() []string {
	if !s.Mixed {
		return nil
	}
	var out []string
	for _, g := range s.Groups {
		if g.Correct == g.Size {
			out = append(out, g.QuestionID)
		}
	}
	return out
}

// Step trains on one step's groups (ALGORITHM.md E10-E14): the groups are
// dealt into cfg.MiniBatches mini-batches of nearly equal size, group i to
// mini-batch i mod MiniBatches (fewer mini-batches when there are fewer
// groups), so that replayed and fresh groups mix; for each, one forward pass gives the
// current log-probs and entropies, Objective their derivatives, one backward
// pass the parameter gradients, and AdamW one update (clipped, or skipped on
// a bad norm). Mini-batches after the first see the policy moved by the
// earlier ones, which is what the ratio w corrects.
func (l *Learner) Step(in StepInput) (StepSummary, error) {
	return l.StepContext(context.Background(), in)
}

// StepContext is Step with a context for the trainer's calls.
func (l *Learner) StepContext(ctx context.Context, in StepInput) (StepSummary, error) {
	cfg := l.cfg
	sum := StepSummary{
		Step: in.Step, PolicyVersion: in.PolicyVersion, Mixed: in.Mixed,
		Pass1: Pass1(in.Groups), StaleDropped: in.StaleDropped,
	}
	if cfg.OnPolicyOnly && in.Mixed {
		return sum, fmt.Errorf("%w: step %d asks for mixed mode in the on-policy baseline", ErrConfig, in.Step)
	}
	for _, g := range in.Groups {
		if len(g.Rollouts) != cfg.K || len(g.Advantages) != cfg.K {
			return sum, fmt.Errorf("%w: question %q has %d rollouts, want K = %d (build groups with NewGroup)", ErrGroup, g.QuestionID, len(g.Rollouts), cfg.K)
		}
		if g.Replayed() && !in.Mixed {
			return sum, fmt.Errorf("%w: question %q replays experience before the delayed start (E5)", ErrGroup, g.QuestionID)
		}
		sum.Groups = append(sum.Groups, summarise(g))
	}
	sum.NextMixed = NextMixed(cfg, in.Mixed, sum.Pass1)
	if len(in.Groups) == 0 {
		return sum, nil
	}

	if cfg.TrainerBehaviour {
		if err := l.recordBehaviour(ctx, in.Groups); err != nil {
			return sum, fmt.Errorf("learner: step %d: trainer behaviour log-probs: %w", in.Step, err)
		}
	}
	nb := min(cfg.MiniBatches, len(in.Groups))
	var entSum, mass, massRep float64
	for b := range nb {
		// Strided, not consecutive: callers list replayed groups first, and
		// a consecutive split would train all replayed groups in one update
		// and all fresh ones in the next.
		var mb []Group
		for i := b; i < len(in.Groups); i += nb {
			mb = append(mb, in.Groups[i])
		}
		st, info, err := l.update(ctx, mb, in.Mixed, &sum)
		if err != nil {
			return sum, fmt.Errorf("learner: step %d mini-batch %d: %w", in.Step, b, err)
		}
		if b == 0 {
			sum.MismatchLogW = st.MeanAbsLogW
			if f := st.Tokens - st.ReplayedTokens; f > 0 {
				sum.CappedFraction = float64(st.Capped) / float64(f)
				sum.FirstClipped = float64(st.Clipped) / float64(f)
			}
		}
		mass += st.CoefMass
		massRep += st.CoefMassReplayed
		sum.Loss += st.Loss / float64(nb)
		sum.PolicyLoss += st.PolicyLoss / float64(nb)
		sum.EntropyTerm += st.EntropyTerm / float64(nb)
		entSum += st.MeanEntropy * float64(st.Tokens)
		sum.Tokens += st.Tokens
		sum.ReplayedTokens += st.ReplayedTokens
		sum.Clipped += st.Clipped
		sum.Updates = append(sum.Updates, info)
		if info.Skipped {
			sum.Skipped++
		}
		if !(info.GradNorm <= sum.GradNorm) { // NaN propagates
			sum.GradNorm = info.GradNorm
		}
	}
	if sum.Tokens > 0 {
		sum.Entropy = entSum / float64(sum.Tokens)
	}
	if f := sum.Tokens - sum.ReplayedTokens; f > 0 {
		sum.ClippedFraction = float64(sum.Clipped) / float64(f)
	}
	if mass > 0 {
		sum.ReplayedCoefShare = massRep / mass
	}
	return sum, nil
}

// update runs one mini-batch: forward, objective, backward, AdamW (E14).
// When the trainer bounds its micro-batch tokens, the mini-batch streams
// through it in micro-batches (forward, objective coefficients, backward
// each) before the one optimiser step; every term of E10-E13 is
// token-local and E13's token count N is the mini-batch's, known before the
// first forward, so the accumulated gradient is the mini-batch's.
func (l *Learner) update(ctx context.Context, groups []Group, mixed bool, sum *StepSummary) (ObjectiveStats, policy.StepInfo, error) {
	var seqs []policy.Seq
	var items []Item
	for _, g := range groups {
		for i, r := range g.Rollouts {
			seqs = append(seqs, concat(r.PromptTokens, r.Tokens))
			lb := r.LogProbs
			if r.Replayed && l.cfg.TrainerBehaviour {
				if own, ok := l.behaviour[r.ID]; ok && len(own) == len(r.Tokens) {
					lb = own // E11 with the trainer's log-probs of the step that trained it
					sum.TrainerBehaviour++
				}
			}
			items = append(items, Item{Advantage: g.Advantages[i], Behaviour: lb, Replayed: r.Replayed})
		}
	}
	n := trainer.Responses(seqs)
	var st ObjectiveStats
	var entSum, wFresh, wRep, absLogW float64
	for _, mb := range microBatches(seqs, l.tr.Info().MicroBatchTokens) {
		lp, ent, err := l.tr.Forward(ctx, seqs[mb[0]:mb[1]], l.cfg.temperature())
		if err != nil {
			return st, policy.StepInfo{}, fmt.Errorf("forward: %w", err)
		}
		ms, dlp, dent, err := objective(l.cfg, mixed, items[mb[0]:mb[1]], lp, ent, n)
		if err != nil {
			return st, policy.StepInfo{}, err
		}
		if err := l.tr.Backward(ctx, dlp, dent); err != nil {
			return st, policy.StepInfo{}, fmt.Errorf("backward: %w", err)
		}
		st.PolicyLoss += ms.PolicyLoss
		st.Tokens += ms.Tokens
		st.ReplayedTokens += ms.ReplayedTokens
		st.Clipped += ms.Clipped
		st.Capped += ms.Capped
		st.CoefMass += ms.CoefMass
		st.CoefMassReplayed += ms.CoefMassReplayed
		absLogW += ms.MeanAbsLogW * float64(ms.Tokens-ms.ReplayedTokens)
		entSum += ms.MeanEntropy * float64(ms.Tokens)
		wFresh += ms.MeanRatioFresh * float64(ms.Tokens-ms.ReplayedTokens)
		wRep += ms.MeanRatioRep * float64(ms.ReplayedTokens)
	}
	if st.Tokens > 0 {
		st.MeanEntropy = entSum / float64(st.Tokens)
	}
	if f := st.Tokens - st.ReplayedTokens; f > 0 {
		st.MeanRatioFresh = wFresh / float64(f)
		st.MeanAbsLogW = absLogW / float64(f)
	}
	if st.ReplayedTokens > 0 {
		st.MeanRatioRep = wRep / float64(st.ReplayedTokens)
	}
	st.EntropyTerm = -l.cfg.CEnt * st.MeanEntropy // ALGORITHM.md E13
	st.Loss = st.PolicyLoss + st.EntropyTerm
	info, err := l.tr.Step(ctx)
	if err != nil {
		return st, info, fmt.Errorf("optimiser step: %w", err)
	}
	return st, info, nil
}

// recordBehaviour scores the step's fresh trajectories with the trainer
// before any update (the reference code's old log-probs) and remembers them
// by trajectory id for when they are replayed (Config.TrainerBehaviour).
func (l *Learner) recordBehaviour(ctx context.Context, groups []Group) error {
	var seqs []policy.Seq
	var ids []string
	for _, g := range groups {
		for _, r := range g.Rollouts {
			if !r.Replayed && r.ID != "" {
				seqs = append(seqs, concat(r.PromptTokens, r.Tokens))
				ids = append(ids, r.ID)
			}
		}
	}
	for _, mb := range microBatches(seqs, l.tr.Info().MicroBatchTokens) {
		lp, _, err := l.tr.Score(ctx, seqs[mb[0]:mb[1]], l.cfg.temperature())
		if err != nil {
			return err
		}
		for i, id := range ids[mb[0]:mb[1]] {
			if _, ok := l.behaviour[id]; !ok {
				l.order = append(l.order, id)
			}
			l.behaviour[id] = lp[i]
		}
	}
	limit := l.cfg.BehaviourCap
	if limit <= 0 {
		limit = 1 << 16
	}
	for len(l.order) > limit {
		delete(l.behaviour, l.order[0])
		l.order = l.order[1:]
	}
	return nil
}

// microBatches splits seqs into consecutive [lo, hi) ranges of at most
// budget packed tokens each (a longer sequence goes alone); budget 0 keeps
// one range.
func microBatches(seqs []policy.Seq, budget int) [][2]int {
	if budget <= 0 || len(seqs) == 0 {
		return [][2]int{{0, len(seqs)}}
	}
	var out [][2]int
	lo, n := 0, 0
	for i, s := range seqs {
		if i > lo && n+len(s.Tokens) > budget {
			out = append(out, [2]int{lo, i})
			lo, n = i, 0
		}
		n += len(s.Tokens)
	}
	return append(out, [2]int{lo, len(seqs)})
}

func summarise(g Group) GroupSummary {
	s := GroupSummary{
		QuestionID: g.QuestionID, Size: len(g.Rollouts), Correct: g.Correct(), Replayed: g.Replayed(),
		Advantages: append([]float32(nil), g.Advantages...), Candidates: g.Candidates,
	}
	if s.Replayed {
		s.ReplayedID = g.Rollouts[0].ID
	}
	for _, r := range g.Rollouts {
		s.TrajectoryIDs = append(s.TrajectoryIDs, r.ID)
		s.Rewards = append(s.Rewards, r.Reward)
		s.Reasons = append(s.Reasons, r.Reason)
	}
	return s
}
