package retrain

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComparePairsRetrainsWithTheirRuns(t *testing.T) {
	root := t.TempDir()
	var dirs []string
	for i, pair := range [][2]float64{{0.50, 0.52}, {0.40, 0.415}, {0.60, 0.625}} {
		d := filepath.Join(root, string(rune('a'+i)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(Summary{RunPass1: pair[0], FinalPass1: pair[1], Changed: []string{"beta"},
			StepFigures: []Step{{ReplayedCoefShare: 0.02}, {ReplayedCoefShare: 0}}})
		if err := os.WriteFile(filepath.Join(d, "summary.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	sums, tt, err := Compare(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 3 || math.Abs(tt.Diff-0.02) > 1e-12 || tt.DF != 2 || !(tt.P < 0.05) {
		t.Fatalf("paired test %+v, want diff 0.02 over 3 runs, p < 0.05", tt)
	}
	var out bytes.Buffer
	WriteComparison(&out, dirs, sums, tt)
	if !strings.Contains(out.String(), "| a | [beta] | 50.0 | 52.0 | +2.0 | 2.00% |") || !strings.Contains(out.String(), "mean difference +2.00 points over 3 runs") {
		t.Errorf("comparison table:\n%s", out.String())
	}
	// A retrain with its own evaluation has nothing to pair with.
	b, _ := json.Marshal(Summary{FinalPass1: 0.5})
	os.WriteFile(filepath.Join(dirs[0], "summary.json"), b, 0o644)
	if _, _, err := Compare(dirs); !errors.Is(err, ErrConfig) {
		t.Errorf("unpaired summary: err %v, want ErrConfig", err)
	}
	if _, _, err := Compare([]string{filepath.Join(root, "missing")}); err == nil {
		t.Error("missing summary accepted")
	}
}
