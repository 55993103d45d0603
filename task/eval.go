package task

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/verifier"
)

// LevelStats is the accuracy of one group of questions.
type LevelStats struct {
	Family    string  `json:"family"` // "" in Overall
	Level     int     `json:"level"`  // 0 in Overall, or unknown
	Questions int     `json:"questions"`
	Pass1     float64 `json:"pass1"` // mean over questions of k/K: pass@1 estimated from K samples
	PassK     float64 `json:"passk"` // share of questions with at least one correct sample
}

// QuestionResult is one question's outcome over K samples.
type QuestionResult struct {
	ID      string `json:"id"`
	Family  string `json:"family,omitempty"`
	Level   int    `json:"level,omitempty"`
	Correct int    `json:"k"` // correct samples out of K
}

// EvalReport is the result of Evaluate.
type EvalReport struct {
	Dataset     string         `json:"dataset"`
	K           int            `json:"k"`
	Temperature float32        `json:"temperature"`
	Overall     LevelStats     `json:"overall"`
	Levels      []LevelStats   `json:"levels"`  // per (family, level), sorted
	Buckets     []int          `json:"buckets"` // Buckets[k] = questions with k of K samples correct, k = 0..K
	Skipped     int            `json:"skipped"` // questions the tokenizer or context could not take (not in any figure)
	Reasons     map[string]int `json:"reasons"` // verifier verdict reasons over all samples
	MeanTokens  float64        `json:"mean_response_tokens"`
	Truncated   int            `json:"truncated"` // samples that hit the length cap without EOS
	// Correct counts correct samples; Sound those among them whose text is
	// exactly the problem's worked solution (problems without one never
	// count as sound). On the built-in task the answer is a digit, so a
	// correct answer after wrong steps (a lucky guess) is common: at the
	// default base about half of the correct samples are not sound.
	Correct   int              `json:"correct"`
	Sound     int              `json:"sound"`
	Questions []QuestionResult `json:"questions,omitempty"`
}

// ErrEval wraps evaluation failures.
var ErrEval = errors.New("task: evaluate")

// evalBatch is the number of sequences sampled per Sample call.
const evalBatch = 256

// Evaluate samples K responses per question at the given temperature,
// grades each with the verifier of the problem's kind (KindMath when empty),
// and reports pass@1 (mean k/K), pass@K and the histogram of per-question k,
// overall and per (family, level). Responses are capped at MaxNew tokens or
// what the model's context leaves. Questions that cannot be encoded or do
// not fit are skipped and counted. Deterministic given rng's state; m is
// used from this goroutine only.
func Evaluate(m *policy.Model, tok *policy.Tokenizer, ds Dataset, K int, temperature float32, rng *rand.Rand) (EvalReport, error) {
	sample := func(prompts [][]int32, maxNew int) ([]policy.Sampled, error) {
		return m.Sample(prompts, policy.SampleOptions{Temperature: temperature, MaxNew: maxNew, EOS: tok.EOS()}, rng)
	}
	return evaluate(sample, m.Config.Context, tok, ds, K, temperature)
}

