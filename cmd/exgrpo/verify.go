package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"

	"github.com/exgrpo/exgrpo/verifier"
)

func init() {
	register("verify", "grade answers: JSONL of {gold, prediction} (--cases FILE or stdin), or --gold X --prediction Y", runVerify)
}

// maxVerifyLine caps one JSONL line (a response plus its gold answer).
const maxVerifyLine = 8 << 20

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	cases := fs.String("cases", "", "JSONL file, one {\"gold\":..., \"prediction\":...} per line (default: stdin)")
	kind := fs.String("kind", "math", "checker: math (general answers) or arith (built-in arithmetic tasks)")
	gate := fs.Bool("think-gate", false, "grade only the text after </think> (responses without it fail with format_gate)")
	gold := fs.String("gold", "", "one-pair form: the gold answer")
	pred := fs.String("prediction", "", "one-pair form: the response to grade")
	extracted := fs.Bool("extracted", false, "also output the extracted answer")
	workers := fs.Int("workers", runtime.NumCPU(), "lines graded in parallel (output stays in input order)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg := verifier.DefaultConfig()
	cfg.ThinkGate = *gate
	var c verifier.Checker
	var err error
	switch *kind {
	case "math":
		c, err = verifier.NewMath(cfg)
	case "arith":
		c, err = verifier.NewArith(cfg)
	default:
		_, err = verifier.Lookup(*kind)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	onePair := *gold != "" || *pred != ""
	if onePair {
		if *cases != "" {
			return fmt.Errorf("%w: --cases and --gold/--prediction are exclusive", errUsage)
		}
		v := c.Check(*gold, *pred)
		out := map[string]any{"gold": *gold, "prediction": *pred, "correct": v.Correct, "reason": v.Reason, "extracted": v.Extracted}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return nil
	}
	in := io.Reader(os.Stdin)
	if *cases != "" {
		f, err := os.Open(*cases)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		defer f.Close()
		in = f
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	sum, err := verifyStream(ctx, c, in, w, *extracted, *workers)
	if ferr := w.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("verify: write: %w", ferr)
	}
	if err != nil {
		return err
	}
	sum.print(os.Stderr)
	return nil
}

// verifySummary tallies agreement with "expected" labels, when present.
type verifySummary struct {
	lines, labelled, agree int
	byCat                  map[string][2]int // agree, total
	reasons                map[string]int
}

func (s *verifySummary) print(w io.Writer) {
	if s.labelled == 0 {
		return
	}
	fmt.Fprintf(w, "agreement with expected: %d/%d (%.1f%%) over %d lines\n", s.agree, s.labelled,
		100*float64(s.agree)/float64(s.labelled), s.lines)
	cats := make([]string, 0, len(s.byCat))
	for k := range s.byCat {
		cats = append(cats, k)
	}
	sort.Strings(cats)
	for _, k := range cats {
		t := s.byCat[k]
		fmt.Fprintf(w, "  %-16s %4d/%4d\n", k, t[0], t[1])
	}
	rs := make([]string, 0, len(s.reasons))
	for k := range s.reasons {
		rs = append(rs, k)
	}
	sort.Strings(rs)
	for _, k := range rs {
		fmt.Fprintf(w, "  reason %-12s %d\n", k, s.reasons[k])
	}
}

// verifyBatch is how many lines are graded together (in parallel) before
// their results are written in input order.
const verifyBatch = 512

type verifyItem struct {
	line       []byte
	rec        map[string]json.RawMessage
	gold, pred string
	v          verifier.Verdict
}

// verifyStream grades each JSONL line of in and writes the line back with
// "correct" and "reason" added, in input order, grading up to workers lines
// at a time in parallel.
func verifyStream(ctx context.Context, c verifier.Checker, in io.Reader, out io.Writer, withExtracted bool, workers int) (*verifySummary, error) {
	sum := &verifySummary{byCat: map[string][2]int{}, reasons: map[string]int{}}
	if workers < 1 {
		workers = 1
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxVerifyLine)
	batch := make([]verifyItem, 0, verifyBatch)
	flush := func() error {
		var wg sync.WaitGroup
		for w := 0; w < workers && w < len(batch); w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < len(batch); i += workers {
					batch[i].v = c.Check(batch[i].gold, batch[i].pred)
				}
			}(w)
		}
		wg.Wait()
		for _, it := range batch {
			sum.add(it)
			if err := writeVerified(out, it.line, it.rec, it.v, withExtracted); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		sum.lines++
		it := verifyItem{line: append([]byte(nil), line...)}
		if err := json.Unmarshal(line, &it.rec); err != nil {
			return sum, fmt.Errorf("verify: line %d: %w", sum.lines, err)
		}
		if err := decodeString(it.rec, "gold", &it.gold); err != nil {
			return sum, fmt.Errorf("verify: line %d: %w", sum.lines, err)
		}
		if err := decodeString(it.rec, "prediction", &it.pred); err != nil {
			return sum, fmt.Errorf("verify: line %d: %w", sum.lines, err)
		}
		batch = append(batch, it)
		if len(batch) == verifyBatch {
			if err := flush(); err != nil {
				return sum, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return sum, fmt.Errorf("verify: read line %d: %w", sum.lines+1, err)
	}
	return sum, flush()
}

// add counts one graded line.
func (s *verifySummary) add(it verifyItem) {
	s.reasons[it.v.Reason]++
	raw, ok := it.rec["expected"]
	if !ok {
		return
	}
	var exp bool
	if json.Unmarshal(raw, &exp) != nil {
		return
	}
	var cat string
	_ = decodeString(it.rec, "category", &cat)
	t := s.byCat[cat]
	t[1]++
	s.labelled++
	if exp == it.v.Correct {
		s.agree++
		t[0]++
	}
	s.byCat[cat] = t
}

var errMissingField = errors.New("missing field")

func decodeString(rec map[string]json.RawMessage, key string, into *string) error {
	raw, ok := rec[key]
	if !ok {
		return fmt.Errorf("%w %q", errMissingField, key)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		// a number gold answer ("gold": 42) is read as its text
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			*into = n.String()
			return nil
		}
		return fmt.Errorf("field %q: %w", key, err)
	}
	return nil
}

// writeVerified echoes the input line with the verdict fields appended,
// keeping the original fields and their order byte for byte.
func writeVerified(out io.Writer, line []byte, rec map[string]json.RawMessage, v verifier.Verdict, withExtracted bool) error {
	_, hasC := rec["correct"]
	_, hasR := rec["reason"]
	var b []byte
	if hasC || hasR {
		rec["correct"], _ = json.Marshal(v.Correct)
		rec["reason"], _ = json.Marshal(v.Reason)
		if withExtracted {
			rec["extracted"], _ = json.Marshal(v.Extracted)
		}
		b, _ = json.Marshal(rec)
	} else {
		trimmed := bytesTrimRightSpace(line)
		body := trimmed[:len(trimmed)-1] // drop the closing brace
		b = append(b, body...)
		if len(rec) > 0 {
			b = append(b, ',')
		}
		cb, _ := json.Marshal(v.Correct)
		rb, _ := json.Marshal(v.Reason)
		b = append(b, `"correct":`...)
		b = append(b, cb...)
		b = append(b, `,"reason":`...)
		b = append(b, rb...)
		if withExtracted {
			eb, _ := json.Marshal(v.Extracted)
			b = append(b, `,"extracted":`...)
			b = append(b, eb...)
		}
		b = append(b, '}')
	}
	b = append(b, '\n')
	_, err := out.Write(b)
	return err
}

func bytesTrimRightSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
