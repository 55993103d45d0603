package replay

import (
	"errors"
	"fmt"
	"math"
)

// Sentinel errors, usable with errors.Is.
var (
	// ErrInvalidConfig: a Config field is out of range (the message says which and how to fix it).
	ErrInvalidConfig = errors.New("replay: invalid config")
	// ErrBadReport: a report breaks its contract (wrong group size, k out of range, ...).
	// The pool is unchanged when Apply returns it.
	ErrBadReport = errors.New("replay: bad report")
	// ErrStaleReport: the report's step is not after the last folded step. A redelivered
	// report returns it; the pool is unchanged, so the caller can acknowledge and move on.
	ErrStaleReport = errors.New("replay: stale report")
	// ErrCorruptSnapshot: Restore was given bytes that are not a snapshot written by this package.
	ErrCorruptSnapshot = errors.New("replay: corrupt snapshot")
	// ErrSnapshotVersion: the snapshot has a format version this build does not read.
	ErrSnapshotVersion = errors.New("replay: unsupported snapshot version")
)

// Selection picks how the sampler chooses pool questions (ALGORITHM.md E6).
type Selection uint8

const (
	// SelectGaussian weights each non-empty bucket k by exp(-(k-Mu)^2 / (2 Sigma^2)),
	// normalised over the non-empty buckets (the paper's question selection).
	SelectGaussian Selection = iota
	// SelectUniform draws uniformly over all pool questions, ignoring buckets
	// (the paper's "without question selection" ablation).
	SelectUniform
)

// String returns the name ParseSelection accepts.
func (s Selection) String() string {
	switch s {
	case SelectGaussian:
		return "gaussian"
	case SelectUniform:
		return "uniform"
	}
	return fmt.Sprintf("Selection(%d)", uint8(s))
}

// ParseSelection parses "gaussian" or "uniform".
func ParseSelection(s string) (Selection, error) {
	switch s {
	case "gaussian":
		return SelectGaussian, nil
	case "uniform":
		return SelectUniform, nil
	}
	return 0, fmt.Errorf("%w: selection %q: want \"gaussian\" or \"uniform\"", ErrInvalidConfig, s)
}

// MaxK bounds the group size; history records store k in one byte.
const MaxK = 255

// MaxRetireAfter bounds Config.RetireAfter.
const MaxRetireAfter = 1 << 16

// Config configures a Pool. The zero value is not valid; start from DefaultConfig.
type Config struct {
	// K is the number of rollouts per question (the group size). Buckets are
	// 1..K-1 correct rollouts; K correct retires the question (ALGORITHM.md E2-E4).
	// Every group in a report must have Size == K. Default 8; 2 <= K <= MaxK.
	K int
	// Mu is the centre of the bucket-weighting Gaussian, in correct rollouts
	// (not accuracy; ALGORITHM.md E6). Default K/2 = 4.
	Mu float64
	// Sigma is the width of the Gaussian, in correct rollouts. Default 1; > 0.
	Sigma float64
	// Selection is the question-selection rule. Default SelectGaussian.
	Selection Selection
	// MaxCandidates caps how many of a question's stored trajectories
	// Candidates returns: the most recent ones (ALGORITHM.md E7). Default 32; >= 1.
	MaxCandidates int
	// RetireAfter is m of the retirement rule: a question retires after m
	// consecutive all-correct groups (ALGORITHM.md E4; the paper's m = 1, the
	// default). RetireNever (0) never retires. An all-correct group that
	// does not retire stores nothing and takes the question out of its
	// bucket (there is no bucket K, E3), keeping its trajectories; its next
	// group with 1 <= k <= K-1 puts it back. >= 0.
	RetireAfter int
	// ReplayLimit, when > 0, is the most times one question is replayed:
	// after its ReplayLimit-th replayed group it leaves its bucket for good
	// (it stays in the fresh sampler). 0 (the default, the paper) is no
	// limit. Not in the paper: a variant against E6's per-bucket weights
	// sending a thin bucket's few questions to every step. >= 0.
	ReplayLimit int
}

// RetireNever is the RetireAfter that never retires a question.
const RetireNever = 0

