package task

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
)

// Families of built-in problems. The policy is warmed up and trained on
// FamilyChain only; the others are out-of-distribution tests that the same
// verifier checks.
const (
	// FamilyChain: flat expressions over + - * with the usual precedence,
	// e.g. "7-2*3+4". Level = number of operands.
	FamilyChain = "chain"
	// FamilyParen: + - * with at least one pair of parentheses, e.g.
	// "(3+4)*2"; '(' and ')' never occur in training.
	FamilyParen = "paren"
	// FamilyDiv: flat expressions over + - * / with at least one exact
	// division, e.g. "8/2+3"; '/' never occurs in training.
	FamilyDiv = "div"
)

// KindArith is the verifier kind of every built-in problem (verifier.Lookup).
const KindArith = "arith"

// Split names a partition of the question space. Membership depends only on
// the question text (a hash of it), never on a seed, so any train set and any
// held-out set are disjoint by construction, whatever seeds drew them.
type Split int

const (
	SplitTrain   Split = iota // about 90% of questions
	SplitHeldOut              // the other ~10%: evaluation only
	SplitAny                  // no restriction (tests, demos)
)

func (s Split) String() string {
	switch s {
	case SplitTrain:
		return "train"
	case SplitHeldOut:
		return "heldout"
	case SplitAny:
		return "any"
	}
	return "split(" + strconv.Itoa(int(s)) + ")"
}

// heldOutPerMille is the share of the question space reserved for
// evaluation. With one-digit operands the smallest level (two operands, 300
// questions) keeps about 30 held-out questions.
const heldOutPerMille = 100

// questionHash is the stable 64-bit FNV-1a hash of a question's text.
func questionHash(prompt string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	return h.Sum64()
}

// SplitOf says which partition a question belongs to (never SplitAny).
func SplitOf(prompt string) Split {
	if questionHash(prompt)%1000 < heldOutPerMille {
		return SplitHeldOut
	}
	return SplitTrain
}

// QuestionID is the stable id of a built-in question: family, level and a
// hash of the text, in characters that are safe in NATS subjects and file
// names (no '.', '*', '>' or spaces).
func QuestionID(family string, level int, prompt string) string {
	return fmt.Sprintf("%s%d-%016x", family, level, questionHash(family+"|"+prompt))
}

// Spec describes a distribution of built-in problems.
type Spec struct {
	Family  string    // FamilyChain (default when empty), FamilyParen or FamilyDiv
	Levels  []int     // difficulty levels to draw from; level = number of operands, 2..9
	Weights []float64 // relative weight per entry of Levels; nil = uniform
	// Digits bounds operands: uniform in [1, 10^Digits); 1..4, default 1.
	// Zero is never an operand: products by zero made every fifth answer
	// 0, a guess that would pay off without any arithmetic.
	Digits int
	MaxAbs int64 // bound on |every intermediate value|; 0 = 10^Digits-1 (results no longer than operands)
	// Negative allows negative intermediate values. Off, every step's
	// result lies in [0, MaxAbs]: with one-digit operands the whole task is
	// then about 150 single-digit facts chained, which a small model learns
	// in a minute; difficulty comes from the number of chained steps.
	Negative bool
	Split    Split // the partition questions come from
}

// ErrSpec reports an invalid Spec; ErrExhausted a request for more distinct
// questions than a Spec's partition holds.
var (
	ErrSpec      = errors.New("task: invalid spec")
	ErrExhausted = errors.New("task: not enough distinct questions")
)

func (s Spec) withDefaults() Spec {
	if s.Family == "" {
		s.Family = FamilyChain
	}
	if s.Digits == 0 {
		s.Digits = 1
	}
	if s.MaxAbs == 0 {
		s.MaxAbs = pow10(s.Digits) - 1
	}
	return s
}

func pow10(n int) int64 {
	v := int64(1)
	for range n {
		v *= 10
	}
	return v
}

