package learner

import (
	"errors"
	"fmt"
	"math"
)

// Selection names the rule that picks which stored trajectory of a replayed
// question is replayed (ALGORITHM.md E7).
type Selection string

const (
	// SelectLowestEntropy replays the trajectory with the lowest mean token
	// entropy under the current policy; ties go to the earliest stored. This
	// is ExGRPO.
	SelectLowestEntropy Selection = "lowest-entropy"
	// SelectRandom replays a uniformly drawn trajectory (the paper's ablation
	// "without trajectory selection"); candidates are not scored.
	SelectRandom Selection = "random"
	// SelectHighestEntropy replays the highest-entropy trajectory (the
	// paper's ablation that shows why the lowest is chosen); ties go to the
	// earliest stored.
	SelectHighestEntropy Selection = "highest-entropy"
)

// Errors returned by the package; test with errors.Is.
var (
	ErrConfig    = errors.New("learner: invalid config")
	ErrGroup     = errors.New("learner: malformed group")
	ErrShape     = errors.New("learner: shape mismatch")
	ErrExhausted = errors.New("learner: no fresh question left")
)

// Config holds every symbol of the ExGRPO update (ALGORITHM.md, "Symbols and
// defaults"). The bucket Gaussian (mu, sigma) belongs to the replay pool's
// configuration, not to this one: the learner never samples questions from
// the pool itself.
type Config struct {
	// K is the group size: rollouts per question, the replayed one included
	// (E8). Paper: 8.
	K int
	// B is the number of questions per step, fresh and replayed together.
	// Paper: 128.
	B int
	// Rho is the fraction of a step's questions taken from the pool (E6,
	// E8), in [0, 1). The pool may hold fewer; then fewer are replayed.
	// Paper: 0.5.
	Rho float64
	// Beta is the policy-shaping constant of f(w) = w/(w+beta) on replayed
	// tokens (E11). Paper: 0.1.
	Beta float64
	// Start is the delayed-start threshold on a step's batch Pass@1 (E5):
	// mixed mode begins on the step after the first step whose Pass@1
	// exceeds it. Start <= 0 means mixed from step 0. Paper: 0.35.
	Start float64
	// LMax is the Dr.GRPO normaliser, in tokens: the maximum response length
	// (E12). Paper: 8192.
	LMax int
	// CEnt is the entropy-bonus coefficient (E13). Paper: 0.001.
	CEnt float64
	// Eps is the PPO clip range, used only before the delayed start (E10).
	// Paper: 0.2.
	Eps float64
	// MiniBatches is the number of optimiser steps per step: the step's
	// groups are dealt into this many mini-batches of nearly equal size,
	// group i to mini-batch i mod MiniBatches (E14). Paper: 2 (128 questions
	// per step, 64 per update).
	MiniBatches int
	// Staleness is S, the largest allowed gap in policy versions between
	// the step being trained and the policy that sampled a fresh rollout
	// (the asynchrony extension). 0 reproduces the paper's synchronous loop.
	Staleness int
	// Candidates caps the stored trajectories scored per replayed question,
	// keeping the most recent (E7). Default 32.
	Candidates int
	// Selection is the trajectory-selection rule (E7).
	Selection Selection
	// RetireAfter is m of the retirement rule (E4, as replay.Config's): a
	// question leaves the fresh sampler after m consecutive all-correct
	// groups; the paper's 1 is the default, 0 never retires. The replay
	// pool must be configured with the same m (Retirement).
	RetireAfter int

	// LR is AdamW's constant learning rate (E14). Paper: 1e-6.
	LR float64
	// Beta1, Beta2, AdamEps and WeightDecay are AdamW's moments, epsilon and
	// decoupled weight decay (E14). Paper: 0.9, 0.999, 1e-8, 0.01.
	Beta1, Beta2, AdamEps, WeightDecay float64
	// ClipNorm clips the global gradient norm; SkipNorm skips an update
	// whose norm is non-finite or above it (E14). Paper: 1.0 and 500.
	ClipNorm, SkipNorm float64

	// Temperature is the actors' sampling temperature T: the trainer scores
	// softmax(z/T), the distribution the behaviour log-probs were recorded
	// under (E7's entropies, E10 and E11's ratios). 0 means 1.
	Temperature float64

	// TruncCap, when > 0, truncates the importance weight of fresh tokens
	// at this value (truncated importance sampling: the token's loss and
	// gradient use min(w, TruncCap), E10), bounding the damage of an engine
	// whose probabilities differ from the trainer's. 0 = off, the right
	// setting for the built-in model (actor and trainer agree exactly);
	// 2.0 is the field's choice for remote engines (verl, slime).
	TruncCap float64
	// TrainerBehaviour stores the trainer's own log-probs of each fresh
	// trajectory, scored at the start of the step that trains it, as the
	// behaviour log-probs used when that trajectory is replayed (E11), as
	// the paper's reference code does, so that E11's ratio measures policy
	// change and not kernel differences between engine and trainer. The
	// learner keeps them in memory for its BehaviourCap most recent
	// trajectories (after a restart, or beyond the cap, the stored engine
	// log-probs are used). Off by default (the built-in actors' log-probs
	// are the trainer's).
	TrainerBehaviour bool
	// BehaviourCap bounds the trajectories TrainerBehaviour remembers;
	// 0 = 1<<16.
	BehaviourCap int

	// Ablation switches. Their zero values are ExGRPO.

	// NoPolicyShaping trains replayed tokens with the plain ratio -A*w
	// instead of -A*f(w) (E11 ablation).
	NoPolicyShaping bool
	// NoISCorrection replaces the stored behaviour log-probs of replayed
	// tokens by the current policy's own (detached), so w = 1 in value and
	// only its gradient remains (E11 ablation).
	NoISCorrection bool
	// OnPolicyOnly is the Dr.GRPO baseline: never switch to mixed mode, never
	// collect or replay, PPO clipping throughout. Requires Rho = 0.
	OnPolicyOnly bool
}

