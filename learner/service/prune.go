package service

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/exgrpo/exgrpo/policy"
	"go.uber.org/zap"
)

// DefaultKeepDir is the default CheckpointKeep of FormatDir: latest and the
// checkpoint before it, the two a resume may go to. A directory checkpoint
// of an HF model holds fp32 weights and two AdamW moments (a 7B model:
// ~84 GB), so keeping every one fills a disk within a run. FormatFile
// keeps every checkpoint by default: a built-in one is well under 2 MB,
// and its step files are the run's history that eval and inspect read.
const DefaultKeepDir = 2

// keep is the number of checkpoints the keep rule leaves (-1: every one).
func (s *Service) keep() int {
	switch {
	case s.cfg.CheckpointKeep != 0:
		return s.cfg.CheckpointKeep
	case s.format == FormatDir:
		return DefaultKeepDir
	}
	return -1
}

// pruneCheckpoints applies the keep rule after step t's checkpoint is complete and
// latest names it. The checkpoints it keeps are the newest Keep of this
// lineage: t, the ones this epoch wrote before it, the one it resumed from
// (s.chain; so never latest or the checkpoint before it), then, for a
// larger Keep, the newest older ones of this run. Everything else of this
// run goes: older checkpoints, and a dead epoch's (one it announced before
// it died, never named by latest, at a step above or between the
// lineage's). A checkpoint of another run (its metadata says so) is left
// alone. Each directory is first renamed to step-<n>.partial and then
// removed, so a crash mid-prune leaves a .partial, never a half-deleted
// step-<n>/; every .partial (of this prune or of a dead epoch's write) is
// removed here. Errors are logged, not returned: the checkpoint is complete
// whatever is left of the old ones.
func (s *Service) pruneCheckpoints(t int64) {
	dir := s.cfg.CheckpointDir
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.log.Warn("checkpoint keep rule: list", zap.String("dir", dir), zap.Error(err))
		return
	}
	type ckpt struct {
		step int64
		name string
	}
	n := s.keep()
	var ours []ckpt
	for _, e := range ents {
		name := e.Name()
		if s.format == FormatDir && e.IsDir() && strings.HasPrefix(name, "step-") && strings.HasSuffix(name, ".partial") {
			s.remove(filepath.Join(dir, name)) // a dead write's or a dead prune's
			continue
		}
		if s.format == FormatFile && !e.IsDir() && strings.Contains(name, ".safetensors.tmp") && name != LatestFile+".tmp" {
			s.remove(filepath.Join(dir, name)) // policy.SaveFile's temporary file of a dead process
			continue
		}
		if n < 0 {
			continue
		}
		step, ok := checkpointStep(name, s.format, e.IsDir())
		if !ok || step == t {
			continue
		}
		if run, err := s.checkpointRun(filepath.Join(dir, name)); err != nil || run != s.d.Bus.Names.Run {
			continue // another run's, or unreadable: not ours to delete
		}
		ours = append(ours, ckpt{step, name})
	}
	if n < 0 {
		return
	}
	kept := map[int64]bool{}
	for i := len(s.chain) - 1; i >= 0 && len(kept) < n; i-- {
		kept[s.chain[i]] = true
	}
	// Fill up with the newest older checkpoints of this run.
	slices.SortFunc(ours, func(a, b ckpt) int { return cmp.Compare(b.step, a.step) })
	for _, c := range ours {
		if len(kept) >= n {
			break
		}
		if len(s.chain) > 0 && c.step < s.chain[0] {
			kept[c.step] = true
		}
	}
	for _, c := range ours {
		if kept[c.step] {
			continue
		}
		path := filepath.Join(dir, c.name)
		if s.format == FormatDir {
			part := path + ".partial"
			if err := os.Rename(path, part); err != nil {
				s.log.Warn("checkpoint keep rule", zap.String("checkpoint", path), zap.Error(err))
				continue
			}
			path = part
		}
		if s.remove(path) {
			s.log.Info("checkpoint deleted (keep rule)", zap.String("checkpoint", c.name), zap.Int("keep", n), zap.Int64("latest", t))
		}
	}
	_ = syncDir(dir)
}

func (s *Service) remove(path string) bool {
	if err := os.RemoveAll(path); err != nil {
		s.log.Warn("checkpoint keep rule: remove", zap.String("path", path), zap.Error(err))
		return false
	}
	return true
}

// checkpointStep parses a checkpoint's name in format: step-<n>/ (dir) or
// step-<n>.safetensors (file).
func checkpointStep(name, format string, isDir bool) (int64, bool) {
	rest, ok := strings.CutPrefix(name, "step-")
	if !ok || isDir != (format == FormatDir) {
		return 0, false
	}
	if format == FormatFile {
		if rest, ok = strings.CutSuffix(rest, ".safetensors"); !ok {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || n < 0 || fmt.Sprintf("%06d", n) != rest {
		return 0, false
	}
	return n, true
}

// checkpointRun reads the run a checkpoint belongs to (MetaRun).
func (s *Service) checkpointRun(path string) (string, error) {
	if s.format == FormatDir {
		b, err := os.ReadFile(filepath.Join(path, dirMeta))
		if err != nil {
			return "", err
		}
		var meta map[string]string
		if err := json.Unmarshal(b, &meta); err != nil {
			return "", err
		}
		return meta[MetaRun], nil
	}
	ck, err := policy.LoadFile(path)
	if err != nil {
		return "", err
	}
	return ck.Meta[MetaRun], nil
}
