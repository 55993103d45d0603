package service

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"go.uber.org/zap"
)

// TestDirCheckpointResume: with CheckpointFormat dir a checkpoint is a
// directory of the trainer's own files plus meta.json, latest names it,
// and a learner resumed from it holds exactly the weights and optimiser
// state the first one ended with, then trains on; CONTROL ends with every
// step once.
func TestDirCheckpointResume(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(2)
	cfg.CheckpointFormat = FormatDir
	first, _ := e.runAll(t, cfg)
	wantW := slices.Clone(first.Model().Params)
	wantO := first.core.Optimizer()
	if wantO == nil || wantO.T == 0 {
		t.Fatal("the first learner has no optimiser state to compare")
	}
	wantM, wantT := slices.Clone(wantO.M), wantO.T

	if _, err := os.Stat(filepath.Join(e.ckpt, LatestFile)); err == nil {
		t.Error("the dir format wrote latest.safetensors")
	}
	ck, err := LatestDir(e.ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(ck.Path) != "step-000001" {
		t.Errorf("latest names %s, want step-000001", ck.Path)
	}
	for _, k := range []string{MetaStep, MetaVersion, MetaMixed, MetaRetired, MetaStreaks, MetaRun, MetaArch} {
		if _, ok := ck.Meta[k]; !ok {
			t.Errorf("meta.json lacks %s: %v", k, ck.Meta)
		}
	}
	if ck.Meta[MetaStep] != "1" || ck.Meta[MetaVersion] != "2" || ck.Meta[MetaArch] != "builtin" || ck.Meta[MetaRun] != "lt" {
		t.Errorf("meta.json %v", ck.Meta)
	}
	if m, _ := filepath.Glob(filepath.Join(e.ckpt, "*.partial")); len(m) > 0 || exists(filepath.Join(e.ckpt, LatestDirFile+".tmp")) {
		t.Errorf("leftovers of writing: %v", m)
	}

	// A fresh trainer on other weights (the base): the resume sets it to
	// the checkpoint's weights and loads the optimiser state.
	rcfg := testConfig(4)
	rcfg.CheckpointFormat, rcfg.Resume, rcfg.CheckpointDir = FormatDir, true, e.ckpt
	tr, err := trainer.NewBuiltin(e.base.Clone(), task.BuiltinTokenizer(), rcfg.Learner.AdamW(), trainer.BuiltinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(rcfg, Deps{Bus: e.b, Trainer: tr, Tokenizer: task.BuiltinTokenizer(), Problems: e.train, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := tr.Weights(t.Context())
	o, _ := tr.Optimizer(t.Context())
	if svc.NextStep() != 2 || svc.version != 2 {
		t.Errorf("resumed at step %d version %d, want 2, 2", svc.NextStep(), svc.version)
	}
	if !slices.Equal(w.Params, wantW) || !slices.Equal(o.M, wantM) || o.T != wantT {
		t.Error("the resumed trainer does not hold the weights and optimiser state the first learner ended with")
	}

	// The Go trainer resumes from the same directory, and trains on.
	_, results := e.runAll(t, rcfg)
	if len(results) != 2 || results[0].Summary.Step != 2 {
		t.Fatalf("resumed run trained %d steps, want 2 from step 2", len(results))
	}
	e.reportsInOrder(t, 4)
	if ck, err := LatestDir(e.ckpt); err != nil || filepath.Base(ck.Path) != "step-000003" {
		t.Errorf("latest after the resumed run: %v, %v", ck.Path, err)
	}

	// latest naming a directory that is not beside it is refused.
	if err := os.WriteFile(filepath.Join(e.ckpt, LatestDirFile), []byte("../elsewhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LatestDir(e.ckpt); err == nil {
		t.Error("latest naming ../elsewhere was accepted")
	}
}

// hfStandIn is a trainer of another architecture (standing for an HF
// model in the PyTorch worker): the built-in maths underneath, but nothing
// of the built-in architecture is reachable through it, it reports the
// model path it was started on, and its chat template differs from
// task.EncodePrompt (one more BOS), so tasks show whose tokenizer made
// their prompt ids.
type hfStandIn struct {
	*trainer.Builtin
	model string
}

func (o *hfStandIn) Info() trainer.Info {
	in := o.Builtin.Info()
	in.Arch, in.Backend, in.Model = "hf", "torch", o.model
	return in
}

func (o *hfStandIn) Weights(context.Context) (*policy.Model, error) {
	return nil, trainer.ErrNotBuiltin
}

func (o *hfStandIn) Optimizer(context.Context) (*policy.AdamW, error) {
	return nil, trainer.ErrNotBuiltin
}

func (o *hfStandIn) Restore(context.Context, *policy.Model, *policy.AdamW) error {
	return trainer.ErrNotBuiltin
}

// SaveWeights rounds the weights to bf16, as an HF model's SaveWeights
// does for the engines; SaveMasterWeights keeps them.
func (o *hfStandIn) SaveWeights(ctx context.Context, dir string) error {
	m, err := o.Builtin.Weights(ctx)
	if err != nil {
		return err
	}
	r := m.Clone()
	for i, x := range r.Params {
		r.Params[i] = math.Float32frombits(math.Float32bits(x) &^ 0xffff)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return policy.SaveFile(filepath.Join(dir, trainer.BuiltinWeightsFile), policy.Checkpoint{Model: r, Tokenizer: task.BuiltinTokenizer()})
}

func (o *hfStandIn) SaveMasterWeights(ctx context.Context, dir string) error {
	return o.Builtin.SaveWeights(ctx, dir)
}

// TokenizeChat is Tokenize with one more BOS per byte of the system
// prompt, so tasks show that the system prompt reached the trainer.
func (o *hfStandIn) TokenizeChat(ctx context.Context, systems, prompts []string) ([][]int32, error) {
	ids, err := o.Tokenize(ctx, prompts)
	for i := range ids {
		for range len(systems[i]) {
			ids[i] = append([]int32{task.BuiltinTokenizer().BOS()}, ids[i]...)
		}
	}
	return ids, err
}

func (o *hfStandIn) Tokenize(ctx context.Context, prompts []string) ([][]int32, error) {
	ids, err := o.Builtin.Tokenize(ctx, prompts)
	for i := range ids {
		ids[i] = append([]int32{task.BuiltinTokenizer().BOS()}, ids[i]...)
	}
	return ids, err
}

// TestOtherArchitecture: a trainer that is not the built-in architecture
// goes through the learner: checkpoints as directories (the file format
// is refused for it) holding its master weights, not their bf16 rounding, publishes through PublishVersion only, skips the
// in-process evaluation instead of handing it a nil model, sends prompt ids
// from the trainer's own tokenizer, and resumes when started on the
// checkpoint's weights (and refuses a trainer holding other weights).
func TestOtherArchitecture(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(2)
	cfg.CheckpointDir = e.ckpt
	newTrainer := func(m *policy.Model, path string) *hfStandIn {
		b, err := trainer.NewBuiltin(m, task.BuiltinTokenizer(), cfg.Learner.AdamW(), trainer.BuiltinOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &hfStandIn{Builtin: b, model: path}
	}
	// The stand-in actors read built-in blobs: publish the weights under
	// the wrapper.
	publish := func(ctx context.Context, v int64, tr trainer.Trainer) error {
		m, err := tr.(*hfStandIn).Builtin.Weights(ctx)
		if err != nil {
			return err
		}
		return PublishWeights(ctx, e.b, v, m, task.BuiltinTokenizer())
	}
	evaluated := 0
	deps := func(tr trainer.Trainer) Deps {
		return Deps{Bus: e.b, Trainer: tr, Tokenizer: task.BuiltinTokenizer(), Problems: e.train, Check: allCorrect,
			PublishVersion: publish, Log: zap.NewNop(),
			Evaluate: func(context.Context, *policy.Model) (float64, error) { evaluated++; return 0, errors.New("evaluated") }}
	}

	bad := cfg
	bad.CheckpointFormat = FormatFile
	if _, err := New(bad, deps(newTrainer(e.base.Clone(), ""))); !errors.Is(err, ErrConfig) {
		t.Errorf("file format for an HF trainer: %v, want ErrConfig", err)
	}
	d := deps(newTrainer(e.base.Clone(), ""))
	d.PublishVersion = nil
	if _, err := New(cfg, d); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "PublishVersion") {
		t.Errorf("an HF trainer without PublishVersion: %v, want ErrConfig", err)
	}

	tr := newTrainer(e.base.Clone(), "")
	runWith(t, e, cfg, deps(tr))
	if evaluated != 0 {
		t.Errorf("the in-process evaluation ran %d times for an HF trainer", evaluated)
	}
	bos := task.BuiltinTokenizer().BOS()
	e.tasksMu.Lock()
	if len(e.tasks) == 0 {
		t.Error("no task seen")
	}
	for _, tk := range e.tasks {
		if len(tk.PromptTokens) < 2 || tk.PromptTokens[0] != bos || tk.PromptTokens[1] != bos || tk.PromptTokens[2] == bos {
			t.Fatalf("task %s prompt ids %v: not the trainer's tokenization", tk.TaskID, tk.PromptTokens)
		}
	}
	e.tasks = nil
	e.tasksMu.Unlock()
	ck, err := LatestDir(e.ckpt)
	if err != nil {
		t.Fatalf("no directory checkpoint for an HF trainer: %v", err)
	}
	if ck.Meta[MetaArch] != "hf" {
		t.Errorf("meta.json arch %q", ck.Meta[MetaArch])
	}
	// The problems' system prompts reach the trainer's chat template.
	withSys := testConfig(3)
	withSys.Resume, withSys.CheckpointDir = false, t.TempDir()
	sd := deps(newTrainer(e.base.Clone(), ""))
	sd.Problems = slices.Clone(e.train)
	for i := range sd.Problems {
		sd.Problems[i].System = "sys"
	}
	sp := &plan{tasks: map[string]*planned{}}
	sp.add(&planned{problem: sd.Problems[0], samples: 1})
	ssvc, err := New(withSys, sd)
	if err != nil {
		t.Fatal(err)
	}
	if err := ssvc.tokenizePrompts(t.Context(), sp); err != nil {
		t.Fatal(err)
	}
	if got := sp.tasks[sp.order[0]].prompt; len(got) < 6 || !slices.Equal(got[:5], []int32{bos, bos, bos, bos, bos}) || got[5] == bos {
		t.Errorf("prompt ids with a system prompt %v: want the trainer's chat tokenization with it", got)
	}

	wantW, _ := tr.Builtin.Weights(t.Context())
	wantO, _ := tr.Builtin.Optimizer(t.Context())
	wantP, wantM, wantT := slices.Clone(wantW.Params), slices.Clone(wantO.M), wantO.T

	// Resume: a trainer reporting another model is refused; one started on
	// the checkpoint's weights resumes with the optimiser state.
	rcfg := testConfig(3)
	rcfg.Resume, rcfg.CheckpointDir = true, e.ckpt
	if _, err := New(rcfg, deps(newTrainer(e.base.Clone(), t.TempDir()))); !errors.Is(err, ErrConfig) {
		t.Errorf("resume into a trainer holding other weights: %v, want ErrConfig", err)
	}
	w, err := policy.LoadFile(filepath.Join(ck.Weights(), trainer.BuiltinWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(ck.Weights())
	if err != nil {
		t.Fatal(err)
	}
	rtr := newTrainer(w.Model, real)
	svc, err := New(rcfg, deps(rtr))
	if err != nil {
		t.Fatal(err)
	}
	gw, _ := rtr.Builtin.Weights(t.Context())
	gotO, _ := rtr.Builtin.Optimizer(t.Context())
	if svc.NextStep() != 2 || !slices.Equal(gw.Params, wantP) || !slices.Equal(gotO.M, wantM) || gotO.T != wantT {
		t.Errorf("resumed at step %d; weights equal %v, optimiser equal %v", svc.NextStep(), slices.Equal(gw.Params, wantP),
			slices.Equal(gotO.M, wantM) && gotO.T == wantT)
	}
	var meta map[string]string
	b, _ := os.ReadFile(filepath.Join(ck.Path, "meta.json"))
	if err := json.Unmarshal(b, &meta); err != nil || meta[MetaStep] != "1" {
		t.Errorf("meta.json %s: %v", b, err)
	}
}

// runWith is runAll with the learner's Deps given (a trainer of the test's
// own); results are returned as OnStep saw them.
func runWith(t *testing.T, e *env, cfg Config, d Deps) []StepResult {
	t.Helper()
	var results []StepResult
	d.OnStep = func(r StepResult) { results = append(results, r) }
	svc, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	e.runBeside(t, svc, rsvc.NewMetrics(nil))
	return results
}
