// Package retrain re-runs the learner over a finished run's recorded
// experience, with no actors, no verifier and no replay service: the same
// data under other objective settings, so that an objective change (beta,
// shaping off, c_ent, the learning rate, ...) is measured without sampling
// noise.
//
// The record is the run's ledger (docs/ALGORITHM.md "Learner restarts"):
// the step reports of its final lineage on CONTROL, folded through
// replay.Lineage, and the trajectories they name (stored once on ROLLOUTS,
// joined with their verdicts on SCORED).
// Each report lists, per group, the trajectories the learner trained on in
// order (the replayed one first), their rewards and whether the group was
// replayed; Train rebuilds exactly those groups (learner.NewGroup, so the
// advantages of E9 follow from the recorded rewards) and trains one
// learner.Step per report in the report's mode (E5).
//
// The recorded replay choices are kept. In the run, the replayed question
// (E6) and its trajectory (E7, lowest entropy under the policy of that
// step) were chosen by the policy being trained; under another objective the
// re-trained policy diverges and would have chosen otherwise, and its own
// fresh rollouts would differ too. Retraining keeps everything the run
// recorded, the replayed trajectory, its reward (E9's re-verification at the
// time), the fresh rollouts and their rewards, and changes only the update:
// the point is the same data. E7 is therefore not run again, and the
// delayed start (E5) follows the recorded mode, not the re-trained
// policy's Pass@1. Settings that change the data (K, B, rho, the selection
// rules, the retirement rule) cannot be retrained and are refused.
//
// With the run's own settings on the built-in model and the built-in Go
// trainer, Train reproduces the run's final weights bit for bit
// (TestRetrainReproducesRun). Across learner restarts it should too, since a
// resumed learner starts from a checkpoint holding exactly the weights and
// AdamW moments the ledger's earlier steps produced (not yet tested). With
// learner.Config.TrainerBehaviour it does not after a restart: a resumed
// learner lost the trainer log-probs it kept in memory, Train keeps them.
package retrain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/inspect"
	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/local"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// ErrRecord marks a record that cannot be retrained as it stands (a gap in
// the ledger, a trajectory missing from ROLLOUTS or SCORED, a group of the
// wrong size).
var ErrRecord = errors.New("retrain: unusable record")

// ErrConfig marks objective settings that would change the data.
var ErrConfig = errors.New("retrain: invalid config")

// Record is a run's recorded experience: the step reports of its final
// lineage in step order, and every scored trajectory by id (and by ROLLOUTS
// sequence, which a report gives for each fresh trajectory; BySeq may be
// nil).
type Record struct {
	Reports []*wire.StepReport
	Scored  map[string]*wire.Scored
	BySeq   map[uint64]*wire.Scored
}

// FromLedger takes the reports in the run's ledger (inspect.Ledger.InLedger,
// which folds CONTROL through replay.Lineage) and the scored trajectories.
func FromLedger(l *inspect.Ledger) *Record {
	r := &Record{Scored: l.Scored, BySeq: l.BySeq}
	for i := range l.Reports {
		if ok, _ := l.InLedger(i); ok {
			r.Reports = append(r.Reports, &l.Reports[i].Report)
		}
	}
	sort.SliceStable(r.Reports, func(i, j int) bool { return r.Reports[i].Step < r.Reports[j].Step })
	return r
}

// Load reads the record of a run from its directory's JetStream store
// (dir, run "" = config.json's) or, when cc is not nil, from a live server
// (run required; read-only credentials suffice). Both read with ordered
// consumers, as `exgrpo inspect` does: nothing is acknowledged or written.
func Load(ctx context.Context, dir string, cc *bus.ConnConfig, run string) (*Record, error) {
	var src *inspect.Source
	var err error
	if cc != nil {
		src, err = inspect.Dial(ctx, *cc, run, zap.NewNop())
	} else {
		src, err = inspect.OpenRunDir(ctx, dir, run, zap.NewNop())
	}
	if err != nil {
		return nil, fmt.Errorf("retrain: %w", err)
	}
	defer src.Close()
	l, err := src.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("retrain: %w", err)
	}
	return FromLedger(l), nil
}

// RunConfig reads a run directory's config.json over local.DefaultConfig
// (fields a run wrote before they existed keep their defaults).
func RunConfig(path string) (local.Config, error) {
	c := local.DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("retrain: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("retrain: %s: %w", path, err)
	}
	return c, nil
}

