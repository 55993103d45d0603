package torch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/trainertest"
)

// needPython skips the test, with the reason, when the worker's interpreter
// lacks torch, numpy or msgpack (CI installs Debian's python3-torch,
// python3-numpy and python3-msgpack, so there the tests run).
func needPython(t testing.TB) string {
	t.Helper()
	py := Options{}.python()
	if err := CheckPython(context.Background(), py); err != nil {
		t.Skipf("skipping the torch worker tests: %v", err)
	}
	return py
}

func startBuiltin(t testing.TB, ck policy.Checkpoint, adam policy.AdamWConfig, mb int) *Client {
	t.Helper()
	c, err := StartBuiltin(context.Background(), Options{MicroBatchTokens: mb, Threads: 1, StartTimeout: 2 * time.Minute, CallTimeout: 2 * time.Minute}, ck, adam)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConformance runs the trainer conformance suite against the torch
// worker: every score, gradient and update is compared with the built-in Go
// model's (log-probs and entropies 1e-5, gradients 1e-4 relative, weights
// after AdamW 1e-5), at T = 1, 0.5, 0.7 and 1.3, in one batch and in
// micro-batches.
func TestConformance(t *testing.T) {
	needPython(t)
	trainertest.Run(t, func(t *testing.T, ck policy.Checkpoint, adam policy.AdamWConfig, mb int) trainer.Trainer {
		return startBuiltin(t, ck, adam, mb)
	})
}

// TestPythonUnitTests runs the worker's own unittest suite with the
// worker's interpreter.
func TestPythonUnitTests(t *testing.T) {
	py := needPython(t)
	cmd := exec.Command(py, "-m", "unittest", "discover", "-s", "torchworker/tests", "-t", ".", "-v")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python unittest failed: %v\n%s", err, out)
	}
	t.Logf("%s", lastLines(string(out), 4))
}

// TestWorkerKilledMidStep: the worker dies while the learner waits for a
// reply; the call fails at once (well before its 2-minute deadline) with a
// message naming the exit, and every later call fails too.
func TestWorkerKilledMidStep(t *testing.T) {
	needPython(t)
	ck := trainertest.Model(t, true)
	c := startBuiltin(t, ck, policy.DefaultAdamW(), 0)
	defer c.Close()
	ctx := context.Background()
	seqs := trainertest.Batch(1, ck.Model.Config, 4)
	if _, _, err := c.Forward(ctx, seqs, 1); err != nil {
		t.Fatal(err)
	}
	// Kill the worker while a call is in flight.
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.cmd.Process.Kill()
	}()
	start := time.Now()
	var err error
	for err == nil && time.Since(start) < 10*time.Second {
		_, _, err = c.Score(ctx, trainertest.Batch(2, ck.Model.Config, 64), 1)
	}
	if err == nil {
		t.Fatal("calls kept succeeding after the worker was killed")
	}
	if !errors.Is(err, trainer.ErrBackend) || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "killed") {
		t.Errorf("error %q: want trainer.ErrBackend naming the exit (signal: killed)", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the failure took %v", took)
	}
	if _, err2 := c.Step(ctx); !errors.Is(err2, trainer.ErrBackend) {
		t.Errorf("Step after the worker died: %v, want trainer.ErrBackend", err2)
	}
}

// TestStartUpErrors: a missing model, a file that is not a checkpoint, an HF
// directory without transformers or config, a missing interpreter and a
// protocol mismatch are clear errors at start-up, not hangs.
func TestStartUpErrors(t *testing.T) {
	needPython(t)
	ctx := context.Background()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.safetensors")
	os.WriteFile(junk, []byte("not a checkpoint"), 0o644)
	emptyDir := filepath.Join(dir, "hf")
	os.Mkdir(emptyDir, 0o755)
	o := Options{StartTimeout: time.Minute}
	for _, tc := range []struct {
		name, model, python, want string
	}{
		{"missing model", filepath.Join(dir, "nope"), "", "no such file"},
		{"not a checkpoint", junk, "", "cannot load model"},
		{"directory without config.json", emptyDir, "", "cannot load model"},
		{"missing interpreter", junk, filepath.Join(dir, "no-python"), "cannot import torch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			o.Python = tc.python
			start := time.Now()
			c, err := Start(ctx, o, tc.model, policy.DefaultAdamW())
			if err == nil {
				c.Close()
				t.Fatal("start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if time.Since(start) > 45*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
	t.Run("protocol mismatch", func(t *testing.T) {
		ck := trainertest.Model(t, true)
		c := startBuiltin(t, ck, policy.DefaultAdamW(), 0)
		defer c.Close()
		_, err := c.call(ctx, "hello", map[string]any{"version": ProtocolVersion + 1})
		if err == nil || !errors.Is(err, trainer.ErrBackend) || !strings.Contains(err.Error(), "protocol version mismatch") {
			t.Fatalf("hello with version %d: %v, want a protocol version mismatch", ProtocolVersion+1, err)
		}
		if _, _, err := c.Score(ctx, trainertest.Batch(1, ck.Model.Config, 1), 1); !errors.Is(err, trainer.ErrBackend) {
			t.Errorf("a call after the mismatch: %v, want trainer.ErrBackend", err)
		}
	})
}

// TestCallDeadline: a call whose context ends while the worker computes
// fails with the context's error as soon as the deadline passes (not when
// the worker finishes), and breaks the client (the reply would arrive out of
// step); an already expired context fails without sending anything.
func TestCallDeadline(t *testing.T) {
	needPython(t)
	ck := trainertest.Model(t, true)
	c := startBuiltin(t, ck, policy.DefaultAdamW(), 0)
	defer c.Close()
	expired, cancel0 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel0()
	if _, _, err := c.Score(expired, trainertest.Batch(1, ck.Model.Config, 1), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired context: %v, want context.DeadlineExceeded", err)
	}
	if _, _, err := c.Score(context.Background(), trainertest.Batch(1, ck.Model.Config, 1), 1); err != nil {
		t.Fatalf("a call after a refused expired one: %v", err)
	}
	big := trainertest.Batch(2, ck.Model.Config, 3000) // seconds of work for the worker
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.Forward(ctx, big, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline mid-call: %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the call returned %v after its 400 ms deadline", took)
	}
	if c.broken == nil {
		t.Skip("the deadline passed before the request was sent (machine under load): nothing was interrupted")
	}
	if _, _, err := c.Score(context.Background(), big[:1], 1); !errors.Is(err, trainer.ErrBackend) {
		t.Errorf("a call after an interrupted one: %v, want trainer.ErrBackend (the stream is out of step)", err)
	}
}

// TestTokenizeChat: the system prompts travel to the worker, whose
// built-in format has none (they are ignored: the ids equal Tokenize's),
// and a count that does not match the prompts is refused before sending.
func TestTokenizeChat(t *testing.T) {
	needPython(t)
	ck := trainertest.Model(t, true)
	c := startBuiltin(t, ck, policy.DefaultAdamW(), 0)
	defer c.Close()
	ctx := context.Background()
	prompts := []string{"1+2", "3"}
	want, err := c.Tokenize(ctx, prompts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.TokenizeChat(ctx, []string{"think", ""}, prompts)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Errorf("TokenizeChat %v, Tokenize %v", got, want)
	}
	if _, err := c.TokenizeChat(ctx, []string{"think"}, prompts); !errors.Is(err, trainer.ErrInput) {
		t.Errorf("one system prompt for two prompts: %v, want trainer.ErrInput", err)
	}
	var _ trainer.ChatTokenizer = c
	var _ trainer.MasterWeightsSaver = c
}