// Validate checks a Spec (after defaults) and says how to fix it.
func (s Spec) Validate() error {
	s = s.withDefaults()
	switch s.Family {
	case FamilyChain, FamilyParen, FamilyDiv:
	default:
		return fmt.Errorf("%w: family %q (use %q, %q or %q)", ErrSpec, s.Family, FamilyChain, FamilyParen, FamilyDiv)
	}
	if len(s.Levels) == 0 {
		return fmt.Errorf("%w: no levels (set Levels, e.g. []int{2,3,4,5})", ErrSpec)
	}
	minLevel := 2
	if s.Family == FamilyParen {
		minLevel = 3 // two operands need no parentheses
	}
	for _, l := range s.Levels {
		if l < minLevel || l > 9 {
			return fmt.Errorf("%w: level %d out of range [%d, 9] for family %q", ErrSpec, l, minLevel, s.Family)
		}
	}
	if s.Weights != nil {
		if len(s.Weights) != len(s.Levels) {
			return fmt.Errorf("%w: %d weights for %d levels (give one weight per level or none)", ErrSpec, len(s.Weights), len(s.Levels))
		}
		total := 0.0
		for _, w := range s.Weights {
			if !(w >= 0) {
				return fmt.Errorf("%w: weight %v (weights must be >= 0)", ErrSpec, w)
			}
			total += w
		}
		if total <= 0 {
			return fmt.Errorf("%w: all weights are zero", ErrSpec)
		}
	}
	if s.Digits < 1 || s.Digits > 4 {
		return fmt.Errorf("%w: digits %d out of range [1, 4]", ErrSpec, s.Digits)
	}
	if s.MaxAbs < 0 {
		return fmt.Errorf("%w: MaxAbs %d < 0 (0 means the default bound)", ErrSpec, s.MaxAbs)
	}
	if s.Split < SplitTrain || s.Split > SplitAny {
		return fmt.Errorf("%w: split %d", ErrSpec, s.Split)
	}
	return nil
}

// maxDrawTries bounds the rejection sampling of one question (wrong
// partition, out-of-range intermediate, inexact division). The rarest
// built-in case, a held-out 7-operand chain with every value in 0..9, is
// accepted about once in 2,000 tries.
const maxDrawTries = 200000

// drawLevel samples one question of the given level from s (s must be valid and
// defaulted). It is deterministic given rng's state.
func (s Spec) drawLevel(level int, rng *rand.Rand) (Problem, error) {
	for range maxDrawTries {
		expr := s.expression(level, rng)
		if s.Split != SplitAny && SplitOf(expr) != s.Split {
			continue
		}
		lo := int64(0)
		if s.Negative {
			lo = -s.MaxAbs
		}
		v, sol, err := solveIn(expr, lo, s.MaxAbs)
		if err != nil {
			continue
		}
		return Problem{
			ID:       QuestionID(s.Family, level, expr),
			Prompt:   expr,
			Answer:   strconv.FormatInt(v, 10),
			Kind:     KindArith,
			Family:   s.Family,
			Level:    level,
			Solution: sol,
		}, nil
	}
	return Problem{}, fmt.Errorf("%w: no valid %s question at level %d after %d tries (raise MaxAbs)", ErrExhausted, s.Family, level, maxDrawTries)
}

// Draw samples one question from s; levels are drawn by weight. Questions
// may repeat across calls (use Generate for a set of distinct ones).
func (s Spec) Draw(rng *rand.Rand) (Problem, error) {
	if err := s.Validate(); err != nil {
		return Problem{}, err
	}
	s = s.withDefaults()
	return s.drawLevel(s.Levels[pickWeighted(s.Weights, len(s.Levels), nil, rng)], rng)
}

