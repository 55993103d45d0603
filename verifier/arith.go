package verifier

import (
	"math/big"
	"strings"
)

// Arith grades the built-in arithmetic tasks: the response is a short worked
// solution that ends in \boxed{<integer>}, and only the last box is graded,
// exactly (no tolerance, no other extraction). Being strict here is the
// point: the tiny policy must learn the output format along with the sum.
// Arith is safe for concurrent use.
type Arith struct {
	cfg Config
}

// NewArith returns the arithmetic checker. Only the size cap and the format
// gate of cfg are used.
func NewArith(cfg Config) (*Arith, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Arith{cfg: cfg}, nil
}

// maxArithDigits bounds the integers Arith compares; a gold or answer longer
// than this is not an arithmetic-task answer.
const maxArithDigits = 4096

// Check implements Checker.
func (a *Arith) Check(gold, response string) Verdict {
	if len(response) > a.cfg.MaxInputBytes || len(gold) > a.cfg.MaxInputBytes {
		return Verdict{Reason: ReasonTooLarge}
	}
	want, ok := parseInteger(gold)
	if !ok {
		if b, found := lastBox(gold); found {
			want, ok = parseInteger(b)
		}
		if !ok {
			return Verdict{Reason: ReasonBadGold}
		}
	}
	text, gated := applyThinkGate(a.cfg, response)
	if gated {
		return Verdict{Reason: ReasonFormatGate}
	}
	inner, found := lastBox(text)
	if !found {
		return Verdict{Reason: ReasonNoAnswer}
	}
	got, ok := parseInteger(inner)
	if !ok {
		return Verdict{Reason: ReasonNotInteger, Extracted: inner}
	}
	v := Verdict{Extracted: strings.TrimSpace(inner)}
	if got.Cmp(want) == 0 {
		v.Correct, v.Reason = true, ReasonCorrect
	} else {
		v.Reason = ReasonWrongValue
	}
	return v
}

// lastBox returns the content of the last \boxed{...} or \fbox{...} of s.
func lastBox(s string) (string, bool) {
	bs := findBoxes(s)
	if len(bs) == 0 {
		return "", false
	}
	return bs[len(bs)-1].inner, true
}

// parseInteger reads an optionally signed decimal integer, allowing
// surrounding spaces and $ delimiters but nothing else.
func parseInteger(s string) (*big.Int, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimSpace(strings.Trim(s, "$"))
	if s == "" || len(s) > maxArithDigits {
		return nil, false
	}
	body := s
	if body[0] == '-' || body[0] == '+' {
		body = strings.TrimSpace(body[1:])
	}
	if body == "" {
		return nil, false
	}
	for i := 0; i < len(body); i++ {
		if body[i] < '0' || body[i] > '9' {
			return nil, false
		}
	}
	n, ok := new(big.Int).SetString(body, 10)
	if !ok {
		return nil, false
	}
	if s[0] == '-' {
		n.Neg(n)
	}
	return n, true
}

// applyThinkGate returns the text to grade and whether the format gate
// rejects the response (gate on and no closing marker).
func applyThinkGate(cfg Config, response string) (string, bool) {
	if !cfg.ThinkGate {
		return response, false
	}
	i := strings.LastIndex(response, cfg.ThinkClose)
	if i < 0 {
		return "", true
	}
	return response[i+len(cfg.ThinkClose):], false
}
