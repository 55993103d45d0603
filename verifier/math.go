package verifier

import (
	"strings"
)

// Math grades general math answers (see the package comment and
// docs/VERIFIER.md for the conventions). Math is safe for concurrent use: it
// holds only its configuration.
type Math struct {
	cfg Config
}

// NewMath returns the general math checker with cfg (the format gate is
// cfg.ThinkGate).
func NewMath(cfg Config) (*Math, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Math{cfg: cfg}, nil
}

// Check implements Checker.
func (m *Math) Check(gold, response string) Verdict {
	if len(response) > m.cfg.MaxInputBytes || len(gold) > m.cfg.MaxInputBytes {
		return Verdict{Reason: ReasonTooLarge}
	}
	text, gated := applyThinkGate(m.cfg, response)
	if gated {
		return Verdict{Reason: ReasonFormatGate}
	}
	bud := &budget{left: m.cfg.StepBudget}
	// Scanning is linear; charge it so huge inputs leave less for parsing.
	bud.spend((len(text) + len(gold)) / 64)
	text = cutStopMarkers(text)

	g, ok := goldAnswer(gold)
	if !ok {
		return Verdict{Reason: ReasonBadGold}
	}
	if letter, ok := choiceLetter(g); ok {
		got, found := predictedLetter(text)
		v := Verdict{Extracted: got}
		switch {
		case !found:
			v.Reason = ReasonNoAnswer
		case got == letter:
			v.Correct, v.Reason = true, ReasonCorrect
		default:
			v.Reason = ReasonWrongValue
		}
		return v
	}
	ans, ok := predictedAnswer(text)
	if !ok {
		return Verdict{Reason: ReasonNoAnswer}
	}
	v := Verdict{Extracted: strings.TrimSpace(ans)}
	correct, err := m.equivalent(g, ans, bud)
	switch {
	case bud.out:
		v.Reason = ReasonTimeout
	case err != nil:
		v.Reason = err.Error()
	case correct:
		v.Correct, v.Reason = true, ReasonCorrect
	default:
		v.Reason = ReasonWrongValue
	}
	return v
}

type reasonError string

func (e reasonError) Error() string { return string(e) }

// errBadGold is returned by equivalent when the gold answer cannot be read.
const errBadGold = reasonError(ReasonBadGold)

// equivalent decides whether the extracted answer ans equals the gold
// answer g (both still raw LaTeX).
func (m *Math) equivalent(g, ans string, bud *budget) (bool, error) {
	if len(g) > m.cfg.MaxAnswerBytes {
		return false, errBadGold
	}
	if len(ans) > m.cfg.MaxAnswerBytes {
		return false, nil
	}
	ng, np := normalize(g), normalize(ans)
	if ng.s == "" {
		return false, errBadGold
	}
	if np.s == "" {
		return false, nil
	}
	if squash(ng.s) == squash(np.s) {
		return true, nil
	}
	c := &comparer{cfg: m.cfg, bud: bud}
	gn, gerr := parseAnswer(ng.s, bud)
	pn, perr := parseAnswer(np.s, bud)
	if gerr != nil || perr != nil {
		// A side that cannot be parsed equals only the same text (compared
		// above, spaces aside): no guessing from fragments.
		if gerr != nil && perr == nil && isWords(ng.s) {
			return textKey(ng.s) == textKey(np.s), nil
		}
		return false, nil
	}
	if isWords(ng.s) || isWords(np.s) {
		// words compare without case ("Monday", "monday"); single letters
		// keep it (E is not e) because they are not words
		return strings.EqualFold(textKey(ng.s), textKey(np.s)), nil
	}
	gv, pv := c.canon(gn, true), c.canon(pn, false)
	if c.same(gv, pv) {
		return true, nil
	}
	hundred := &node{op: opNum, num: ratInt(100), dp: -1}
	if ng.percent && !isCollection(gv) && gv.op != opRel {
		// "28\%" also accepts 0.28
		if c.same(&node{op: opDiv, kids: []*node{gv, hundred}}, pv) {
			return true, nil
		}
	}
	if np.percent && !ng.percent && !isCollection(pv) && pv.op != opRel {
		// "28\%" answers 0.28 (and, above, 28)
		if c.same(gv, &node{op: opDiv, kids: []*node{pv, hundred}}) {
			return true, nil
		}
	}
	return false, nil
}

// squash removes spaces: two answers that differ only in spacing are equal.
func squash(s string) string {
	return strings.Join(strings.Fields(s), "")
}

// textKey is the comparison key of a text answer: letters and digits only,
// spaces and braces removed, case kept ("E" and "e" differ).
func textKey(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isLetter(c) || isDigit(c) || c >= 0x80 {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isWords reports a text answer: two or more letters, nothing else but
// spaces ("Evelyn", "odd", "The midpoints form a regular hexagon").
func isWords(s string) bool {
	letters := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isLetter(c):
			letters++
		case c == ' ':
		default:
			return false
		}
	}
	if letters < 2 {
		return false
	}
	w := strings.TrimSpace(s)
	if _, ok := funcWords[w]; ok {
		return false
	}
	return letters >= 3
}
