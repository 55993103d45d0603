package main

import (
	"errors"
	"flag"
	"math/rand/v2"
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
	if got, err := auto.decide(dir, "r1"); got || err != nil {
		t.Fatalf("auto without a checkpoint: resume=%v, %v; want a fresh start", got, err)
	}
	if got, err := (&resumeFlag{on: true}).decide(dir, "r1"); !got || err != nil {
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
	if got, err := auto.decide(dir, "r1"); !got || err != nil {
		t.Fatalf("auto with this run's checkpoint: resume=%v, %v; want resume", got, err)
	}
	if got, err := auto.decide(dir, "r2"); got || !errors.Is(err, errUsage) {
		t.Fatalf("auto with another run's checkpoint: resume=%v, %v; want a usage error", got, err)
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
