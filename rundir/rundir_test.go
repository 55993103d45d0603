package rundir

import (
	"bytes"
	"encoding/csv"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDefaultPath(t *testing.T) {
	now := time.Date(2026, 11, 25, 22, 43, 12, 0, time.UTC)
	if got, want := DefaultPath("", now), filepath.Join("runs", "20261125-224312"); got != want {
		t.Fatalf("DefaultPath = %q, want %q", got, want)
	}
}

func TestMetricsRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	d, err := Create(dir, map[string]any{"steps": 3}, false)
	if err != nil {
		t.Fatal(err)
	}
	in := []Step{
		{Step: 0, Reward: 0.25, HeldOut: 0.2, Entropy: 1.5, Loss: 0.1, PoolSize: 3, Rollouts: 64},
		{Step: 1, Reward: 0.5, HeldOut: math.NaN(), Mixed: true, Replayed: 2, Rollouts: 128, Loss: math.NaN()},
		{Step: 2, Reward: 0.75, HeldOut: 0.4, Mixed: true, Retired: 1, Rollouts: 192},
	}
	for _, s := range in {
		if err := d.Append(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PlotCurve("test"); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSummary(Summary{Steps: 3, BasePass1: 0.2, FinalPass1: 0.4, Gain: 0.2}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("read %d steps, wrote %d", len(got), len(in))
	}
	for i := range in {
		if got[i].Step != in[i].Step || got[i].Reward != in[i].Reward || got[i].Mixed != in[i].Mixed {
			t.Errorf("step %d: got %+v want %+v", i, got[i], in[i])
		}
		if math.IsNaN(in[i].HeldOut) != math.IsNaN(got[i].HeldOut) || (!math.IsNaN(in[i].HeldOut) && got[i].HeldOut != in[i].HeldOut) {
			t.Errorf("step %d: held-out %v, want %v", i, got[i].HeldOut, in[i].HeldOut)
		}
	}
	f, err := os.ReadFile(filepath.Join(dir, MetricsCSV))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(f)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(in) || rows[0][0] != "step" || rows[2][3] != "" {
		t.Fatalf("csv rows %v: want a header, %d rows, empty held-out cell on step 1", rows, len(in))
	}
	png, err := os.ReadFile(filepath.Join(dir, CurvePNG))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("learning curve is not a PNG (err %v)", err)
	}
	s, err := ReadSummary(dir)
	if err != nil || s.Gain != 0.2 || s.Steps != 3 {
		t.Fatalf("summary %+v, err %v", s, err)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointsDir)); err != nil {
		t.Fatalf("no checkpoints folder: %v", err)
	}
}

func TestCreateRefusesExistingRun(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, struct{}{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Append(Step{Step: 0, HeldOut: math.NaN()}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := Create(dir, struct{}{}, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: err %v, want ErrExists", err)
	}
	d, err = Create(dir, struct{}{}, true)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	defer d.Close()
	if len(d.Steps()) != 1 {
		t.Fatalf("resume kept %d steps, want 1", len(d.Steps()))
	}
}