// PaperConfig returns the paper's settings for a 7B model (ALGORITHM.md,
// "Symbols and defaults").
func PaperConfig() Config {
	return Config{
		K: 8, B: 128, Rho: 0.5, Beta: 0.1, Start: 0.35, LMax: 8192,
		CEnt: 0.001, Eps: 0.2, MiniBatches: 2, Staleness: 0,
		Candidates: 32, Selection: SelectLowestEntropy, RetireAfter: 1,
		LR: 1e-6, Beta1: 0.9, Beta2: 0.999, AdamEps: 1e-8, WeightDecay: 0.01,
		ClipNorm: 1.0, SkipNorm: 500,
	}
}

// DefaultLMax is the response cap of the built-in task during RL, in tokens
// (task.TrainMaxNew: the longest training solution, 47 characters, plus EOS).
const DefaultLMax = 48

// DefaultConfig returns the settings for the built-in tiny task. It differs
// from the paper in three places, all because the policy is a small
// transformer trained on CPU: LR is 1e-4 (a model of about a hundred
// thousand parameters barely moves at 1e-6), B is 32 questions (a step must
// take seconds, not minutes), and LMax is the task's response cap instead of
// 8192. MiniBatches stays 2, as in the paper.
//
// The learning rate is measured (docs/benchmarks/rl-tuning.md). AdamW moves
// every parameter by about LR per update whatever the gradient's size, and
// an RL gradient from a few hundred samples is mostly noise: at 1e-3 a
// single update lowers the log-prob of the positive-advantage responses
// along with the negative ones (by about 2 nats per response) and held-out
// pass@1 falls towards the 0.1 of guessing a digit; 5e-4 drifts there too,
// even after a warm-up. On-policy Dr.GRPO is fastest at 3e-4, but with
// replay (rho > 0) 3e-4 collapses the entropy and gains less than 1e-4.
func DefaultConfig() Config {
	c := PaperConfig()
	c.B = 32
	c.LR = 1e-4
	c.LMax = DefaultLMax
	return c
}