// pickWeighted draws an index in [0, n) proportional to weights (nil =
// uniform), skipping indices marked in excluded (nil = none).
func pickWeighted(weights []float64, n int, excluded []bool, rng *rand.Rand) int {
	w := func(i int) float64 {
		if excluded != nil && excluded[i] {
			return 0
		}
		if weights == nil {
			return 1
		}
		return weights[i]
	}
	total := 0.0
	for i := range n {
		total += w(i)
	}
	x := rng.Float64() * total
	last := -1
	for i := range n {
		if w(i) <= 0 {
			continue
		}
		last = i
		if x < w(i) {
			return i
		}
		x -= w(i)
	}
	return last // rounding at the top end
}

// expression writes one random expression with level operands.
func (s Spec) expression(level int, rng *rand.Rand) string {
	operand := func() int64 { return 1 + rng.Int64N(pow10(s.Digits)-1) }
	switch s.Family {
	case FamilyParen:
		for {
			e := printTree(randomTree(level, "+-*", operand, rng), 0, false)
			if strings.ContainsRune(e, '(') {
				return e
			}
		}
	case FamilyDiv:
		for {
			e := flatExpression(level, "+-*/", operand, rng)
			if strings.ContainsRune(e, '/') {
				return e
			}
		}
	default:
		return flatExpression(level, "+-*", operand, rng)
	}
}

func flatExpression(level int, ops string, operand func() int64, rng *rand.Rand) string {
	var b strings.Builder
	for i := range level {
		if i > 0 {
			b.WriteByte(ops[rng.IntN(len(ops))])
		}
		b.WriteString(strconv.FormatInt(operand(), 10))
	}
	return b.String()
}

// randomTree builds a uniformly split random binary tree with the given
// number of leaves.
func randomTree(leaves int, ops string, operand func() int64, rng *rand.Rand) *node {
	if leaves == 1 {
		return &node{val: operand()}
	}
	left := 1 + rng.IntN(leaves-1)
	op := ops[rng.IntN(len(ops))]
	return &node{op: op, l: randomTree(left, ops, operand, rng), r: randomTree(leaves-left, ops, operand, rng)}
}

func precedence(op byte) int {
	if op == '*' || op == '/' {
		return 2
	}
	return 1
}

// printTree writes n with the parentheses its shape needs under the usual
// precedence and left associativity, so parseExpr gives back the same tree.
func printTree(n *node, parentPrec int, rightChild bool) string {
	if n.op == 0 {
		return strconv.FormatInt(n.val, 10)
	}
	p := precedence(n.op)
	s := printTree(n.l, p, false) + string(n.op) + printTree(n.r, p, true)
	if p < parentPrec || (rightChild && p == parentPrec) {
		return "(" + s + ")"
	}
	return s
}

// Generate draws n distinct questions from s, deterministically from seed.
// Levels are drawn by weight; a level whose partition runs out of new
// questions is dropped from the draw (so a small level may end up
// under-represented), and ErrExhausted is returned when all run out.
func Generate(name string, s Spec, n int, seed uint64) (Dataset, error) {
	if err := s.Validate(); err != nil {
		return Dataset{}, err
	}
	if n < 0 {
		return Dataset{}, fmt.Errorf("%w: n = %d < 0", ErrSpec, n)
	}
	s = s.withDefaults()
	rng := rand.New(rand.NewPCG(seed, 0x7461736b)) // "task"
	seen := make(map[string]bool, n)
	exhausted := make([]bool, len(s.Levels))
	ds := Dataset{Name: name, Problems: make([]Problem, 0, n)}
	const maxDuplicatesInARow = 500
	for len(ds.Problems) < n {
		li := pickWeighted(s.Weights, len(s.Levels), exhausted, rng)
		if li < 0 {
			return ds, fmt.Errorf("%w: %d of %d distinct questions drawn from %s levels %v (ask for fewer, or add levels)", ErrExhausted, len(ds.Problems), n, s.Split, s.Levels)
		}
		found := false
		for range maxDuplicatesInARow {
			p, err := s.drawLevel(s.Levels[li], rng)
			if err != nil {
				break
			}
			if !seen[p.Prompt] {
				seen[p.Prompt] = true
				ds.Problems = append(ds.Problems, p)
				found = true
				break
			}
		}
		if !found {
			exhausted[li] = true
		}
	}
	return ds, nil
}

