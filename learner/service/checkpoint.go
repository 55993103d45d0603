package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/wire"
)

// Checkpoint formats (Config.CheckpointFormat).
//
// FormatFile is the built-in architecture's: step-<n>.safetensors and
// latest.safetensors, each one policy checkpoint file holding the weights,
// the tokenizer, the AdamW state and the learner's metadata (Meta*) — what
// retrain, inspect and `exgrpo eval` read.
//
// FormatDir works for any trainer: step-<n>/ holds weights/ (what the
// trainer's SaveWeights writes: a built-in checkpoint, or HF shards with
// config and tokenizer), optimizer.safetensors (SaveOptimizer) and
// meta.json (the same Meta* keys as the file format, plus MetaArch); the
// file latest names the directory of the latest checkpoint.
const (
	FormatFile = "file"
	FormatDir  = "dir"

	// LatestDirFile names the latest checkpoint directory (FormatDir).
	LatestDirFile = "latest"
	// MetaArch is the trainer architecture a FormatDir checkpoint holds.
	MetaArch = "exgrpo.arch"

	dirWeights   = "weights"
	dirOptimizer = "optimizer.safetensors"
	dirMeta      = "meta.json"
)

// DirCheckpoint is a FormatDir checkpoint on disk.
type DirCheckpoint struct {
	Path string            // CheckpointDir/step-<n>
	Meta map[string]string // meta.json
}

// Weights is the directory of the checkpoint's weights (what a trainer is
// started on to resume: torch.Start loads it).
func (c DirCheckpoint) Weights() string { return filepath.Join(c.Path, dirWeights) }

// Optimizer is the file of the checkpoint's optimiser state (LoadOptimizer).
func (c DirCheckpoint) Optimizer() string { return filepath.Join(c.Path, dirOptimizer) }

// LatestDir reads the FormatDir checkpoint that dir/latest names; an error
// wrapping fs.ErrNotExist when there is none.
func LatestDir(dir string) (DirCheckpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, LatestDirFile))
	if err != nil {
		return DirCheckpoint{}, fmt.Errorf("learner service: checkpoint: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return DirCheckpoint{}, fmt.Errorf("learner service: checkpoint: %s names %q, not a checkpoint directory beside it",
			filepath.Join(dir, LatestDirFile), name)
	}
	return ReadDirCheckpoint(filepath.Join(dir, name))
}

