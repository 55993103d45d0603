package local

import (
	"context"
	"fmt"
	"github.com/exgrpo/exgrpo/internal/testbin"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// TestMultiProcessTrainsAsRun builds the exgrpo binary and runs the system
// as separate processes (`exgrpo server`, `replay`, `verifier`, `actor`,
// `learner`), then runs the same configuration with `exgrpo run`'s code path
// in one process: both ledgers must agree step by step (same questions, same
// rewards, same batch Pass@1), since every draw is seeded and the policy's
// kernels are deterministic.
func TestMultiProcessTrainsAsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts six processes")
	}
	dir := t.TempDir()
	bin := testbin.Exgrpo(t, dir)
	cache := filepath.Join(dir, "cache")
	const steps = 3
	train := []string{"--steps", strconv.Itoa(steps), "--k", strconv.Itoa(itK), "--batch", strconv.Itoa(itB), "--minibatches", "1",
		"--max-new", "32", "--train-questions", "100", "--heldout", "16", "--eval-samples", "1",
		"--pretrain-steps", "20", "--cache-dir", cache}

	port := bustest.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	procs := &processes{t: t, dir: dir, bin: bin, ctx: ctx}
	start := func(name string, args ...string) *exec.Cmd { return procs.start(name, nil, args...) }
	dump := procs.dump
	server := start("server", "server", "--port", strconv.Itoa(port), "--store", filepath.Join(dir, "js"), "--log-level", "warn")
	role := []string{"--nats", url, "--run", "mp", "--log-level", "warn"}
	others := []*exec.Cmd{
		start("replay", append(append([]string{"replay"}, role...), train...)...),
		start("verifier", append([]string{"verifier"}, role...)...),
		start("actor", append([]string{"actor", "--id", "a0"}, role...)...),
	}
	learner := start("learner", append(append(append([]string{"learner"}, role...), train...),
		"--checkpoint-dir", filepath.Join(dir, "ckpt"))...)
	done := make(chan error, 1)
	go func() { done <- learner.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			dump()
			t.Fatalf("learner process: %v", err)
		}
	case <-ctx.Done():
		dump()
		t.Fatal("learner process did not finish in time")
	}

	// The multi-process ledger, read from the still-running server.
	multi := stepReports(t, url, "mp")
	for _, c := range others {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range others {
		if err := c.Wait(); err != nil {
			t.Errorf("%s exited with %v", filepath.Base(c.Path), err)
		}
	}
	_ = server.Process.Signal(syscall.SIGTERM)
	_ = server.Wait()

	// The same run in one process.
	cfg := DefaultConfig()
	cfg.RunDir, cfg.CacheDir, cfg.RunID = filepath.Join(dir, "run"), cache, "mp"
	cfg.Learner.Steps = steps
	cfg.Learner.Learner.K, cfg.Learner.Learner.B, cfg.Learner.Learner.MiniBatches = itK, itB, 1
	cfg.Learner.MaxNew = 32
	cfg.TrainQuestions, cfg.HeldOutQuestions, cfg.EvalSamples = 100, 16, 1
	cfg.Pretrain.Steps = 20
	sum, err := Run(context.Background(), cfg, Hooks{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	single := reportsFromRunDir(t, cfg)
	if !sum.Completed {
		t.Fatalf("one-process run did not complete: %+v", sum)
	}
	if len(multi) != steps || len(single) != steps {
		t.Fatalf("multi-process ledger has %d steps, one-process %d; want %d", len(multi), len(single), steps)
	}
	for i := range multi {
		m, s := multi[i], single[i]
		if m.Pass1 != s.Pass1 || len(m.Groups) != len(s.Groups) {
			t.Errorf("step %d: multi-process Pass@1 %v over %d groups, one-process %v over %d", i, m.Pass1, len(m.Groups), s.Pass1, len(s.Groups))
			continue
		}
		for j := range m.Groups {
			if m.Groups[j].QuestionID != s.Groups[j].QuestionID || fmt.Sprint(m.Groups[j].Rewards) != fmt.Sprint(s.Groups[j].Rewards) {
				t.Errorf("step %d group %d: %s %v vs %s %v", i, j, m.Groups[j].QuestionID, m.Groups[j].Rewards,
					s.Groups[j].QuestionID, s.Groups[j].Rewards)
			}
		}
	}
}

// reportsFromRunDir reopens a finished run's JetStream store and reads its
// step reports.
func reportsFromRunDir(t *testing.T, cfg Config) []wire.StepReport {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Host: "127.0.0.1", Port: -1, StoreDir: filepath.Join(cfg.RunDir, "jetstream")}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	return stepReports(t, srv.ClientURL(), cfg.RunID)
}

// stepReports reads the step reports of run from the CONTROL stream of the
// server at url.
func stepReports(t *testing.T, url, run string) []wire.StepReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: url, Name: "reader"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := bus.Open(ctx, nc, bus.DefaultConfig(run), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.StepReport
	readAll(t, b, bus.Control, func(d []byte) {
		var r wire.StepReport
		if wire.Decode(d, &r) == nil {
			out = append(out, r)
		}
	})
	return out
}