// Validate reports the first inconsistency, with a hint on how to fix it.
func (c Config) Validate() error {
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case c.K < 2:
		return fmt.Errorf("%w: K = %d, a group needs at least 2 rollouts for a non-zero advantage (paper: 8)", ErrConfig, c.K)
	case c.B < 1:
		return fmt.Errorf("%w: B = %d, set at least 1 question per step", ErrConfig, c.B)
	case !finite(c.Rho) || c.Rho < 0 || c.Rho >= 1:
		return fmt.Errorf("%w: Rho = %v, must be in [0, 1) so that some fresh questions remain (paper: 0.5)", ErrConfig, c.Rho)
	case !finite(c.Beta) || c.Beta <= 0:
		return fmt.Errorf("%w: Beta = %v, must be > 0 (paper: 0.1); use NoPolicyShaping to turn shaping off", ErrConfig, c.Beta)
	case !finite(c.Start) || c.Start >= 1:
		return fmt.Errorf("%w: Start = %v, must be < 1 or mixed mode never starts; <= 0 starts it at step 0 (paper: 0.35)", ErrConfig, c.Start)
	case c.LMax < 1:
		return fmt.Errorf("%w: LMax = %d, set it to the maximum response length in tokens", ErrConfig, c.LMax)
	case !finite(c.CEnt) || c.CEnt < 0:
		return fmt.Errorf("%w: CEnt = %v, must be >= 0 (paper: 0.001)", ErrConfig, c.CEnt)
	case !finite(c.Eps) || c.Eps <= 0 || c.Eps >= 1:
		return fmt.Errorf("%w: Eps = %v, the PPO clip must be in (0, 1) (paper: 0.2)", ErrConfig, c.Eps)
	case c.MiniBatches < 1:
		return fmt.Errorf("%w: MiniBatches = %d, set at least 1 optimiser step per step", ErrConfig, c.MiniBatches)
	case c.MiniBatches > c.B:
		return fmt.Errorf("%w: MiniBatches = %d exceeds B = %d questions; lower it", ErrConfig, c.MiniBatches, c.B)
	case c.Staleness < 0:
		return fmt.Errorf("%w: Staleness = %d, must be >= 0 (0 is the paper's synchronous loop)", ErrConfig, c.Staleness)
	case c.Candidates < 1:
		return fmt.Errorf("%w: Candidates = %d, score at least 1 stored trajectory per question (default 32)", ErrConfig, c.Candidates)
	case c.RetireAfter < 0:
		return fmt.Errorf("%w: RetireAfter = %d, must be >= 0 (1 is the paper's E4, 0 never retires)", ErrConfig, c.RetireAfter)
	case c.Selection != SelectLowestEntropy && c.Selection != SelectRandom && c.Selection != SelectHighestEntropy:
		return fmt.Errorf("%w: Selection = %q, want %q, %q or %q", ErrConfig, c.Selection, SelectLowestEntropy, SelectRandom, SelectHighestEntropy)
	case !finite(c.LR) || c.LR <= 0:
		return fmt.Errorf("%w: LR = %v, must be > 0", ErrConfig, c.LR)
	case !finite(c.Beta1) || c.Beta1 < 0 || c.Beta1 >= 1 || !finite(c.Beta2) || c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("%w: AdamW betas %v/%v must be in [0, 1) (paper: 0.9/0.999)", ErrConfig, c.Beta1, c.Beta2)
	case !finite(c.AdamEps) || c.AdamEps <= 0:
		return fmt.Errorf("%w: AdamEps = %v, must be > 0 (paper: 1e-8)", ErrConfig, c.AdamEps)
	case !finite(c.WeightDecay) || c.WeightDecay < 0:
		return fmt.Errorf("%w: WeightDecay = %v, must be >= 0 (paper: 0.01)", ErrConfig, c.WeightDecay)
	case !(c.ClipNorm > 0) || !(c.SkipNorm > 0):
		return fmt.Errorf("%w: ClipNorm = %v and SkipNorm = %v must be > 0 (paper: 1 and 500)", ErrConfig, c.ClipNorm, c.SkipNorm)
	case c.SkipNorm < c.ClipNorm:
		return fmt.Errorf("%w: SkipNorm = %v below ClipNorm = %v would skip every clipped update; raise SkipNorm", ErrConfig, c.SkipNorm, c.ClipNorm)
	case !finite(c.TruncCap) || c.TruncCap < 0 || (c.TruncCap > 0 && c.TruncCap < 1):
		return fmt.Errorf("%w: TruncCap = %v, must be 0 (off) or >= 1 (2.0 is usual for remote engines)", ErrConfig, c.TruncCap)
	case c.BehaviourCap < 0:
		return fmt.Errorf("%w: BehaviourCap = %d, must be >= 0", ErrConfig, c.BehaviourCap)
	case !finite(c.Temperature) || c.Temperature < 0:
		return fmt.Errorf("%w: Temperature = %v, must be > 0 (0 means 1)", ErrConfig, c.Temperature)
	case c.OnPolicyOnly && c.Rho != 0:
		return fmt.Errorf("%w: OnPolicyOnly with Rho = %v; set Rho to 0 for the on-policy baseline", ErrConfig, c.Rho)
	}
	return nil
}

// PoolQuestions returns how many questions a step asks the pool for:
// floor(Rho * B) in mixed mode, none before the delayed start or in the
// on-policy baseline (E5, E6). The pool may answer with fewer; the rest of
// the step is fresh.
func (c Config) PoolQuestions(mixed bool) int {
	if c.OnPolicyOnly || !mixed {
		return 0
	}
	return int(math.Floor(c.Rho * float64(c.B)))
}

// temperature is Temperature with 0 read as 1.
func (c Config) temperature() float32 {
	if c.Temperature == 0 {
		return 1
	}
	return float32(c.Temperature)
}