// BuiltinSet is a named built-in dataset: a Spec, a default size and seed.
type BuiltinSet struct {
	Name    string
	Spec    Spec
	N       int    // default number of questions
	Seed    uint64 // default seed; fixed so that evaluations compare across runs
	Purpose string // one line for listings
}

// TrainLevels and TrainWeights are the difficulty mix of the training
// distribution: the warm-up, the RL question set and the in-distribution
// held-out evaluation all use it. Weighted towards the harder levels so that
// after the warm-up most questions are neither solved nor hopeless, which is
// where RL (and ExGRPO's medium-difficulty replay) has signal.
var (
	TrainLevels  = []int{2, 3, 4, 5}
	TrainWeights = []float64{1, 2, 3, 3}
)

// TrainSpec is the training distribution (FamilyChain, one-digit operands).
func TrainSpec() Spec {
	return Spec{Family: FamilyChain, Levels: TrainLevels, Weights: TrainWeights, Digits: 1, Split: SplitTrain}
}

// HeldOutSpec is TrainSpec on the held-out partition.
func HeldOutSpec() Spec {
	s := TrainSpec()
	s.Split = SplitHeldOut
	return s
}

var builtinSets = []BuiltinSet{
	{Name: "train", Spec: TrainSpec(), N: 4000, Seed: 1, Purpose: "RL question set: chain, 2-5 operands, train partition"},
	{Name: "heldout", Spec: HeldOutSpec(), N: 400, Seed: 2, Purpose: "in-distribution evaluation: as train, held-out partition"},
	{Name: "ood-long", Spec: Spec{Family: FamilyChain, Levels: []int{6, 7}, Digits: 1, Split: SplitHeldOut}, N: 200, Seed: 3, Purpose: "harder: 6-7 operands (trained on at most 5)"},
	{Name: "ood-digits", Spec: Spec{Family: FamilyChain, Levels: []int{2, 3}, Digits: 2, Split: SplitHeldOut}, N: 200, Seed: 4, Purpose: "harder: two-digit numbers (trained on one digit)"},
	{Name: "ood-paren", Spec: Spec{Family: FamilyParen, Levels: []int{3, 4}, Digits: 1, Split: SplitHeldOut}, N: 200, Seed: 5, Purpose: "unseen family: parentheses"},
	{Name: "ood-div", Spec: Spec{Family: FamilyDiv, Levels: []int{3, 4}, Digits: 1, Split: SplitHeldOut}, N: 200, Seed: 6, Purpose: "unseen family: exact division"},
}

// BuiltinSets lists the named built-in datasets, training set first.
func BuiltinSets() []BuiltinSet {
	out := make([]BuiltinSet, len(builtinSets))
	copy(out, builtinSets)
	return out
}

// OODSetNames lists the out-of-distribution built-in sets, sorted.
func OODSetNames() []string {
	var names []string
	for _, s := range builtinSets {
		if strings.HasPrefix(s.Name, "ood-") {
			names = append(names, s.Name)
		}
	}
	sort.Strings(names)
	return names
}

// Builtin generates the named built-in dataset at its default size and seed.
func Builtin(name string) (Dataset, error) {
	for _, s := range builtinSets {
		if s.Name == name {
			return Generate(s.Name, s.Spec, s.N, s.Seed)
		}
	}
	names := make([]string, len(builtinSets))
	for i, s := range builtinSets {
		names[i] = s.Name
	}
	return Dataset{}, fmt.Errorf("%w: no built-in dataset %q (have %s)", ErrSpec, name, strings.Join(names, ", "))
}
