package main

import (
	"errors"
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