// evaluate is Evaluate over any sampler (tests pass scripted ones).
func evaluate(sample func(prompts [][]int32, maxNew int) ([]policy.Sampled, error), context int, tok *policy.Tokenizer, ds Dataset, K int, temperature float32) (EvalReport, error) {
	if K < 1 {
		return EvalReport{}, fmt.Errorf("%w: K = %d < 1", ErrEval, K)
	}
	rep := EvalReport{Dataset: ds.Name, K: K, Temperature: temperature, Buckets: make([]int, K+1), Reasons: map[string]int{}}
	checkers := map[string]verifier.Checker{}
	type item struct {
		p      Problem
		prompt []int32
		maxNew int
	}
	var items []item
	for _, p := range ds.Problems {
		prompt, err := EncodePrompt(tok, p)
		if err != nil || len(prompt) >= context {
			rep.Skipped++
			continue
		}
		kind := p.Kind
		if kind == "" {
			kind = KindMath
		}
		if _, ok := checkers[kind]; !ok {
			c, err := verifier.Lookup(kind)
			if err != nil {
				return rep, fmt.Errorf("%w: problem %s: %w", ErrEval, p.ID, err)
			}
			checkers[kind] = c
		}
		p.Kind = kind
		items = append(items, item{p: p, prompt: prompt, maxNew: min(MaxNew, context-len(prompt))})
	}
	correct := make([]int, len(items))
	totalTokens, samples := 0, 0
	// Questions with the same response cap are sampled together, K copies
	// each, evalBatch sequences per call.
	perCall := max(1, evalBatch/K)
	for start := 0; start < len(items); {
		end := start
		for end < len(items) && end-start < perCall && items[end].maxNew == items[start].maxNew {
			end++
		}
		prompts := make([][]int32, 0, (end-start)*K)
		for i := start; i < end; i++ {
			for range K {
				prompts = append(prompts, items[i].prompt)
			}
		}
		out, err := sample(prompts, items[start].maxNew)
		if err == nil && len(out) != len(prompts) {
			err = fmt.Errorf("%d responses for %d prompts", len(out), len(prompts))
		}
		if err != nil {
			return rep, fmt.Errorf("%w: sample: %w", ErrEval, err)
		}
		for j, s := range out {
			it := &items[start+j/K]
			text := ResponseText(tok, s.Tokens)
			v := checkers[it.p.Kind].Check(it.p.Answer, text)
			rep.Reasons[v.Reason]++
			if v.Correct {
				correct[start+j/K]++
				rep.Correct++
				if it.p.Solution != "" && text == it.p.Solution {
					rep.Sound++
				}
			}
			if s.Finish == policy.FinishLength {
				rep.Truncated++
			}
			totalTokens += len(s.Tokens)
			samples++
		}
		start = end
	}
	if samples > 0 {
		rep.MeanTokens = float64(totalTokens) / float64(samples)
	}
	type key struct {
		family string
		level  int
	}
	groups := map[key]*LevelStats{}
	add := func(s *LevelStats, k int) {
		s.Questions++
		s.Pass1 += float64(k) / float64(K)
		if k > 0 {
			s.PassK++
		}
	}
	for i, it := range items {
		k := correct[i]
		rep.Buckets[k]++
		rep.Questions = append(rep.Questions, QuestionResult{ID: it.p.ID, Family: it.p.Family, Level: it.p.Level, Correct: k})
		add(&rep.Overall, k)
		g := groups[key{it.p.Family, it.p.Level}]
		if g == nil {
			g = &LevelStats{Family: it.p.Family, Level: it.p.Level}
			groups[key{it.p.Family, it.p.Level}] = g
		}
		add(g, k)
	}
	finish := func(s *LevelStats) {
		if s.Questions > 0 {
			s.Pass1 /= float64(s.Questions)
			s.PassK /= float64(s.Questions)
		}
	}
	finish(&rep.Overall)
	for _, g := range groups {
		finish(g)
		rep.Levels = append(rep.Levels, *g)
	}
	sort.Slice(rep.Levels, func(i, j int) bool {
		a, b := rep.Levels[i], rep.Levels[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		return a.Level < b.Level
	})
	return rep, nil
}

// WriteTable prints the report as aligned text: one row per (family, level)
// and the overall row, then the bucket histogram.
func (r EvalReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "family\tlevel\tquestions\tpass@1\tpass@%d\t\n", r.K)
	for _, l := range r.Levels {
		level := "-"
		if l.Level > 0 {
			level = fmt.Sprint(l.Level)
		}
		family := l.Family
		if family == "" {
			family = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t\n", family, level, l.Questions, l.Pass1, l.PassK)
	}
	fmt.Fprintf(tw, "all\t\t%d\t%.3f\t%.3f\t\n", r.Overall.Questions, r.Overall.Pass1, r.Overall.PassK)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s: K=%d, T=%g, %d questions", r.Dataset, r.K, r.Temperature, r.Overall.Questions)
	if r.Skipped > 0 {
		fmt.Fprintf(w, " (%d skipped: not encodable or too long)", r.Skipped)
	}
	fmt.Fprintf(w, ", mean response %.1f tokens, %d truncated samples", r.MeanTokens, r.Truncated)
	if r.Correct > 0 {
		fmt.Fprintf(w, ", %d of %d correct samples are exactly the worked solution", r.Sound, r.Correct)
	}
	fmt.Fprintln(w)
	_, err := io.WriteString(w, r.Histogram())
	return err
}

// Histogram renders Buckets as one bar per k = 0..K.
func (r EvalReport) Histogram() string {
	var b strings.Builder
	b.WriteString("questions by correct samples k of K:\n")
	most := 1
	for _, n := range r.Buckets {
		most = max(most, n)
	}
	const width = 40
	for k, n := range r.Buckets {
		fmt.Fprintf(&b, "  k=%-2d %5d %s\n", k, n, strings.Repeat("#", (n*width+most-1)/most))
	}
	return b.String()
}

// MiddleBucketsFilled reports whether every bucket k = 1..K-1 holds at least
// one question: the spread RL (and ExGRPO's bucketed replay) needs.
func (r EvalReport) MiddleBucketsFilled() bool {
	for k := 1; k < len(r.Buckets)-1; k++ {
		if r.Buckets[k] == 0 {
			return false
		}
	}
	return len(r.Buckets) > 2
}