// LearnerConfig is the learner configuration the run trained with, as the
// learner service builds it (the actors' temperature included).
func LearnerConfig(rc local.Config) learner.Config {
	c := rc.Learner.Learner
	c.Temperature = float64(rc.Learner.Temperature)
	return c
}

// CheckSameData refuses objective settings under which the record is not
// the data the learner would train on: a different group size, questions
// per step, replayed fraction, mode rule or selection would have changed
// which rollouts exist. Everything of E10-E14 may change.
func CheckSameData(run, c learner.Config) error {
	switch {
	case c.K != run.K:
		return fmt.Errorf("%w: K %d, the run's groups have %d rollouts", ErrConfig, c.K, run.K)
	case c.B != run.B || c.Rho != run.Rho || c.Start != run.Start || c.OnPolicyOnly != run.OnPolicyOnly:
		return fmt.Errorf("%w: B, rho, the delayed start and on-policy decide which questions a step has; retraining keeps the run's", ErrConfig)
	case c.Selection != run.Selection || c.Candidates != run.Candidates || c.RetireAfter != run.RetireAfter || c.Staleness != run.Staleness:
		return fmt.Errorf("%w: trajectory selection, candidates, retirement and staleness decide the data; retraining keeps the run's choices", ErrConfig)
	case c.Temperature != run.Temperature:
		return fmt.Errorf("%w: temperature %v: the recorded log-probs are at the actors' %v", ErrConfig, c.Temperature, run.Temperature)
	}
	return c.Validate()
}

// Step is one retrained step's figures.
type Step struct {
	Step              int64   `json:"step"`
	Mixed             bool    `json:"mixed"`
	Pass1             float64 `json:"pass1"` // recorded batch Pass@1 (the data's, not the retrained policy's)
	Loss              float64 `json:"loss"`
	Entropy           float64 `json:"entropy"`
	GradNorm          float64 `json:"grad_norm"`
	Skipped           int     `json:"skipped"`
	Replayed          int     `json:"replayed"`
	ReplayedCoefShare float64 `json:"replayed_grad_share"`
}

// Result is a finished retraining.
type Result struct {
	Model *policy.Model
	Opt   *policy.AdamW
	Steps []Step
}

// Train trains a clone of base with cfg over every report of rec, in
// order. The ledger must hold steps 0, 1, ..., n-1 with no gap.
func Train(ctx context.Context, cfg learner.Config, base *policy.Model, rec *Record) (Result, error) {
	var res Result
	if base == nil {
		return res, fmt.Errorf("%w: no base model", ErrConfig)
	}
	if len(rec.Reports) == 0 {
		return res, fmt.Errorf("%w: no step reports", ErrRecord)
	}
	l, err := learner.New(cfg, base.Clone(), nil)
	if err != nil {
		return res, fmt.Errorf("retrain: %w", err)
	}
	for i, rep := range rec.Reports {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if rep.Step != int64(i) {
			return res, fmt.Errorf("%w: the ledger's report %d is of step %d (a gap: steps 0..n-1 are needed)", ErrRecord, i, rep.Step)
		}
		groups, err := Groups(rec, rep, cfg.K)
		if err != nil {
			return res, err
		}
		sum, err := l.StepContext(ctx, learner.StepInput{Step: rep.Step, PolicyVersion: rep.PolicyVersion, Mixed: rep.Mixed, Groups: groups,
			StaleDropped: rep.StaleDropped})
		if err != nil {
			return res, fmt.Errorf("retrain: step %d: %w", rep.Step, err)
		}
		st := Step{Step: rep.Step, Mixed: sum.Mixed, Pass1: sum.Pass1, Loss: sum.Loss, Entropy: sum.Entropy, GradNorm: sum.GradNorm,
			Skipped: sum.Skipped, ReplayedCoefShare: sum.ReplayedCoefShare}
		for _, g := range groups {
			if g.Replayed() {
				st.Replayed++
			}
		}
		res.Steps = append(res.Steps, st)
	}
	res.Model, res.Opt = l.Model(), l.Optimizer()
	return res, nil
}

