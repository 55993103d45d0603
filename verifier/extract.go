package verifier

import (
	"strings"
)

// box is one \boxed{...} or \fbox{...} found in a text: [start, end) spans the
// whole command, inner the text between the braces.
type box struct {
	start, end int
	inner      string
}

// findBoxes returns the boxes of s in order. Nested boxes are part of their
// outer box (scanning resumes after the outer one), so the scan is linear in
// len(s) whatever the nesting. An unclosed box runs to the end of s.
func findBoxes(s string) []box {
	var out []box
	i := 0
	for i < len(s) {
		j := strings.IndexByte(s[i:], '\\')
		if j < 0 {
			break
		}
		j += i
		var name string
		switch {
		case strings.HasPrefix(s[j:], `\boxed`):
			name = `\boxed`
		case strings.HasPrefix(s[j:], `\fbox`):
			name = `\fbox`
		default:
			i = j + 1
			continue
		}
		k := j + len(name)
		for k < len(s) && (s[k] == ' ' || s[k] == '\t') {
			k++
		}
		if k >= len(s) {
			break
		}
		if s[k] != '{' {
			// "\boxed 5": one token up to the next space or delimiter.
			e := k
			for e < len(s) && !strings.ContainsRune(" \t\n$.,;", rune(s[e])) {
				e++
			}
			if e > k {
				out = append(out, box{start: j, end: e, inner: s[k:e]})
			}
			i = e
			if e == k {
				i = k + 1
			}
			continue
		}
		end, closed := matchBrace(s, k)
		if closed {
			out = append(out, box{start: j, end: end + 1, inner: s[k+1 : end]})
			i = end + 1
		} else {
			out = append(out, box{start: j, end: len(s), inner: s[k+1:]})
			i = len(s)
		}
	}
	return out
}

// matchBrace returns the index of the brace closing the one at s[open], and
// whether it was found. Escaped braces (\{ \}) do not count.
func matchBrace(s string, open int) (int, bool) {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i, true
			}
		}
	}
	return len(s), false
}

// lastBoxes returns the content of the last box, joined with the boxes just
// before it when only a connector separates them ("\boxed{1} and \boxed{2}",
// "\boxed{(2,2)} \quad \text{and} \quad \boxed{(6,2)}"): such runs are one
// answer given as several boxes. The joined content is a comma list.
func lastBoxes(s string) (string, bool) {
	b, _, ok := lastBoxesEnd(s)
	return b, ok
}

// lastBoxesEnd is lastBoxes that also returns where the last box ends.
func lastBoxesEnd(s string) (string, int, bool) {
	bs := findBoxes(s)
	if len(bs) == 0 {
		return "", -1, false
	}
	first := len(bs) - 1
	for first > 0 && isConnectorGap(s[bs[first-1].end:bs[first].start]) {
		first--
	}
	end := bs[len(bs)-1].end
	if first == len(bs)-1 {
		return bs[first].inner, end, true
	}
	parts := make([]string, 0, len(bs)-first)
	for _, b := range bs[first:] {
		parts = append(parts, b.inner)
	}
	return strings.Join(parts, ", "), end, true
}

// isConnectorGap reports whether the text between two boxes only joins them:
// it is short and, once math delimiters, spacing commands and \text wrappers
// are removed, empty or holding a connector ("," ";" "and" "or" "&") and no
// conclusion word (conclusionWords: "the answer is", "so", "hence", ...).
func isConnectorGap(g string) bool {
	if len(g) > 48 {
		return false
	}
	r := strings.NewReplacer(`\quad`, " ", `\qquad`, " ", `\text`, " ", `\mathrm`, " ",
		`\(`, " ", `\)`, " ", `\[`, " ", `\]`, " ", `$`, " ", `\,`, " ", `\;`, " ",
		`\ `, " ", "{", " ", "}", " ", "\\\\", " ", "\n", " ", "\t", " ")
	g = strings.TrimSpace(r.Replace(g))
	if g == "" {
		return true
	}
	words := strings.FieldsFunc(asciiLower(g), func(r rune) bool {
		return r >= 128 || !(isLetter(byte(r)) || isDigit(byte(r)))
	})
	// A conclusion between the boxes makes the last box the answer and the
	// earlier one a step: "\boxed{5}, so the answer is \boxed{7}" answers 7,
	// not the list "5, 7". Every anchor phrase holds "answer", "result" or
	// "solution"; "so", "thus", "hence", "therefore" conclude without one.
	for _, w := range words {
		if _, ok := conclusionWords[w]; ok {
			return false
		}
	}
	if len(words) == 0 || strings.ContainsAny(g, ",;") {
		return true // only symbols, or a list separator, between the boxes
	}
	for _, w := range words {
		if w == "and" || w == "or" {
			return true
		}
	}
	return strings.Contains(g, "&")
}

// conclusionWords mark the text between two boxes as a conclusion (see
// isConnectorGap); anchors (the anchor phrases) all contain one of the first
// four.
var conclusionWords = map[string]struct{}{"answer": {}, "answers": {}, "result": {}, "solution": {},
	"so": {}, "thus": {}, "hence": {}, "therefore": {}, "finally": {}}

// stopMarkers end a response: chat-template tokens that leaked into the text.
var stopMarkers = []string{"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"}

func cutStopMarkers(s string) string {
	for _, m := range stopMarkers {
		if i := strings.Index(s, m); i >= 0 {
			s = s[:i]
		}
	}
	return s
}
