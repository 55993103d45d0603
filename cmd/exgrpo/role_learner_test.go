package main

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// TestResumeFlag: --resume is a boolean or "auto"; auto resumes only from a
// latest checkpoint of the same run, starts fresh without one, and refuses
// another run's checkpoint rather than overwrite it.
func TestResumeFlag(t *testing.T) {
	for _, c := range []struct {
		in        string
		on, auto  bool
		shown     string
		wantError bool
	}{
		{"true", true, false, "true", false},
		{"false", false, false, "false", false},
		{"auto", false, true, "auto", false},
		{"sometimes", false, false, "false", true},
	} {
		var f resumeFlag
		err := f.Set(c.in)
		if (err != nil) != c.wantError || f.on != c.on || f.auto != c.auto || f.String() != c.shown {
			t.Errorf("Set(%q): %+v, %v; want on=%v auto=%v shown %q error=%v", c.in, f, err, c.on, c.auto, c.shown, c.wantError)
		}
	}

	dir := t.TempDir()
	auto := resumeFlag{auto: true}
	if got, err := auto.decide(dir, "r1", lsvc.FormatFile); got || err != nil {
		t.Fatalf("auto without a checkpoint: resume=%v, %v; want a fresh start", got, err)
	}
	if got, err := (&resumeFlag{on: true}).decide(dir, "r1", lsvc.FormatFile); !got || err != nil {
		t.Fatalf("plain --resume: resume=%v, %v; want true (the learner then reports the missing file)", got, err)
	}
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	ck := policy.Checkpoint{Model: m, Tokenizer: task.BuiltinTokenizer(), Meta: map[string]string{lsvc.MetaRun: "r1"}}
	if err := policy.SaveFile(filepath.Join(dir, lsvc.LatestFile), ck); err != nil {
		t.Fatal(err)
	}
	if got, err := auto.decide(dir, "r1", lsvc.FormatFile); !got || err != nil {
		t.Fatalf("auto with this run's checkpoint: resume=%v, %v; want resume", got, err)
	}
	if got, err := auto.decide(dir, "r2", lsvc.FormatFile); got || !errors.Is(err, errUsage) {
		t.Fatalf("auto with another run's checkpoint: resume=%v, %v; want a usage error", got, err)
	}

	// The directory format: auto looks at what the latest file names, not
	// at latest.safetensors.
	if got, err := auto.decide(dir, "r1", lsvc.FormatDir); got || err != nil {
		t.Fatalf("auto, dir format, without a latest file: resume=%v, %v; want a fresh start", got, err)
	}
	step := filepath.Join(dir, "step-000003")
	if err := os.MkdirAll(filepath.Join(step, "weights"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"meta.json": `{"exgrpo.run":"r1","exgrpo.step":"3"}`, "optimizer.safetensors": "x"} {
		if err := os.WriteFile(filepath.Join(step, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, lsvc.LatestDirFile), []byte("step-000003\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := auto.decide(dir, "r1", lsvc.FormatDir); !got || err != nil {
		t.Fatalf("auto, dir format, this run's checkpoint: resume=%v, %v; want resume", got, err)
	}
	if got, err := auto.decide(dir, "r2", lsvc.FormatDir); got || !errors.Is(err, errUsage) {
		t.Fatalf("auto, dir format, another run's checkpoint: resume=%v, %v; want a usage error", got, err)
	}
	if err := os.Remove(filepath.Join(step, "optimizer.safetensors")); err != nil {
		t.Fatal(err)
	}
	if got, err := auto.decide(dir, "r1", lsvc.FormatDir); got || err == nil {
		t.Fatalf("auto, dir format, latest names an incomplete directory: resume=%v, %v; want an error", got, err)
	}
}

// TestLearnerModelFlagUsage: --model is for the PyTorch worker, and names
// the model as --base does; contradictions (and a --checkpoint-keep that
// would delete the checkpoint before latest) are usage errors before
// anything starts.
func TestLearnerModelFlagUsage(t *testing.T) {
	hf := t.TempDir()
	for _, args := range [][]string{
		{"--model", hf},                    // the Go trainer by default
		{"--model", hf, "--trainer", "go"}, // explicitly
		{"--model", hf, "--trainer", "torch", "--base", filepath.Join(hf, "x.safetensors")},
		{"--model", hf, "--trainer", "torch", "--checkpoint-format", "file"}, // an HF model cannot be a policy file
		{"--checkpoint-keep", "1"},  // a resume may go back to the checkpoint before latest
		{"--checkpoint-keep", "-2"}, // -1 is every checkpoint
	} {
		err := runLearnerRole(context.Background(), append([]string{"--run", "r"}, args...))
		if !errors.Is(err, errUsage) {
			t.Errorf("learner %v: %v; want a usage error", args, err)
		}
	}
}

// TestWeightsTransportFlag: blob keeps the service's single-object
// publishing; fs needs the shared directory; objects defaults its staging
// directory under the checkpoint directory; anything else is a usage error.
func TestWeightsTransportFlag(t *testing.T) {
	tok := task.BuiltinTokenizer()
	for _, c := range []struct {
		transport, dir string
		wantNil        bool
		wantErr        bool
	}{
		{"blob", "", true, false},
		{"fs", "", false, true},
		{"nfs", t.TempDir(), false, true},
		{"fs", t.TempDir(), false, false},
		{"objects", "", false, false},
	} {
		f := addWeightsFlags(flag.NewFlagSet("learner", flag.ContinueOnError))
		f.transport, f.cfg.Dir = c.transport, c.dir
		ckpt := t.TempDir()
		pub, err := f.publisher(nil, ckpt, tok, nil)
		if c.transport == "objects" && f.cfg.Dir != filepath.Join(ckpt, "weights") {
			t.Errorf("objects staging directory %q, want under the checkpoint directory", f.cfg.Dir)
		}
		if (pub == nil) != (c.wantNil || c.wantErr) || (err != nil) != c.wantErr || (err != nil && !errors.Is(err, errUsage)) {
			t.Errorf("--weights-transport %s --weights-dir %q: publisher %v, err %v", c.transport, c.dir, pub != nil, err)
		}
	}
}
