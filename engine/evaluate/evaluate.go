// Package evaluate scores a policy served by an inference engine the way
// the paper does (GPU.md "Data and evaluation"): k samples per question at
// a given temperature, top_p and response cap, graded by the verifier of
// each problem's kind, reported as avg@k per data_source (the mean over
// questions of the fraction of correct samples) and the mean over sources.
// The paper: temperature 0.6, top_p 1, up to 8192 new tokens; avg@32 on
// AIME24, AIME25 and AMC, one sample on MATH-500, Minerva and
// OlympiadBench.
package evaluate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"

	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/verifier"
)

// ErrEval wraps evaluation failures.
var ErrEval = errors.New("evaluate")

// Config of one evaluation.
type Config struct {
	K           int            // samples per question; default 1
	KPerSource  map[string]int // overrides K for these data sources (the paper: 32 for aime24, aime25, amc)
	Temperature float32        // default 0.6
	TopP        float32        // default 1
	MaxTokens   int            // response cap; default 8192, clipped to what the context leaves
	Seed        int64          // request seed of question i is Seed + i
	StopIDs     []int32        // every EOS id of the model
	Parallel    int            // questions in flight; default 16
}

// DefaultConfig is the paper's setting with one sample per question.
func DefaultConfig() Config {
	return Config{K: 1, Temperature: 0.6, TopP: 1, MaxTokens: 8192, Seed: 1, StopIDs: []int32{2}, Parallel: 16}
}

// PaperKPerSource is the paper's avg@32 sources.
func PaperKPerSource() map[string]int {
	return map[string]int{"aime24": 32, "aime25": 32, "amc": 32, "amc23": 32}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	switch {
	case c.K < 1 || c.Parallel < 1 || c.MaxTokens < 1:
		return fmt.Errorf("%w: K, Parallel and MaxTokens must be >= 1", ErrEval)
	case !(c.Temperature > 0) || !(c.TopP > 0 && c.TopP <= 1):
		return fmt.Errorf("%w: temperature %v must be > 0 and top_p %v in (0, 1]", ErrEval, c.Temperature, c.TopP)
	case len(c.StopIDs) == 0:
		return fmt.Errorf("%w: no stop token ids", ErrEval)
	}
	for s, k := range c.KPerSource {
		if k < 1 {
			return fmt.Errorf("%w: k %d for source %q", ErrEval, k, s)
		}
	}
	return nil
}

// SourceScore is one data source's result.
type SourceScore struct {
	Source    string  `json:"data_source"`
	Questions int     `json:"questions"`
	K         int     `json:"k"`
	AvgAtK    float64 `json:"avg_at_k"`  // mean over questions of correct/k
	PassAtK   float64 `json:"pass_at_k"` // share of questions with a correct sample
	Truncated int     `json:"truncated"` // samples that hit the response cap
}

// Report is an evaluation's result.
type Report struct {
	Sources     []SourceScore  `json:"sources"` // by name
	Mean        float64        `json:"mean"`    // mean of the sources' avg@k
	Temperature float32        `json:"temperature"`
	TopP        float32        `json:"top_p"`
	MaxTokens   int            `json:"max_tokens"`
	Skipped     int            `json:"skipped"` // questions that could not be tokenized or fit no response
	Reasons     map[string]int `json:"reasons"` // verdict reasons over all samples
}

// Tokenizer turns a problem into prompt token ids.
type Tokenizer func(ctx context.Context, p task.Problem) ([]int32, error)

// EngineTokenizer tokenizes through the engine's chat template (vLLM
// /tokenize), system prompt first.
func EngineTokenizer(c engine.Client) Tokenizer {
	return func(ctx context.Context, p task.Problem) ([]int32, error) {
		var msgs []engine.Message
		if p.System != "" {
			msgs = append(msgs, engine.Message{Role: "system", Content: p.System})
		}
		return c.Tokenize(ctx, append(msgs, engine.Message{Role: "user", Content: p.Prompt}))
	}
}

