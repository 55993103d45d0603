package endurance

import (
	"context"
	"github.com/exgrpo/exgrpo/internal/testbin"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEndurance is the short variant of the endurance run: 8 actors and 2
// verifiers as processes, a fault about every 20 s for 100 s (the server
// and the learner included), then the audit. Every promise must hold.
func TestEndurance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes for two minutes")
	}
	dir := t.TempDir()
	bin := testbin.Exgrpo(t, dir)
	cfg := DefaultConfig(filepath.Join(dir, "run"))
	cfg.Bin, cfg.Duration, cfg.FaultEvery = bin, 110*time.Second, 18*time.Second
	cfg.Train = []string{"--k", "4", "--batch", "8", "--minibatches", "1", "--max-new", "24", "--train-questions", "5000",
		"--heldout", "8", "--eval-samples", "1", "--pretrain-steps", "300", "--start", "0"}
	cfg.Log = testWriter{t}
	cfg.MaxGrowth = 0.30 // two minutes are mostly warm-up; the 30-minute report holds 10%
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		for _, n := range []string{"learner", "replay", "server"} {
			b, _ := os.ReadFile(filepath.Join(cfg.Dir, n+".log"))
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			t.Logf("--- %s.log\n%s", n, b)
		}
		t.Fatal(err)
	}
	t.Log(rep.Text())
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	kinds := map[string]bool{}
	for _, f := range rep.Faults {
		kinds[strings.TrimRight(strings.SplitN(f.Role, "-", 2)[0], "0123456789")] = true
	}
	if len(kinds) < 4 {
		t.Errorf("faults hit %v; want at least four kinds of role", kinds)
	}
	if rep.Steps < 10 {
		t.Errorf("%d steps trained, want at least 10", rep.Steps)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
