// Package rundir owns a training run's directory: the configuration it was
// started with (config.json), one metrics record per step (metrics.jsonl and
// metrics.csv, written together), the learning-curve plot (learning_curve.png),
// the checkpoints folder, and summary.json, the one file scripts read to learn
// how a run went (base and final held-out pass@1, steps, rollouts, wall time).
//
// A Dir is safe for use by one goroutine at a time; the one-process run gives
// it to the learner's step callback only.
package rundir

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// File names inside a run directory.
const (
	ConfigFile     = "config.json"
	MetricsJSONL   = "metrics.jsonl"
	MetricsCSV     = "metrics.csv"
	CurvePNG       = "learning_curve.png"
	SummaryFile    = "summary.json"
	CheckpointsDir = "checkpoints"
	JetStreamDir   = "jetstream"
	LogFile        = "run.log"
)

// ErrExists is returned by Create when the directory already holds a run.
var ErrExists = errors.New("rundir: directory already holds a run")

// Step is one training step's record. HeldOut is NaN on steps without a
// held-out evaluation (it is written as an empty CSV cell and JSON null).
type Step struct {
	Step         int64   `json:"step"`
	WallSeconds  float64 `json:"wall_s"`       // since the run started
	Reward       float64 `json:"reward"`       // batch Pass@1 of the step's rollouts
	HeldOut      float64 `json:"heldout"`      // held-out pass@1, NaN when not evaluated this step
	Entropy      float64 `json:"entropy"`      // mean token entropy of the step's rollouts
	Loss         float64 `json:"loss"`         // training loss
	GradNorm     float64 `json:"grad_norm"`    // global gradient norm before clipping
	Skipped      bool    `json:"skipped"`      // update skipped (non-finite or too large norm)
	Mixed        bool    `json:"mixed"`        // mixed (replay) mode was on (ALGORITHM.md E5)
	Replayed     int     `json:"replayed"`     // questions replayed from the pool this step
	PoolSize     int     `json:"pool"`         // non-retired pool questions after the step
	Retired      int     `json:"retired"`      // retired questions after the step
	Rollouts     int64   `json:"rollouts"`     // fresh rollouts generated so far (cumulative)
	StaleDropped int     `json:"stale"`        // rollouts dropped for staleness this step
	StepSeconds  float64 `json:"step_s"`       // wall time of the step
	GatherSecs   float64 `json:"gather_s"`     // of which waiting for rollouts
	TrainSecs    float64 `json:"train_s"`      // of which in the update
	LR           float64 `json:"lr,omitempty"` // learning rate used
}

var csvHeader = []string{"step", "wall_s", "reward", "heldout", "entropy", "loss", "grad_norm", "skipped", "mixed", "replayed", "pool", "retired", "rollouts", "stale", "step_s", "gather_s", "train_s", "lr"}

func (s Step) csvRow() []string {
	f := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	return []string{
		strconv.FormatInt(s.Step, 10), f(s.WallSeconds), f(s.Reward), f(s.HeldOut), f(s.Entropy),
		f(s.Loss), f(s.GradNorm), strconv.FormatBool(s.Skipped), strconv.FormatBool(s.Mixed),
		strconv.Itoa(s.Replayed), strconv.Itoa(s.PoolSize), strconv.Itoa(s.Retired),
		strconv.FormatInt(s.Rollouts, 10), strconv.Itoa(s.StaleDropped), f(s.StepSeconds), f(s.GatherSecs), f(s.TrainSecs), f(s.LR),
	}
}

func (s Step) MarshalJSON() ([]byte, error) {
	type plain Step // no MarshalJSON: avoids recursion
	j := struct {
		plain
		HeldOut *float64 `json:"heldout"`
	}{plain: plain(s)}
	if !math.IsNaN(s.HeldOut) {
		v := s.HeldOut
		j.HeldOut = &v
	}
	for _, p := range []*float64{&j.Loss, &j.GradNorm, &j.Entropy} {
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			*p = 0 // JSON has no NaN; the CSV keeps the empty cell
		}
	}
	return json.Marshal(j)
}