// Run evaluates problems through c (started). progress, when not nil, is
// called with questions done of total after each question.
func Run(ctx context.Context, c engine.Client, info engine.Info, tokenize Tokenizer, problems []task.Problem, cfg Config,
	progress func(done, total int)) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	type result struct {
		source            string
		k, correct, trunc int
		skipped           bool
		reasons           map[string]int
		err               error
	}
	checkers := map[string]verifier.Checker{}
	for _, p := range problems {
		kind := p.Kind
		if kind == "" {
			kind = task.KindMath
		}
		if _, ok := checkers[kind]; !ok {
			ch, err := verifier.Lookup(kind)
			if err != nil {
				return Report{}, fmt.Errorf("%w: problem %s: %w", ErrEval, p.ID, err)
			}
			checkers[kind] = ch
		}
	}
	results := make([]result, len(problems))
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Parallel {
		wg.Go(func() {
			for i := range jobs {
				p := problems[i]
				r := result{source: p.Source, reasons: map[string]int{}}
				r.k = cfg.K
				if k, ok := cfg.KPerSource[p.Source]; ok {
					r.k = k
				}
				prompt, err := tokenize(ctx, p)
				room := info.MaxModelLen - len(prompt)
				switch {
				case err != nil && ctx.Err() == nil && (errors.Is(err, engine.ErrRejected) || errors.Is(err, task.ErrEncode)):
					r.skipped = true
				case err != nil:
					r.err = err
				case room < 1:
					r.skipped = true
				default:
					kind := p.Kind
					if kind == "" {
						kind = task.KindMath
					}
					cs, gerr := c.Generate(ctx, engine.Request{Prompt: prompt, N: r.k, Temperature: cfg.Temperature, TopP: cfg.TopP,
						MaxTokens: min(cfg.MaxTokens, room), Seed: cfg.Seed + int64(i), StopTokenIDs: cfg.StopIDs})
					if gerr != nil {
						r.err = fmt.Errorf("%w: question %s: %w", ErrEval, p.ID, gerr)
						break
					}
					for _, comp := range cs {
						v := checkers[kind].Check(p.Answer, comp.Text)
						r.reasons[v.Reason]++
						if v.Correct {
							r.correct++
						}
						if comp.Finish == engine.FinishLength {
							r.trunc++
						}
					}
				}
				results[i] = r
				if r.err != nil {
					cancel()
				}
				mu.Lock()
				done++
				if progress != nil {
					progress(done, len(problems))
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range problems {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	rep := Report{Temperature: cfg.Temperature, TopP: cfg.TopP, MaxTokens: cfg.MaxTokens, Reasons: map[string]int{}}
	by := map[string]*SourceScore{}
	for _, r := range results {
		if r.err != nil {
			return rep, r.err
		}
	}
	if err := ctx.Err(); err != nil && len(problems) > 0 && done < len(problems) {
		return rep, err
	}
	for _, r := range results {
		if r.skipped {
			rep.Skipped++
			continue
		}
		s := by[r.source]
		if s == nil {
			s = &SourceScore{Source: r.source, K: r.k}
			by[r.source] = s
		}
		s.Questions++
		s.AvgAtK += float64(r.correct) / float64(r.k)
		if r.correct > 0 {
			s.PassAtK++
		}
		s.Truncated += r.trunc
		for k, n := range r.reasons {
			rep.Reasons[k] += n
		}
	}
	for _, s := range by {
		s.AvgAtK /= float64(s.Questions)
		s.PassAtK /= float64(s.Questions)
		rep.Sources = append(rep.Sources, *s)
		rep.Mean += s.AvgAtK
	}
	sort.Slice(rep.Sources, func(i, j int) bool { return rep.Sources[i].Source < rep.Sources[j].Source })
	if len(rep.Sources) > 0 {
		rep.Mean /= float64(len(rep.Sources))
	}
	return rep, nil
}

// WriteTable prints one row per source and the mean.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "data_source\tquestions\tk\tavg@k\tpass@k\ttruncated\t\n")
	for _, s := range r.Sources {
		name := s.Source
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%d\t\n", name, s.Questions, s.K, s.AvgAtK, s.PassAtK, s.Truncated)
	}
	fmt.Fprintf(tw, "mean\t\t\t%.3f\t\t\t\n", r.Mean)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "T=%g, top_p=%g, max tokens %d; %d questions skipped (not tokenizable or no room)\n", r.Temperature, r.TopP, r.MaxTokens, r.Skipped)
	return err
}
