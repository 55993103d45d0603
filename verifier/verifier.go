// Package verifier decides whether a model's response answers a question
// correctly, given the reference ("gold") answer. It is the reward of RL from
// verifiable rewards, so it must be right, fast and bounded: a wrong verdict
// teaches the policy the wrong thing, and a verdict that hangs stalls a run.
//
// The package is a pure core: no I/O, no clock, no goroutines. Work per item
// is bounded by an input size cap and a step budget that every parsing and
// evaluation step draws from, so a pathological string ends with the verdict
// "timeout" instead of running long. Every verdict carries a reason.
//
// Two task kinds are built in (see Lookup):
//
//   - "math": general math answers. The answer is extracted from the response
//     (last \boxed{...}, anchor phrases, math delimiters, the last number),
//     normalised, and compared with the gold answer without a computer
//     algebra system: exact rationals, square-root forms, tuples, sets,
//     intervals, matrices, relations, multiple-choice letters, and symbolic
//     expressions by evaluation at deterministic pseudo-random points.
//   - "arith": the built-in arithmetic tasks; only the last \boxed{<integer>}
//     is graded, exactly.
//
// The grading conventions are documented in docs/VERIFIER.md.
package verifier

import (
	"errors"
	"fmt"
	"strings"
)

// Reasons carried by a Verdict. Every verdict has exactly one.
const (
	ReasonCorrect    = "correct"     // the extracted answer equals the gold answer
	ReasonWrongValue = "wrong_value" // an answer was found and it differs from the gold answer
	ReasonNoAnswer   = "no_answer"   // no answer could be extracted from the response
	ReasonFormatGate = "format_gate" // the response does not close its reasoning (ThinkGate)
	ReasonTooLarge   = "too_large"   // the response or gold answer exceeds MaxInputBytes
	ReasonTimeout    = "timeout"     // the step budget ran out before a decision
	ReasonBadGold    = "bad_gold"    // the gold answer could not be interpreted
	ReasonNotInteger = "not_integer" // arith: the last box does not hold an integer
)

// Verdict is the outcome of checking one response.
type Verdict struct {
	Correct   bool
	Reason    string // one of the Reason* constants
	Extracted string // the answer text taken from the response ("" when none)
}

// Checker grades a response against a gold answer. Implementations are safe
// for concurrent use and bounded in time (a step budget, not a clock).
type Checker interface {
	Check(gold, response string) Verdict
}

// Errors returned by this package; use errors.Is.
var (
	ErrUnknownKind = errors.New("verifier: unknown task kind")
	ErrBadConfig   = errors.New("verifier: invalid config")
)

// Config tunes the math checker. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// ThinkGate, when true, grades only the text after the last ThinkClose
	// marker and rejects a response without one with reason "format_gate"
	// (the paper's format gate). Default false.
	ThinkGate bool
	// ThinkClose is the marker that closes the reasoning. Default "</think>".
	ThinkClose string
	// MaxInputBytes caps the size of a response and of a gold answer; larger
	// inputs get reason "too_large" without being read. Default 1 MiB + 1 KiB
	// (so a 1 MiB response is still graded).
	MaxInputBytes int
	// MaxAnswerBytes caps the size of one extracted answer that is parsed;
	// longer answers are compared as plain normalised text only. Default 4096.
	MaxAnswerBytes int
	// StepBudget bounds the work per Check in abstract steps (one step is
	// roughly one token parsed, one node evaluated, or one byte scanned by
	// 64). When it runs out the verdict is "timeout". Default 400000, which
	// is a few milliseconds of work.
	StepBudget int
	// Tolerance is the relative tolerance of numeric comparisons of values
	// that are not exact rationals (radicals, pi, random-point evaluation):
	// |a-b| <= Tolerance*max(1,|a|,|b|). Default 1e-8.
	Tolerance float64
	// Points is the number of evaluation points used to compare symbolic
	// expressions; all must agree. Default 6.
	Points int
	// Seed selects the evaluation points. Verdicts are a pure function of
	// (Config, gold, response). Default 1.
	Seed uint64
}

// DefaultConfig returns the documented defaults (format gate off).
func DefaultConfig() Config {
	return Config{
		ThinkClose:     "</think>",
		MaxInputBytes:  1<<20 + 1<<10,
		MaxAnswerBytes: 4096,
		StepBudget:     400000,
		Tolerance:      1e-8,
		Points:         6,
		Seed:           1,
	}
}

// Validate reports a configuration that cannot work, saying how to fix it.
func (c Config) Validate() error {
	switch {
	case c.ThinkGate && c.ThinkClose == "":
		return fmt.Errorf("%w: ThinkGate needs a ThinkClose marker (e.g. \"</think>\")", ErrBadConfig)
	case c.MaxInputBytes <= 0:
		return fmt.Errorf("%w: MaxInputBytes must be > 0 (default %d)", ErrBadConfig, DefaultConfig().MaxInputBytes)
	case c.MaxAnswerBytes <= 0 || c.MaxAnswerBytes > c.MaxInputBytes:
		return fmt.Errorf("%w: MaxAnswerBytes must be in (0, MaxInputBytes] (default 4096)", ErrBadConfig)
	case c.StepBudget < 1000:
		return fmt.Errorf("%w: StepBudget must be >= 1000 (default %d)", ErrBadConfig, DefaultConfig().StepBudget)
	case !(c.Tolerance > 0 && c.Tolerance < 0.1):
		return fmt.Errorf("%w: Tolerance must be in (0, 0.1) (default 1e-8)", ErrBadConfig)
	case c.Points < 1 || c.Points > 64:
		return fmt.Errorf("%w: Points must be in [1, 64] (default 6)", ErrBadConfig)
	}
	return nil
}

// Lookup returns the checker for a task kind: "math" (general math answers,
// DefaultConfig, no format gate; also the empty kind) or "arith" (the
// built-in arithmetic tasks). A "-think" suffix ("math-think",
// "arith-think") turns the format gate on: only the text after the last
// </think> is graded, and a response without one scores 0 with reason
// format_gate, as the paper grades reasoning models.
// Unknown kinds return an error wrapping ErrUnknownKind.
//
// The returned checkers are shared (they hold only their configuration), so
// calling Lookup per item costs nothing.
func Lookup(kind string) (Checker, error) {
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case "math", "":
		return defaultMath, nil
	case "arith", "arithmetic":
		return defaultArith, nil
	case "math-think":
		return gatedMath, nil
	case "arith-think", "arithmetic-think":
		return gatedArith, nil
	}
	return nil, fmt.Errorf("%w: %q (known: math, arith, math-think, arith-think)", ErrUnknownKind, kind)
}

var (
	defaultMath  = &Math{cfg: DefaultConfig()}
	defaultArith = &Arith{cfg: DefaultConfig()}
	gatedMath    = &Math{cfg: gatedConfig()}
	gatedArith   = &Arith{cfg: gatedConfig()}
)

func gatedConfig() Config {
	c := DefaultConfig()
	c.ThinkGate = true
	return c
}