// DefaultConfig returns the paper's settings: K = 8, mu = K/2, sigma = 1, Gaussian
// question selection, 32 candidates per question.
func DefaultConfig() Config {
	return Config{K: 8, Mu: 4, Sigma: 1, Selection: SelectGaussian, MaxCandidates: 32, RetireAfter: 1}
}

// Validate reports the first out-of-range field.
func (c Config) Validate() error {
	switch {
	case c.K < 2 || c.K > MaxK:
		return fmt.Errorf("%w: K = %d: need 2 <= K <= %d rollouts per question", ErrInvalidConfig, c.K, MaxK)
	case math.IsNaN(c.Mu) || math.IsInf(c.Mu, 0):
		return fmt.Errorf("%w: Mu = %v: set a finite centre in correct rollouts (default K/2)", ErrInvalidConfig, c.Mu)
	case !(c.Sigma > 0) || math.IsInf(c.Sigma, 0):
		return fmt.Errorf("%w: Sigma = %v: set a finite width > 0 in correct rollouts (default 1)", ErrInvalidConfig, c.Sigma)
	case c.Selection != SelectGaussian && c.Selection != SelectUniform:
		return fmt.Errorf("%w: Selection = %d: use SelectGaussian or SelectUniform", ErrInvalidConfig, c.Selection)
	case c.MaxCandidates < 1:
		return fmt.Errorf("%w: MaxCandidates = %d: need >= 1 (default 32)", ErrInvalidConfig, c.MaxCandidates)
	case c.RetireAfter < 0 || c.RetireAfter > MaxRetireAfter:
		return fmt.Errorf("%w: RetireAfter = %d: need 0 (never) to %d all-correct groups in a row (the paper: 1)", ErrInvalidConfig, c.RetireAfter, MaxRetireAfter)
	case c.ReplayLimit < 0:
		return fmt.Errorf("%w: ReplayLimit = %d: need >= 0 (0 = no limit, the paper)", ErrInvalidConfig, c.ReplayLimit)
	}
	return nil
}

// BucketWeights returns the unnormalised Gaussian weight of every bucket,
// indexed by k (index 0 is unused and 0): w_k = exp(-(k-Mu)^2 / (2 Sigma^2))
// for k = 1..K-1 (ALGORITHM.md E6).
func (c Config) BucketWeights() []float64 {
	w := make([]float64, c.K)
	for k := 1; k < c.K; k++ {
		d := float64(k) - c.Mu
		w[k] = math.Exp(-d * d / (2 * c.Sigma * c.Sigma))
	}
	return w
}

// BucketProbabilities returns the probability that one draw of the Gaussian
// selection lands in bucket k, given the bucket sizes (indexed by k, as
// Pool.Stats().Buckets): weights normalised over the non-empty buckets only
// (ALGORITHM.md E6). All zeros when every bucket is empty.
func (c Config) BucketProbabilities(sizes []int) []float64 {
	w := c.relativeWeights(func(k int) bool { return k < len(sizes) && sizes[k] > 0 })
	var sum float64
	for _, x := range w {
		sum += x
	}
	if sum > 0 {
		for k := range w {
			w[k] /= sum
		}
	}
	return w
}

// relativeWeights returns the Gaussian weights of the buckets for which
// nonEmpty is true, divided by the largest of them (indexed by k, 0 elsewhere).
// Dividing in log space keeps far-from-Mu buckets from all underflowing to 0
// when K is large and Sigma small; after normalisation the result equals
// BucketWeights normalised.
func (c Config) relativeWeights(nonEmpty func(k int) bool) []float64 {
	w := make([]float64, c.K)
	best := math.Inf(1)
	for k := 1; k < c.K; k++ {
		if nonEmpty(k) {
			d := float64(k) - c.Mu
			best = min(best, d*d)
		}
	}
	for k := 1; k < c.K; k++ {
		if nonEmpty(k) {
			d := float64(k) - c.Mu
			w[k] = math.Exp(-(d*d - best) / (2 * c.Sigma * c.Sigma))
		}
	}
	return w
}
