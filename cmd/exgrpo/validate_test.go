package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// TestBadCommandLinesFailFast: a command line that cannot work fails at
// once with a usage error, before any connection (the NATS URL here has no
// server, so a command that tried to connect would wait out its timeout).
func TestBadCommandLinesFailFast(t *testing.T) {
	dir := t.TempDir()
	tok := task.BuiltinTokenizer()
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.safetensors")
	if err := policy.SaveFile(good, policy.Checkpoint{Model: m, Tokenizer: tok}); err != nil {
		t.Fatal(err)
	}
	m.Params[3] = float32(math.NaN())
	nan := filepath.Join(dir, "nan.safetensors")
	if err := policy.SaveFile(nan, policy.Checkpoint{Model: m, Tokenizer: tok}); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noServer := []string{"--nats", "nats://127.0.0.1:1", "--connect-timeout", "1m"}
	for _, tc := range []struct {
		name  string
		run   func(context.Context, []string) error
		args  []string
		usage bool
		want  string
	}{
		{"replay --rho 2", runReplayRole, append([]string{"--rho", "2"}, noServer...), true, "Rho = 2"},
		{"learner --run bad.id", runLearnerRole, append([]string{"--run", "bad.id", "--base", good}, noServer...), true, `run id "bad.id"`},
		{"actor --run bad.id", runActorRole, append([]string{"--run", "bad.id"}, noServer...), true, `run id "bad.id"`},
		{"verifier --verdict-batch 0", runVerifierRole, append([]string{"--verdict-batch", "0"}, noServer...), true, "VerdictBatch 0"},
		{"tasks -n -5", runTasks, []string{"-n", "-5"}, true, "-n -5"},
		{"eval of NaN weights", runEval, []string{"--checkpoint", nan}, false, "not finite"},
		{"eval of an empty dataset", runEval, []string{"--checkpoint", good, "--dataset", empty}, true, "no problems"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.run(ctx, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("got %v; want an error naming %q (usage error: %v)", err, tc.want, tc.usage)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("failed after %v; want at once", took)
			}
		})
	}
}
