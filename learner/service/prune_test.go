package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// steps reports which of the given checkpoint steps exist in dir (format:
// step-<n>/ or step-<n>.safetensors).
func present(t *testing.T, dir, format string, steps ...int64) map[int64]bool {
	t.Helper()
	got := map[int64]bool{}
	for _, n := range steps {
		name := fmt.Sprintf("step-%06d", n)
		if format == FormatFile {
			name += ".safetensors"
		}
		got[n] = exists(filepath.Join(dir, name))
	}
	return got
}

func wantPresent(t *testing.T, dir, format string, keep, gone []int64) {
	t.Helper()
	for n, ok := range present(t, dir, format, keep...) {
		if !ok {
			t.Errorf("checkpoint %d was deleted; the keep rule must keep it", n)
		}
	}
	for n, ok := range present(t, dir, format, gone...) {
		if ok {
			t.Errorf("checkpoint %d is still there; the keep rule must delete it", n)
		}
	}
}

// plantDir copies the dir checkpoint src to step-<n>/ with its meta.json's
// step and run replaced.
func plantDir(t *testing.T, dir, src string, n int64, run string) {
	t.Helper()
	dst := filepath.Join(dir, fmt.Sprintf("step-%06d", n))
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(dir, src))); err != nil {
		t.Fatal(err)
	}
	ck, err := ReadDirCheckpoint(dst)
	if err != nil {
		t.Fatal(err)
	}
	ck.Meta[MetaStep], ck.Meta[MetaRun] = fmt.Sprint(n), run
	b, _ := json.Marshal(ck.Meta)
	if err := os.WriteFile(filepath.Join(dst, dirMeta), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointKeepDir: with the dir format's default keep (2), each new
// checkpoint, once latest names it, leaves it and the lineage's one before
// it; a dead epoch's checkpoint of a higher step (this run's, never named
// by latest) is deleted, not kept in place of the previous one; another
// run's checkpoint and nothing but .partial leftovers are touched; a
// learner resumes from latest after pruning, and from the checkpoint
// before it.
func TestCheckpointKeepDir(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(filepath.Join(e.ckpt, "step-000004.partial", "weights"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(3)
	cfg.CheckpointFormat = FormatDir
	e.runAll(t, cfg)
	wantPresent(t, e.ckpt, FormatDir, []int64{1, 2}, []int64{0})
	if m, _ := filepath.Glob(filepath.Join(e.ckpt, "*.partial")); len(m) > 0 {
		t.Errorf("leftovers: %v", m)
	}

	// A dead epoch's checkpoint above latest (announced, then the learner
	// died before latest named it), and another run's.
	plantDir(t, e.ckpt, "step-000001", 9, "lt")
	plantDir(t, e.ckpt, "step-000001", 7, "another-run")
	rcfg := testConfig(4)
	rcfg.CheckpointFormat, rcfg.Resume = FormatDir, true
	_, results := e.runAll(t, rcfg)
	if len(results) != 1 || results[0].Summary.Step != 3 {
		t.Fatalf("the resumed learner trained %v, want step 3", results)
	}
	// Step 3's checkpoint and the one it resumed from stay; a rule keeping
	// the highest steps would keep 9 and delete 2.
	wantPresent(t, e.ckpt, FormatDir, []int64{3, 2, 7}, []int64{1, 9})

	// Resume after pruning: from latest (step 3) ...
	rcfg.Steps = 5
	if _, results = e.runAll(t, rcfg); len(results) != 1 || results[0].Summary.Step != 4 {
		t.Fatalf("resumed from latest: trained %v, want step 4", results)
	}
	wantPresent(t, e.ckpt, FormatDir, []int64{4, 3}, []int64{2})
	// ... and from the checkpoint before it, which the rule kept.
	if err := os.WriteFile(filepath.Join(e.ckpt, LatestDirFile), []byte("step-000003\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, results = e.runAll(t, rcfg); len(results) != 1 || results[0].Summary.Step != 4 {
		t.Fatalf("resumed from the previous checkpoint: trained %v, want step 4", results)
	}
	if ck, err := LatestDir(e.ckpt); err != nil || filepath.Base(ck.Path) != "step-000004" {
		t.Errorf("latest %v, %v", ck.Path, err)
	}
	wantPresent(t, e.ckpt, FormatDir, []int64{4, 3, 7}, nil)
	// Its step-000004 replaced the superseded epoch's, leaving nothing.
	if m, _ := filepath.Glob(filepath.Join(e.ckpt, "*.partial")); len(m) > 0 {
		t.Errorf("leftovers: %v", m)
	}
	if ck, err := ReadDirCheckpoint(filepath.Join(e.ckpt, "step-000004")); err != nil || ck.Meta[MetaStep] != "4" {
		t.Errorf("step-000004: %v, %v", ck.Meta, err)
	}
}

// TestCheckpointKeepFile: the file format keeps every checkpoint by
// default; with CheckpointKeep 2 it keeps latest's step and the one
// before, and a learner resumes after pruning. A larger keep fills up with
// older ones.
func TestCheckpointKeepFile(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(3)
	e.runAll(t, cfg)
	wantPresent(t, e.ckpt, FormatFile, []int64{0, 1, 2}, nil)

	rcfg := testConfig(5)
	rcfg.Resume, rcfg.CheckpointKeep = true, 3
	e.runAll(t, rcfg)
	wantPresent(t, e.ckpt, FormatFile, []int64{4, 3, 2}, []int64{0, 1})

	rcfg.Steps, rcfg.CheckpointKeep = 6, 2
	if _, results := e.runAll(t, rcfg); len(results) != 1 || results[0].Summary.Step != 5 {
		t.Fatalf("resumed after pruning: trained %v, want step 5", results)
	}
	wantPresent(t, e.ckpt, FormatFile, []int64{5, 4}, []int64{3, 2})
	if !exists(filepath.Join(e.ckpt, LatestFile)) {
		t.Error("latest.safetensors is gone")
	}
	rcfg.Steps = 7
	if _, results := e.runAll(t, rcfg); len(results) != 1 || results[0].Summary.Step != 6 {
		t.Fatalf("resumed after pruning: trained %v, want step 6", results)
	}
}

func TestCheckpointKeepRefused(t *testing.T) {
	for _, k := range []int{1, -2} {
		c := testConfig(1)
		c.CheckpointKeep = k
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("CheckpointKeep %d: %v, want ErrConfig", k, err)
		}
	}
}
