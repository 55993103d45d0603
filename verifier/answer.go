package verifier

import (
	"strings"
)

// Answer extraction. A response is searched, in this order of priority, for
// the last \boxed{...} (with the boxes just before it when only a connector
// separates them), an anchor phrase ("the final answer is", "Answer:"), the
// last math region ($...$, $$...$$, \(...\), \[...\]) unless a number
// follows it, the whole response when it is short and not prose, and the
// last standalone number. Every scan is linear in the length of the text.

// anchors introduce an answer in prose. The one ending last wins.
var anchors = []string{"final answer is", "the answer is", "answer is", "final answer:", "answer:",
	"final answer", "the result is", "solution is", "answer :"}

// maxWholeAnswer is the longest response taken whole as an answer.
const maxWholeAnswer = 256

// goldAnswer extracts the answer from a gold field, which may be a bare
// answer, an answer in $...$, or a whole worked solution.
func goldAnswer(gold string) (string, bool) {
	gold = strings.TrimSpace(gold)
	if gold == "" {
		return "", false
	}
	if b, ok := lastBoxes(gold); ok && strings.TrimSpace(b) != "" {
		return b, true
	}
	if len(gold) <= maxWholeAnswer && !isProse(gold) {
		return gold, true
	}
	if a, ok := fromProse(gold); ok {
		return a, true
	}
	return gold, true
}

// predictedAnswer extracts the answer from a model response.
func predictedAnswer(text string) (string, bool) {
	if b, end, ok := lastBoxesEnd(text); ok {
		// "... \boxed{255} ... The final answer is $10,455$": an anchor after
		// the last box states the conclusion.
		if rem, _, ok := afterAnchorAt(tail(text[end:])); ok {
			if a, ok := fromRemainder(rem); ok {
				return a, true
			}
		}
		if strings.TrimSpace(b) == "" {
			return "", false
		}
		return b, true
	}
	return fromProse(text)
}

// fromProse extracts an answer from text without boxes.
func fromProse(text string) (string, bool) {
	text = tail(text)
	if strings.TrimSpace(text) == "" {
		return "", false
	}
	if rem, ok := afterAnchor(text); ok {
		if a, ok := fromRemainder(rem); ok {
			return a, true
		}
	}
	region, end, okR := lastMathRegion(text)
	num, numAt, okN := lastNumber(text)
	switch {
	case okR && (!okN || numAt < end):
		return region, true
	case len(text) <= maxWholeAnswer && !isProse(text) && !strings.Contains(text, "$"):
		return text, true
	case okN:
		return num, true
	}
	if len(text) <= 64 {
		return text, strings.TrimSpace(text) != ""
	}
	return "", false
}

// proseWindow bounds the text searched for anchors, math regions and
// numbers: the answer of a response without a box is at its end, and the
// bound keeps the work of the prose fallbacks independent of input size.
const proseWindow = 64 << 10

// tail returns the last proseWindow bytes of s, starting after a newline
// when one is near the cut (so that $ delimiters pair up as written).
func tail(s string) string {
	if len(s) <= proseWindow {
		return s
	}
	t := s[len(s)-proseWindow:]
	if i := strings.IndexByte(t, '\n'); i >= 0 && i < 4096 {
		t = t[i+1:]
	}
	return t
}

// afterAnchor returns the text after the anchor phrase that ends last, up to
// the end of its line.
func afterAnchor(text string) (string, bool) {
	rem, _, ok := afterAnchorAt(text)
	return rem, ok
}

// afterAnchorAt is afterAnchor that also returns where the anchor ends.
func afterAnchorAt(text string) (string, int, bool) {
	// Anchors are ASCII; lower-casing ASCII keeps byte offsets.
	low := asciiLower(text)
	best := -1
	for _, a := range anchors {
		if i := strings.LastIndex(low, a); i >= 0 && i+len(a) > best {
			best = i + len(a)
		}
	}
	if best < 0 {
		return "", -1, false
	}
	rem := text[best:]
	if i := strings.IndexByte(rem, '\n'); i >= 0 && strings.TrimSpace(rem[:i]) != "" {
		rem = rem[:i]
	}
	if i := strings.Index(asciiLower(rem), "i hope"); i >= 0 {
		rem = rem[:i]
	}
	return rem, best, true
}

// fromRemainder reads the answer in the sentence after an anchor.
func fromRemainder(rem string) (string, bool) {
	rem = strings.TrimSpace(rem)
	rem = strings.TrimLeft(rem, ": ")
	// "The largest $n$ is 34." -> "34."
	if i := strings.LastIndex(rem, " is "); i >= 0 {
		rem = rem[i+4:]
	}
	if i := strings.Index(rem, ". "); i >= 0 {
		rem = rem[:i]
	}
	rem = strings.TrimSpace(rem)
	if rem == "" {
		return "", false
	}
	// "$12$ and $13$": several regions joined by connectors are one answer
	if strings.Count(rem, "$") >= 4 {
		if whole := quoteReplacer.Replace(rem); !isProse(whole) {
			return whole, true
		}
	}
	if region, _, ok := lastMathRegion(rem); ok {
		return region, true
	}
	if !isProse(rem) {
		return rem, true
	}
	// prose after the anchor: the answer is the number right after it
	// ("The answer is 11 because 5+6=11, not 12")
	if num, ok := firstNumber(rem); ok {
		return num, true
	}
	return "", false
}

