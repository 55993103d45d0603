package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/exgrpo/exgrpo/task"
	"go.uber.org/zap"
)

// TestRunOnDataFilesThroughEngines trains on a parquet file in verl's
// schema and evaluates on a JSONL file, both written here, with the
// built-in actors and again with the actors on vLLM- and SGLang-shaped
// engine servers: each run completes, and the engine runs end exactly where
// the built-in one does (same seed, same weights, the server reproduces the
// built-in sampler).
func TestRunOnDataFilesThroughEngines(t *testing.T) {
	dir := t.TempDir()
	train, heldout, err := Datasets(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var rows []task.VerlRow
	for i, p := range train.Problems[:200] {
		rows = append(rows, task.VerlRow{DataSource: "builtin", Ability: "arith",
			Prompt:      []task.ChatMessage{{Role: "user", Content: p.Prompt}},
			RewardModel: task.VerlRewardModel{Style: "rule", GroundTruth: p.Answer},
			ExtraInfo:   task.VerlExtraInfo{Split: "train", Index: int64(i)}})
	}
	var buf bytes.Buffer
	if err := task.WriteParquet(&buf, rows); err != nil {
		t.Fatal(err)
	}
	trainPath := filepath.Join(dir, "train.parquet")
	if err := os.WriteFile(trainPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := (task.Dataset{Problems: heldout.Problems[:16]}).WriteJSONL(&buf); err != nil {
		t.Fatal(err)
	}
	heldPath := filepath.Join(dir, "heldout.jsonl")
	if err := os.WriteFile(heldPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	run := func(engine string) (base, final float64, rollouts int64) {
		cfg := tinyRunConfig(t)
		cfg.CacheDir, cfg.TrainData, cfg.HeldOutData, cfg.Engine = cache, trainPath, heldPath, engine
		sum, err := Run(context.Background(), cfg, Hooks{}, zap.NewNop())
		if err != nil {
			t.Fatalf("engine %q: %v", engine, err)
		}
		if !sum.Completed || sum.Steps != cfg.Learner.Steps {
			t.Fatalf("engine %q: summary %+v", engine, sum)
		}
		return sum.BasePass1, sum.FinalPass1, sum.Rollouts
	}
	b0, b1, bn := run("")
	for _, e := range []string{"vllm", "sglang"} {
		e0, e1, en := run(e)
		if e0 != b0 || e1 != b1 || en != bn {
			t.Fatalf("%s run: base %v final %v rollouts %d; built-in run: %v %v %d", e, e0, e1, en, b0, b1, bn)
		}
	}
}