// Groups rebuilds the groups one report trained on, in its order: each
// group's trajectories (the copy at the ROLLOUTS sequence the report names,
// else by id) in the report's order (the replayed one
// first, E8), with the report's rewards.
func Groups(rec *Record, rep *wire.StepReport, k int) ([]learner.Group, error) {
	out := make([]learner.Group, 0, len(rep.Groups))
	for _, g := range rep.Groups {
		if len(g.TrajectoryIDs) != k || len(g.Rewards) != k || g.Size != k {
			return nil, fmt.Errorf("%w: step %d question %s: %d trajectories, %d rewards, size %d for K = %d",
				ErrRecord, rep.Step, g.QuestionID, len(g.TrajectoryIDs), len(g.Rewards), g.Size, k)
		}
		var replayed *learner.Rollout
		fresh := make([]learner.Rollout, 0, k)
		for i, id := range g.TrajectoryIDs {
			sc, ok := rec.Scored[id]
			if i < len(g.Seqs) && g.Seqs[i] != 0 {
				if at, found := rec.BySeq[g.Seqs[i]]; found && at.Traj.ID == id {
					sc, ok = at, true
				}
			}
			if !ok {
				return nil, fmt.Errorf("%w: step %d question %s: trajectory %s is not scored (no verdict on SCORED, or ROLLOUTS' byte limit dropped it)", ErrRecord, rep.Step, g.QuestionID, id)
			}
			t := &sc.Traj
			r := learner.Rollout{ID: t.ID, PromptTokens: t.PromptTokens, Tokens: t.Tokens, LogProbs: t.LogProbs,
				Version: t.PolicyVersion, Reward: g.Rewards[i]}
			if i < len(g.Reasons) {
				r.Reason = g.Reasons[i]
			}
			if i == 0 && g.Replayed {
				if id != g.ReplayedID {
					return nil, fmt.Errorf("%w: step %d question %s: replayed %s is not listed first", ErrRecord, rep.Step, g.QuestionID, g.ReplayedID)
				}
				replayed = &r
				continue
			}
			fresh = append(fresh, r)
		}
		grp, err := learner.NewGroup(g.QuestionID, k, replayed, fresh, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: step %d: %w", ErrRecord, rep.Step, err)
		}
		out = append(out, grp)
	}
	return out, nil
}

// Save writes res's weights and optimiser as a checkpoint at path, with
// the tokenizer tok and meta.
func Save(path string, res Result, tok *policy.Tokenizer, meta map[string]string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("retrain: %w", err)
	}
	if err := policy.SaveFile(path, policy.Checkpoint{Model: res.Model, Tokenizer: tok, Opt: res.Opt, Meta: meta}); err != nil {
		return fmt.Errorf("retrain: %w", err)
	}
	return nil
}

// ConfigPath is the run directory's config.json.
func ConfigPath(dir string) string { return filepath.Join(dir, rundir.ConfigFile) }

// Options configure Run.
type Options struct {
	// RunDir is the finished run's directory: its config.json, and its
	// JetStream store unless Conn is set.
	RunDir string
	// Conn, when set, reads the record from a live server instead (Run is
	// then the run id; "" = config.json's).
	Conn *bus.ConnConfig
	Run  string
	// ConfigFile replaces RunDir's config.json (for a live run whose
	// directory is elsewhere).
	ConfigFile string
	// Edit changes the run's learner settings (E10-E14 only: CheckSameData).
	Edit func(*learner.Config)
	// Out is the directory Run writes: final.safetensors and summary.json.
	Out string
	// CacheDir is where the base model is cached ("" = the run's).
	CacheDir string
	// HeldOut and EvalSamples override the run's held-out evaluation
	// (0 = the run's).
	HeldOut, EvalSamples int
}

// Summary is what Run writes to summary.json.
type Summary struct {
	RunDir   string         `json:"run_dir"`
	Steps    int            `json:"steps"`
	Replayed int            `json:"replayed_groups"`
	Learner  learner.Config `json:"learner"`
	Changed  []string       `json:"changed"` // the settings that differ from the run's
	// BasePass1 and FinalPass1 are held-out pass@1 of the base and the
	// retrained policy (the run's held-out set and sampling seed);
	// RunPass1 the run's own final one when its summary has it and the
	// evaluation is the run's (HeldOut and EvalSamples not overridden).
	BasePass1  float64 `json:"base_pass1"`
	FinalPass1 float64 `json:"final_pass1"`
	RunPass1   float64 `json:"run_pass1,omitempty"`
	HeldOutN   int     `json:"heldout_n"`
	Samples    int     `json:"eval_samples"`
	// SameWeights says the retrained weights equal the run's final
	// checkpoint bit for bit (checked when the run directory has one).
	SameWeights *bool  `json:"same_weights,omitempty"`
	Checkpoint  string `json:"checkpoint"`
	StepFigures []Step `json:"steps_figures"`
}

