package verifier

import "strings"

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
	text = cutStopMarkers(text)
	ans, ok := lastBoxes(text)
	if !ok {
		return Verdict{Reason: ReasonNoAnswer}
	}
	g := gold
	if b, ok := lastBoxes(gold); ok {
		g = b
	}
	v := Verdict{Extracted: ans}
	if strings.Join(strings.Fields(ans), "") == strings.Join(strings.Fields(strings.Trim(g, "$")), "") {
		v.Correct, v.Reason = true, ReasonCorrect
	} else {
		v.Reason = ReasonWrongValue
	}
	return v
}
