package task

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Problem is one verifiable question.
type Problem struct {
	ID       string // stable, unique within a dataset
	Prompt   string // the question as given to the policy (see EncodePrompt)
	Answer   string // reference answer, passed to the verifier as gold
	Kind     string // verifier kind (verifier.Lookup): KindArith for built-ins, "math" by default for imports
	Family   string // problem family (FamilyChain, ...), or the imported set's subject/type
	Level    int    // difficulty level; for built-ins the number of operands; 0 = unknown
	Solution string // worked solution ending in \boxed{Answer}, used by the warm-up; may be empty
	// System is the system prompt a chat template puts before Prompt (a
	// verl-style "prompt" gives it, or DatasetOptions.System); the built-in
	// tokenizer's format (EncodePrompt) has none and ignores it.
	System string
	// Source is the set the problem comes from (verl's data_source, e.g.
	// "aime24"); evaluation reports scores per source.
	Source string
}

// Dataset is a named list of problems.
type Dataset struct {
	Name     string
	Problems []Problem
}

// KindMath is the verifier kind given to imported problems that name none.
const KindMath = "math"

// ErrJSONL reports a malformed dataset line.
var ErrJSONL = errors.New("task: bad dataset line")

// jsonProblem is the line shape WriteJSONL writes. It matches the common
// public math sets (id, problem, answer, solution) plus our kind, family and
// level.
type jsonProblem struct {
	ID       string `json:"id"`
	Problem  string `json:"problem"`
	Answer   string `json:"answer"`
	Solution string `json:"solution,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Family   string `json:"family,omitempty"`
	Level    int    `json:"level,omitempty"`
}

// WriteJSONL writes one JSON object per problem, in order.
func (d Dataset) WriteJSONL(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, p := range d.Problems {
		if err := enc.Encode(jsonProblem{ID: p.ID, Problem: p.Prompt, Answer: p.Answer, Solution: p.Solution, Kind: p.Kind, Family: p.Family, Level: p.Level}); err != nil {
			return fmt.Errorf("task: write %s: %w", p.ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("task: write dataset %s: %w", d.Name, err)
	}
	return nil
}

// Field names accepted on read, first match wins. They cover our own shape
// and those of common public sets: MATH / MATH-500 (problem, solution,
// answer, level "Level 3", type, unique_id), GSM8K (question, answer with
// "#### 72"), AIME / AMC / OlympiadBench style (id, problem or question,
// answer or final_answer), and generic prompt/target pairs.
var (
	idFields       = []string{"id", "unique_id", "idx", "problem_id", "question_id", "qid", "index"}
	promptFields   = []string{"problem", "prompt", "question", "query", "input", "instruction"}
	answerFields   = []string{"answer", "final_answer", "gold", "ground_truth", "expected_answer", "target", "output", "label"}
	solutionFields = []string{"solution", "rationale", "reasoning"}
	familyFields   = []string{"family", "type", "subject", "category", "source"}
	levelFields    = []string{"level", "difficulty"}
)

// maxLineBytes caps one JSONL line (a long competition problem is a few KiB).
const maxLineBytes = 1 << 20

// ReadJSONL reads a dataset, one JSON object per line (blank lines and lines
// starting with '#' are skipped). A problem needs a prompt and either an
// answer or a solution containing \boxed{...} (the answer is then extracted
// from it). A GSM8K-style answer "reasoning #### 72" gives answer "72" and
// the reasoning as solution. Missing ids become "<line number>"; a missing
// kind becomes KindMath. Duplicate ids are an error.
func ReadJSONL(r io.Reader) (Dataset, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLineBytes)
	var ds Dataset
	seen := map[string]int{}
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] == '#' {
			continue
		}
		p, err := decodeProblem(b)
		if err != nil {
			return ds, fmt.Errorf("%w: line %d: %v", ErrJSONL, line, err)
		}
		if p.ID == "" {
			p.ID = strconv.Itoa(line)
		}
		if prev, dup := seen[p.ID]; dup {
			return ds, fmt.Errorf("%w: line %d: id %q already used on line %d", ErrJSONL, line, p.ID, prev)
		}
		seen[p.ID] = line
		ds.Problems = append(ds.Problems, p)
	}
	if err := sc.Err(); err != nil {
		return ds, fmt.Errorf("%w: after line %d: %v", ErrJSONL, line, err)
	}
	return ds, nil
}

func decodeProblem(b []byte) (Problem, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return Problem{}, err
	}
	if raw, ok := m["prompt"]; ok && len(bytes.TrimSpace(raw)) > 0 && bytes.TrimSpace(raw)[0] == '[' {
		return decodeVerlLine(b)
	}
	var p Problem
	var err error
	if p.ID, err = firstString(m, idFields); err != nil {
		return p, err
	}
	if p.Prompt, err = firstString(m, promptFields); err != nil {
		return p, err
	}
	if p.Answer, err = firstString(m, answerFields); err != nil {
		return p, err
	}
	if p.Solution, err = firstString(m, solutionFields); err != nil {
		return p, err
	}
	if p.Kind, err = firstString(m, []string{"kind", "verifier"}); err != nil {
		return p, err
	}
	if p.Family, err = firstString(m, familyFields); err != nil {
		return p, err
	}
	level, err := firstString(m, levelFields)
	if err != nil {
		return p, err
	}
	p.Level = parseLevel(level)
	if p.Prompt == "" {
		return p, fmt.Errorf("no prompt (one of the fields %s)", strings.Join(promptFields, ", "))
	}
	if i := strings.LastIndex(p.Answer, "####"); i >= 0 { // GSM8K
		if p.Solution == "" {
			p.Solution = strings.TrimSpace(p.Answer[:i])
		}
		p.Answer = strings.TrimSpace(p.Answer[i+4:])
	}
	if p.Answer == "" {
		p.Answer = LastBoxed(p.Solution)
	}
	if p.Answer == "" {
		return p, fmt.Errorf("no answer (one of the fields %s, or a solution with \\boxed{...})", strings.Join(answerFields, ", "))
	}
	if p.Kind == "" {
		p.Kind = KindMath
	}
	return p, nil
}

// firstString returns the first present field of names as a string. JSON
// numbers are given in their literal form (ids and answers are often
// numbers); null counts as absent; other types are an error.
func firstString(m map[string]json.RawMessage, names []string) (string, error) {
	for _, n := range names {
		raw, ok := m[n]
		if !ok {
			continue
		}
		raw = bytes.TrimSpace(raw)
		switch {
		case len(raw) == 0 || string(raw) == "null":
			continue
		case raw[0] == '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Errorf("field %q: %v", n, err)
			}
			return strings.TrimSpace(s), nil
		case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
			var num json.Number
			if err := json.Unmarshal(raw, &num); err != nil {
				return "", fmt.Errorf("field %q: %v", n, err)
			}
			return num.String(), nil
		default:
			return "", fmt.Errorf("field %q: want a string or a number, got %.20s", n, raw)
		}
	}
	return "", nil
}

var firstInt = regexp.MustCompile(`\d+`)

// parseLevel reads "3", "Level 3" or "level-3"; anything else is 0.
func parseLevel(s string) int {
	d := firstInt.FindString(s)
	if d == "" || len(d) > 6 {
		return 0
	}
	v, _ := strconv.Atoi(d)
	return v
}

// LastBoxed returns the content of the last \boxed{...} in s (balanced
// braces), or "" if there is none. The verifiers do their own extraction;
// this one serves imports whose answer is only inside a solution.
func LastBoxed(s string) string {
	i := strings.LastIndex(s, `\boxed{`)
	if i < 0 {
		return ""
	}
	start := i + len(`\boxed{`)
	depth := 1
	for j := start; j < len(s); j++ {
		switch s[j] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return strings.TrimSpace(s[start:j])
			}
		}
	}
	return ""
}