// Run retrains a finished run under o and writes o.Out.
func Run(ctx context.Context, o Options) (Summary, error) {
	var sum Summary
	if o.Out == "" {
		return sum, fmt.Errorf("%w: no output directory", ErrConfig)
	}
	cfgPath := o.ConfigFile
	if cfgPath == "" {
		if o.RunDir == "" {
			return sum, fmt.Errorf("%w: give the run directory (its config.json), or a config file", ErrConfig)
		}
		cfgPath = ConfigPath(o.RunDir)
	}
	rc, err := RunConfig(cfgPath)
	if err != nil {
		return sum, err
	}
	if rc.Trainer != "" && rc.Trainer != local.TrainerGo {
		return sum, fmt.Errorf("%w: the run trained with trainer %q; retraining uses the built-in Go trainer on the built-in model", ErrConfig, rc.Trainer)
	}
	if o.CacheDir != "" {
		rc.CacheDir = o.CacheDir
	}
	if o.HeldOut > 0 {
		rc.HeldOutQuestions = o.HeldOut
	}
	if o.EvalSamples > 0 {
		rc.EvalSamples = o.EvalSamples
	}
	runCfg := LearnerConfig(rc)
	lc := runCfg
	if o.Edit != nil {
		o.Edit(&lc)
	}
	if err := CheckSameData(runCfg, lc); err != nil {
		return sum, err
	}
	sum.Changed = changed(runCfg, lc)
	rec, err := Load(ctx, o.RunDir, o.Conn, o.Run)
	if err != nil {
		return sum, err
	}
	base, err := local.BaseModel(ctx, rc, nil)
	if err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	res, err := Train(ctx, lc, base.Model, rec)
	if err != nil {
		return sum, err
	}
	_, heldout, err := local.Datasets(rc)
	if err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	eval := local.Evaluator(rc, heldout)
	if sum.BasePass1, err = eval(ctx, base.Model); err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	if sum.FinalPass1, err = eval(ctx, res.Model); err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	sum.RunDir, sum.Steps, sum.Learner, sum.StepFigures = o.RunDir, len(res.Steps), lc, res.Steps
	sum.HeldOutN, sum.Samples = len(heldout.Problems), rc.EvalSamples
	for _, s := range res.Steps {
		sum.Replayed += s.Replayed
	}
	if o.RunDir != "" {
		if rs, err := rundir.ReadSummary(o.RunDir); err == nil && rs.Completed && o.HeldOut == 0 && o.EvalSamples == 0 {
			sum.RunPass1 = rs.FinalPass1
		}
		if ck, err := policy.LoadFile(filepath.Join(o.RunDir, rundir.CheckpointsDir, "latest.safetensors")); err == nil {
			_, same := sameBits(ck.Model.Params, res.Model.Params)
			sum.SameWeights = &same
		}
	}
	sum.Checkpoint = filepath.Join(o.Out, "final.safetensors")
	if err := Save(sum.Checkpoint, res, base.Tokenizer, map[string]string{"retrain.run_dir": o.RunDir}); err != nil {
		return sum, err
	}
	b, err := json.MarshalIndent(sum, "", " ")
	if err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.Out, "summary.json"), b, 0o644); err != nil {
		return sum, fmt.Errorf("retrain: %w", err)
	}
	return sum, nil
}

// changed lists the learner settings in which c differs from run, by
// field name.
func changed(run, c learner.Config) []string {
	var out []string
	a, _ := json.Marshal(run)
	b, _ := json.Marshal(c)
	var ma, mb map[string]any
	_ = json.Unmarshal(a, &ma)
	_ = json.Unmarshal(b, &mb)
	for k, v := range mb {
		if fmt.Sprint(ma[k]) != fmt.Sprint(v) {
			out = append(out, fmt.Sprintf("%s %v -> %v", k, ma[k], v))
		}
	}
	sort.Strings(out)
	return out
}

// sameBits says whether a and b hold the same float32 bits; the first
// differing index when not.
func sameBits(a, b []float32) (int, bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}