// ReadDirCheckpoint reads the FormatDir checkpoint in path (its metadata;
// the weights and optimiser files are checked to exist).
func ReadDirCheckpoint(path string) (DirCheckpoint, error) {
	c := DirCheckpoint{Path: path}
	b, err := os.ReadFile(filepath.Join(path, dirMeta))
	if err != nil {
		return c, fmt.Errorf("learner service: checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, &c.Meta); err != nil {
		return c, fmt.Errorf("learner service: checkpoint %s: %s: %w", path, dirMeta, err)
	}
	for _, p := range []string{c.Weights(), c.Optimizer()} {
		if _, err := os.Stat(p); err != nil {
			return c, fmt.Errorf("learner service: checkpoint %s is incomplete: %w", path, err)
		}
	}
	return c, nil
}

// LatestRun reports the run of dir's latest checkpoint in format (the
// MetaRun key); ok is false when dir has none.
func LatestRun(dir, format string) (run string, ok bool, err error) {
	var meta map[string]string
	switch format {
	case FormatDir:
		c, err := LatestDir(dir)
		if errors.Is(err, fs.ErrNotExist) && !exists(filepath.Join(dir, LatestDirFile)) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		meta = c.Meta
	case FormatFile, "":
		path := filepath.Join(dir, LatestFile)
		if !exists(path) {
			return "", false, nil
		}
		ck, err := policy.LoadFile(path)
		if err != nil {
			return "", false, fmt.Errorf("learner service: checkpoint: %w", err)
		}
		meta = ck.Meta
	default:
		return "", false, fmt.Errorf("%w: checkpoint format %q (want %s or %s)", ErrConfig, format, FormatFile, FormatDir)
	}
	return meta[MetaRun], true, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Holds checks that a trainer loaded its model from path, when the trainer
// says where it loaded it from (trainer.Info.Model; a worker started by
// torchrun reports it): resuming or training a model directory over a
// worker that holds another model would silently train the wrong weights.
func Holds(in trainer.Info, path string) error {
	if in.Model == "" {
		return nil
	}
	want, err := filepath.Abs(path)
	if err == nil {
		if r, err2 := filepath.EvalSymlinks(want); err2 == nil {
			want = r
		}
	}
	if err != nil || filepath.Clean(in.Model) != want {
		return fmt.Errorf("%w: the %s trainer holds the model of %s, not %s (start its worker with --model %s)",
			ErrConfig, in.Backend, in.Model, path, path)
	}
	return nil
}

// meta is the learner's state after step t, as checkpoint metadata.
func (s *Service) meta(t int64) map[string]string {
	retired, _ := json.Marshal(s.retired)
	if s.retired == nil {
		retired = []byte("[]")
	}
	streaks, _ := json.Marshal(s.retire.State().Streaks)
	return map[string]string{
		MetaStep: strconv.FormatInt(t, 10), MetaVersion: strconv.FormatInt(s.version, 10),
		MetaMixed: strconv.FormatBool(s.mixed), MetaRetired: string(retired), MetaRun: s.d.Bus.Names.Run,
		MetaStreaks: string(streaks),
	}
}

// restoreMeta sets the learner's state from checkpoint metadata; it
// returns the retirement streaks.
func (s *Service) restoreMeta(meta map[string]string) (map[string]int, error) {
	var streaks map[string]int
	last, err1 := strconv.ParseInt(meta[MetaStep], 10, 64)
	ver, err2 := strconv.ParseInt(meta[MetaVersion], 10, 64)
	mixed, err3 := strconv.ParseBool(meta[MetaMixed])
	err4 := json.Unmarshal([]byte(meta[MetaRetired]), &s.retired)
	var err5 error
	if v, ok := meta[MetaStreaks]; ok {
		err5 = json.Unmarshal([]byte(v), &streaks)
	}
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("learner service: resume: checkpoint metadata: %w", err)
	}
	s.step, s.version, s.mixed = last+1, ver, mixed
	return streaks, nil
}

// checkpointDir writes step t's FormatDir checkpoint. The order makes it
// crash-safe as the file format is:
//  1. the trainer writes the weights (at full precision where it keeps
//     master weights: trainer.MasterWeightsSaver) and the optimiser state, and the
//     learner meta.json, into step-<t>.partial/; then the directory is
//     renamed to step-<t>/ (a crash before leaves only a .partial
//     directory, which the next checkpoint of step t removes and nothing
//     reads);
//  2. the checkpoint is announced on CONTROL (wire.Lineage);
//  3. latest.tmp, naming step-<t>, is renamed over latest;
//  4. the keep rule (pruneCheckpoints) deletes old checkpoints and .partial leftovers.
//
// A learner resumes only from what latest names, so only from a complete
// directory the replay service has heard of; a crash between 2 and 3
// leaves the previous latest, which it still keeps. A step-<t>/ that
// exists already is a dead epoch's (or, without --resume, another start's):
// latest never names it, because a resumed learner checkpoints only steps
// after the one latest names, and it is replaced.
func (s *Service) checkpointDir(ctx context.Context, t int64) error {
	fail := func(err error) error { return fmt.Errorf("learner service: checkpoint: %w", err) }
	tr := s.core.Trainer()
	meta := s.meta(t)
	meta[MetaArch] = tr.Info().Arch
	name := fmt.Sprintf("step-%06d", t)
	final := filepath.Join(s.cfg.CheckpointDir, name)
	part := final + ".partial"
	if err := os.RemoveAll(part); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(part, 0o755); err != nil {
		return fail(err)
	}
	save := tr.SaveWeights
	if ms, ok := tr.(trainer.MasterWeightsSaver); ok {
		save = ms.SaveMasterWeights // resume from the weights trained, not their bf16 rounding
	}
	if err := save(ctx, filepath.Join(part, dirWeights)); err != nil {
		return quiet(ctx, fail(err))
	}
	if err := tr.SaveOptimizer(ctx, filepath.Join(part, dirOptimizer)); err != nil {
		return quiet(ctx, fail(err))
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := writeSynced(filepath.Join(part, dirMeta), append(b, '\n')); err != nil {
		return fail(err)
	}
	if exists(final) { // a dead epoch's: out of the way as a .partial, which a crash leaves for the keep rule
		old := final + ".old.partial"
		if err := os.RemoveAll(old); err != nil {
			return fail(err)
		}
		if err := os.Rename(final, old); err != nil {
			return fail(err)
		}
		if err := os.RemoveAll(old); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(part, final); err != nil {
		return fail(err)
	}
	tmp := filepath.Join(s.cfg.CheckpointDir, LatestDirFile+".tmp")
	if err := writeSynced(tmp, []byte(name+"\n")); err != nil {
		return fail(err)
	}
	if err := s.publishLineage(ctx, wire.Lineage{Kind: wire.LineageCheckpoint, Epoch: s.epoch, Step: t}); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.cfg.CheckpointDir, LatestDirFile)); err != nil {
		return fail(err)
	}
	if err := syncDir(s.cfg.CheckpointDir); err != nil {
		return err
	}
	s.chain = append(s.chain, t)
	s.pruneCheckpoints(t) // only now: latest names the new checkpoint, on disk
	return nil
}

// writeSynced writes a small file and syncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("learner service: checkpoint: %w", err)
	}
	defer d.Close()
	_ = d.Sync() // best effort: not every file system syncs directories
	return nil
}

// resumeDir restores a FormatDir checkpoint into the trainer: the built-in
// architecture's weights are restored from the checkpoint (so a worker
// started on other weights, e.g. by torchrun, is set right); a trainer of
// another architecture must have been started on the checkpoint's weights
// (DirCheckpoint.Weights: torch.Start with that directory), which Holds
// checks when the trainer reports its model. Then the optimiser state.
func resumeDir(ctx context.Context, tr trainer.Trainer, ck DirCheckpoint) error {
	in := tr.Info()
	if a := ck.Meta[MetaArch]; a != in.Arch {
		return fmt.Errorf("%w: resume: checkpoint %s holds a model of architecture %q, the trainer one of %q", ErrConfig, ck.Path, a, in.Arch)
	}
	if in.Arch == "builtin" {
		w, err := policy.LoadFile(filepath.Join(ck.Weights(), trainer.BuiltinWeightsFile))
		if err != nil {
			return fmt.Errorf("learner service: resume: %w", err)
		}
		if err := tr.Restore(ctx, w.Model, nil); err != nil {
			return fmt.Errorf("learner service: resume: %w", err)
		}
	} else if err := Holds(in, ck.Weights()); err != nil {
		return fmt.Errorf("learner service: resume: %w", err)
	}
	if err := tr.LoadOptimizer(ctx, ck.Optimizer()); err != nil {
		return fmt.Errorf("learner service: resume: %w", err)
	}
	return nil
}
