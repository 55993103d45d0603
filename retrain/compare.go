package retrain

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/exgrpo/exgrpo/experiment"
)

// ReadSummary reads the summary.json Run wrote into dir.
func ReadSummary(dir string) (Summary, error) {
	var s Summary
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return s, fmt.Errorf("retrain: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("retrain: %s: %w", dir, err)
	}
	return s, nil
}

// Compare is the paired comparison of retrained policies with the runs they
// were retrained from: one retrain per run (seed), the same recorded data,
// so the difference of final held-out pass@1 is the objective change's
// effect without sampling noise in the data (the evaluation's own noise
// remains). It needs the runs' own evaluation (Summary.RunPass1).
func Compare(dirs []string) ([]Summary, experiment.Test, error) {
	var sums []Summary
	var got, run []float64
	for _, d := range dirs {
		s, err := ReadSummary(d)
		if err != nil {
			return nil, experiment.Test{}, err
		}
		if s.RunPass1 <= 0 {
			return nil, experiment.Test{}, fmt.Errorf("%w: %s has no run pass@1 to pair with (retrained with another --heldout or --eval-samples?)", ErrConfig, d)
		}
		sums = append(sums, s)
		got, run = append(got, s.FinalPass1), append(run, s.RunPass1)
	}
	t, err := experiment.Paired(got, run)
	return sums, t, err
}

// WriteComparison prints Compare's table: per run the run's and the
// retrained final pass@1 in points, then the mean difference with the
// paired t-test.
func WriteComparison(w io.Writer, dirs []string, sums []Summary, t experiment.Test) {
	fmt.Fprintf(w, "| retrain | changed | run pass@1 | retrained pass@1 | diff | replayed share of gradient |\n|---|---|---|---|---|---|\n")
	for i, s := range sums {
		var grad, n float64
		for _, st := range s.StepFigures {
			if st.ReplayedCoefShare > 0 {
				grad += st.ReplayedCoefShare
				n++
			}
		}
		g := "-"
		if n > 0 {
			g = fmt.Sprintf("%.2f%%", 100*grad/n)
		}
		fmt.Fprintf(w, "| %s | %v | %.1f | %.1f | %+.1f | %s |\n", filepath.Base(dirs[i]), s.Changed, 100*s.RunPass1, 100*s.FinalPass1, 100*(s.FinalPass1-s.RunPass1), g)
	}
	p := "-"
	if !math.IsNaN(t.P) {
		p = fmt.Sprintf("%.3f", t.P)
	}
	fmt.Fprintf(w, "\nmean difference %+.2f points over %d runs, paired t = %.2f, df %.0f, p = %s\n", 100*t.Diff, t.NA, t.T, t.DF, p)
}