func (s *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	var j struct {
		plain
		HeldOut *float64 `json:"heldout"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Step(j.plain)
	s.HeldOut = math.NaN()
	if j.HeldOut != nil {
		s.HeldOut = *j.HeldOut
	}
	return nil
}

// Summary is summary.json: what a script needs to judge a finished run.
type Summary struct {
	RunID         string  `json:"run_id"`
	Algo          string  `json:"algo"`
	Steps         int64   `json:"steps"`
	Rollouts      int64   `json:"rollouts"`
	WallSeconds   float64 `json:"wall_seconds"`
	BasePass1     float64 `json:"base_heldout_pass1"`
	FinalPass1    float64 `json:"final_heldout_pass1"`
	Gain          float64 `json:"gain"` // FinalPass1 - BasePass1, absolute
	HeldOutN      int     `json:"heldout_questions"`
	FinalReward   float64 `json:"final_train_reward"` // mean batch Pass@1 over the last steps
	PoolSize      int     `json:"pool"`
	Retired       int     `json:"retired"`
	MixedFromStep int64   `json:"mixed_from_step"` // -1 when mixed mode never switched on
	Checkpoint    string  `json:"checkpoint"`      // final checkpoint, relative to the run directory
	Completed     bool    `json:"completed"`       // false when the run was interrupted
}

// Dir is an open run directory.
type Dir struct {
	Path string
	// BaseHeldOut is the base model's held-out pass@1, drawn at step 0 of
	// the learning curve; NaN (the default) leaves it out.
	BaseHeldOut float64
	jsonl       *os.File
	csvFile     *os.File
	csv         *csv.Writer
	steps       []Step
}

// DefaultPath is a fresh timestamped directory under base (./runs by
// default): base/20261125-224312.
func DefaultPath(base string, now time.Time) string {
	if base == "" {
		base = "runs"
	}
	return filepath.Join(base, now.UTC().Format("20060102-150405"))
}

// Create makes (or reuses, when it exists without a config) the directory and
// writes config (any JSON-encodable value) to config.json. It refuses a
// directory that already holds a run's config unless resume is true, in which
// case the existing metrics are appended to.
func Create(path string, config any, resume bool) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(path, CheckpointsDir), 0o755); err != nil {
		return nil, fmt.Errorf("rundir: %w", err)
	}
	cfgPath := filepath.Join(path, ConfigFile)
	if _, err := os.Stat(cfgPath); err == nil && !resume {
		return nil, fmt.Errorf("%w: %s (choose another --run-dir)", ErrExists, path)
	}
	b, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rundir: encode config: %w", err)
	}
	if err := os.WriteFile(cfgPath, append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("rundir: %w", err)
	}
	d := &Dir{Path: path, BaseHeldOut: math.NaN()}
	if resume {
		d.steps, _ = ReadMetrics(path) // a missing or torn file starts fresh
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !resume {
		flags |= os.O_TRUNC
	}
	if d.jsonl, err = os.OpenFile(filepath.Join(path, MetricsJSONL), flags, 0o644); err != nil {
		return nil, fmt.Errorf("rundir: %w", err)
	}
	if d.csvFile, err = os.OpenFile(filepath.Join(path, MetricsCSV), flags, 0o644); err != nil {
		d.jsonl.Close()
		return nil, fmt.Errorf("rundir: %w", err)
	}
	d.csv = csv.NewWriter(d.csvFile)
	if st, _ := d.csvFile.Stat(); st == nil || st.Size() == 0 {
		if err := d.csv.Write(csvHeader); err != nil {
			d.Close()
			return nil, fmt.Errorf("rundir: %w", err)
		}
		d.csv.Flush()
	}
	return d, nil
}

// CheckpointDir is where checkpoints go.
func (d *Dir) CheckpointDir() string { return filepath.Join(d.Path, CheckpointsDir) }

// JetStreamDir is where the embedded server stores its streams.
func (d *Dir) JetStreamDir() string { return filepath.Join(d.Path, JetStreamDir) }

// Steps returns the records written so far (the caller must not modify them).
func (d *Dir) Steps() []Step { return d.steps }

// Append writes one step's record to metrics.jsonl and metrics.csv and
// flushes both, so that a crash loses at most the step being written.
func (d *Dir) Append(s Step) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("rundir: encode step %d: %w", s.Step, err)
	}
	if _, err := d.jsonl.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("rundir: %w", err)
	}
	if err := d.csv.Write(s.csvRow()); err != nil {
		return fmt.Errorf("rundir: %w", err)
	}
	d.csv.Flush()
	if err := d.csv.Error(); err != nil {
		return fmt.Errorf("rundir: %w", err)
	}
	d.steps = append(d.steps, s)
	return nil
}

// WriteSummary writes summary.json atomically (temp file then rename).
func (d *Dir) WriteSummary(s Summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("rundir: encode summary: %w", err)
	}
	return writeAtomic(filepath.Join(d.Path, SummaryFile), append(b, '\n'))
}

// Close flushes and closes the metrics files.
func (d *Dir) Close() error {
	var errs []error
	if d.csv != nil {
		d.csv.Flush()
		errs = append(errs, d.csv.Error())
	}
	if d.csvFile != nil {
		errs = append(errs, d.csvFile.Close())
	}
	if d.jsonl != nil {
		errs = append(errs, d.jsonl.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rundir: close: %w", err)
	}
	return nil
}

// ReadMetrics reads a run directory's metrics.jsonl.
func ReadMetrics(path string) ([]Step, error) {
	b, err := os.ReadFile(filepath.Join(path, MetricsJSONL))
	if err != nil {
		return nil, fmt.Errorf("rundir: %w", err)
	}
	var out []Step
	for i, line := range splitLines(b) {
		var s Step
		if err := json.Unmarshal(line, &s); err != nil {
			return out, fmt.Errorf("rundir: metrics line %d: %w", i+1, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// ReadSummary reads a run directory's summary.json.
func ReadSummary(path string) (Summary, error) {
	var s Summary
	b, err := os.ReadFile(filepath.Join(path, SummaryFile))
	if err != nil {
		return s, fmt.Errorf("rundir: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("rundir: summary: %w", err)
	}
	return s, nil
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("rundir: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rundir: %w", err)
	}
	return nil
}
