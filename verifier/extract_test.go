package verifier

import (
	"strings"
	"testing"
)

// TestAnchorBeforeFinalBox: when a conclusion (an anchor phrase such as "the
// answer is", or "so", "hence") stands between an earlier box and the final
// one, the final box is the answer, not the list of both; boxes separated
// only by connectors still join into one list answer.
func TestAnchorBeforeFinalBox(t *testing.T) {
	cases := []struct {
		name, pred, want string
	}{
		{"comma then anchor", `We get \boxed{5}, so the answer is \boxed{7}`, "7"},
		{"semicolon then anchor", `\boxed{5}; the answer is \boxed{7}`, "7"},
		{"or then anchor", `\boxed{5} or the answer is \boxed{7}`, "7"},
		{"final answer colon", `\boxed{5}, final answer: \boxed{7}`, "7"},
		{"answer colon in math", `$\boxed{5}$, Answer: $\boxed{7}$`, "7"},
		{"the result is", `\boxed{5}, the result is \boxed{7}`, "7"},
		{"solution is", `\boxed{5}; solution is \boxed{7}`, "7"},
		{"hence", `\boxed{5}, hence \boxed{7}`, "7"},
		{"so alone", `\boxed{5}, so \boxed{7}`, "7"},
		{"therefore in text", `\boxed{5} \text{, therefore } \boxed{7}`, "7"},
		{"sentence then anchor", `First \boxed{5}. So the answer is \boxed{7}`, "7"},
		{"three boxes, anchor before last", `\boxed{1}, \boxed{2}, so the answer is \boxed{3}`, "3"},
		{"anchor before a joined pair", `\boxed{9}, so the answer is \boxed{1} and \boxed{2}`, "1, 2"},
		// still joined: connectors only
		{"comma list", `\boxed{5}, \boxed{7}`, "5, 7"},
		{"and", `\boxed{1} and \boxed{2}`, "1, 2"},
		{"quad text and", `\boxed{(2,2)} \quad \text{and} \quad \boxed{(6,2)}`, "(2,2), (6,2)"},
		{"descriptive and", `\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}`, "(3, 3), (1, 1)"},
		{"ampersand", `\boxed{1} & \boxed{2}`, "1, 2"},
		{"no connector", `\boxed{1} no no no no \boxed{2}`, "2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := predictedAnswer(tc.pred)
			if !ok || got != tc.want {
				t.Fatalf("predictedAnswer(%q) = %q, %v; want %q", tc.pred, got, ok, tc.want)
			}
		})
	}
	c, _ := Lookup("math")
	if v := c.Check("7", `\boxed{5}, so the answer is \boxed{7}`); !v.Correct {
		t.Fatalf("final box after an anchor not graded: %+v", v)
	}
	if v := c.Check("5, 7", `\boxed{5}, so the answer is \boxed{7}`); v.Correct {
		t.Fatalf("the step box was graded as part of the answer: %+v", v)
	}
}

// TestAnchorsHoldAConclusionWord: isConnectorGap recognises an anchor phrase
// by its conclusion word, so every anchor must contain one.
func TestAnchorsHoldAConclusionWord(t *testing.T) {
	for _, a := range anchors {
		found := false
		for _, w := range strings.FieldsFunc(a, func(r rune) bool { return !isLetter(byte(r)) }) {
			if _, ok := conclusionWords[w]; ok {
				found = true
			}
		}
		if !found {
			t.Errorf("anchor %q holds no conclusion word; add one to conclusionWords", a)
		}
	}
}