// firstNumber finds the first standalone number (see lastNumber).
func firstNumber(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || (i > 0 && (isLetter(s[i-1]) || s[i-1] == '_' || s[i-1] == '^')) {
			continue
		}
		start := i
		if i > 0 && s[i-1] == '-' {
			start = i - 1
		}
		j := i
		for j < len(s) && (isDigit(s[j]) || ((s[j] == ',' || s[j] == '.' || s[j] == '/') && j+1 < len(s) && isDigit(s[j+1]))) {
			j++
		}
		return s[start:j], true
	}
	return "", false
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// lastMathRegion finds the last delimited math region. Inline $...$ and
// \(...\) must not span a newline (a lone $ is a currency sign); display
// $$...$$ and \[...\] may. end is the offset just after the region.
func lastMathRegion(s string) (string, int, bool) {
	var last string
	lastEnd := -1
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$$"):
			j := strings.Index(s[i+2:], "$$")
			if j < 0 {
				i += 2
				continue
			}
			last, lastEnd = s[i+2:i+2+j], i+4+j
			i = lastEnd
		case s[i] == '$' && (i == 0 || s[i-1] != '\\'):
			j := i + 1
			for j < len(s) && s[j] != '$' && s[j] != '\n' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j < len(s) && s[j] == '$' {
				last, lastEnd = s[i+1:j], j+1
				i = j + 1
				continue
			}
			i++
		case strings.HasPrefix(s[i:], `\(`):
			j := strings.Index(s[i+2:], `\)`)
			if j < 0 {
				i += 2
				continue
			}
			if !strings.Contains(s[i+2:i+2+j], "\n") {
				last, lastEnd = s[i+2:i+2+j], i+4+j
			}
			i = i + 4 + j
		case strings.HasPrefix(s[i:], `\[`):
			j := strings.Index(s[i+2:], `\]`)
			if j < 0 {
				i += 2
				continue
			}
			last, lastEnd = s[i+2:i+2+j], i+4+j
			i = lastEnd
		case s[i] == '\\':
			i += 2
		default:
			i++
		}
	}
	if lastEnd < 0 || strings.TrimSpace(last) == "" {
		return "", -1, false
	}
	return last, lastEnd, true
}

// lastNumber finds the last standalone number (not glued to a letter before
// it): digits with thousands commas, a decimal part and an optional /denominator.
func lastNumber(s string) (string, int, bool) {
	i := len(s) - 1
	for i >= 0 {
		for i >= 0 && !isDigit(s[i]) {
			i--
		}
		if i < 0 {
			return "", -1, false
		}
		end := i + 1
		for i >= 0 && (isDigit(s[i]) || s[i] == ',' || s[i] == '.' || s[i] == '/') {
			i--
		}
		start := i + 1
		for start < end && !isDigit(s[start]) && s[start] != '.' {
			start++
		}
		if i >= 0 && (isLetter(s[i]) || s[i] == '_' || s[i] == '^') {
			continue
		}
		if i >= 0 && s[i] == '-' {
			start = i
		}
		num := strings.TrimRight(s[start:end], ",./")
		if num == "" || num == "-" {
			continue
		}
		return num, start, true
	}
	return "", -1, false
}

// isProse reports whether s reads as sentences rather than an answer: it has
// at least two words of three or more letters that are not LaTeX commands,
// function names, connectors or units.
func isProse(s string) bool {
	words := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\\' {
			i++
			j := i
			for i < len(s) && isLetter(s[i]) {
				i++
			}
			if cmd := s[j:i]; (cmd == "begin" || cmd == "end") && i < len(s) && s[i] == '{' {
				// an environment name is not prose
				for i < len(s) && s[i] != '}' {
					i++
				}
			}
			continue
		}
		if !isLetter(c) {
			i++
			continue
		}
		j := i
		for j < len(s) && isLetter(s[j]) {
			j++
		}
		w := asciiLower(s[i:j])
		i = j
		if len(w) < 3 {
			continue
		}
		if _, ok := funcWords[w]; ok {
			continue
		}
		switch w {
		case "and", "percent", "pct", "percentage", "infty", "inf", "cdot", "frac", "sqrt", "text":
			continue
		}
		words++
		if words >= 2 {
			return true
		}
	}
	return false
}

// choiceLetter reports a multiple-choice gold answer: one capital letter,
// possibly in \text{}, parentheses or a box.
func choiceLetter(gold string) (string, bool) {
	s := letterCore(gold)
	if len(s) == 1 && s[0] >= 'A' && s[0] <= 'Z' {
		return s, true
	}
	return "", false
}

var quoteReplacer = strings.NewReplacer("$", " ", `\"`, " ", `"`, " ")

var letterReplacer = strings.NewReplacer("$", "", `\textbf`, "", `\text`, "", `\mathrm`, "", "{", "", "}", "",
	"(", "", ")", "", `\(`, "", `\)`, "", " ", "", ".", "", "*", "", ":", "")

func letterCore(s string) string {
	if len(s) > 64 {
		return s
	}
	return strings.TrimSpace(letterReplacer.Replace(s))
}

// predictedLetter finds the chosen letter in a response: in the last box,
// after an anchor, or else the first standalone capital letter.
func predictedLetter(text string) (string, bool) {
	if b, ok := lastBoxes(text); ok {
		s := letterCore(b)
		if len(s) == 1 {
			return s, true
		}
		return s, s != ""
	}
	if rem, ok := afterAnchor(text); ok {
		if l, ok := firstCapital(rem); ok {
			return l, true
		}
	}
	return firstCapital(text)
}

// firstCapital returns the first capital letter standing alone as a word
// ("A." or "(B)"), skipping the pronoun "I".
func firstCapital(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 'A' || c > 'Z' || c == 'I' {
			continue
		}
		if i > 0 && (isLetter(s[i-1]) || s[i-1] == '\\') {
			continue
		}
		if i+1 < len(s) && (isLetter(s[i+1]) || isDigit(s[i+1])) {
			continue
		}
		return string(c), true
	}
	return "", false
}
