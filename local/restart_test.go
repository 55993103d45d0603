package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/exgrpo/exgrpo/bench/endurance"
	"github.com/exgrpo/exgrpo/internal/testbin"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	lsvc "github.com/exgrpo/exgrpo/learner/service"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"go.uber.org/zap"
)

// TestLearnerKilledAndResumed runs every role as its own process and kills
// the learner with SIGKILL three times, at the moments that matter: in the
// middle of a gather (step 3), right after a step report (step 6, so the
// resumed learner trains that step again from the checkpoint before it), and
// between storing a weights version and announcing it. Each time the learner
// is restarted at once with --resume=auto. The run must complete; no gather
// may wait (the learner logs every 15 s of waiting); and an audit of CONTROL
// and SCORED must find every step exactly once in the final lineage, every
// trajectory it names once with one content, and the replay service's pool
// equal to an independent fold of that lineage.
//
// It runs with the Go trainer and, where Python has torch, with the
// PyTorch worker (--trainer torch: each resumed learner starts a fresh
// worker and restores the checkpoint's weights and optimiser state into it).
func TestLearnerKilledAndResumed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes")
	}
	t.Run("go", func(t *testing.T) { learnerKilledAndResumed(t, "go") })
	t.Run("torch", func(t *testing.T) {
		needTorch(t)
		learnerKilledAndResumed(t, "torch", "--python", "/usr/bin/python3", "--torch-threads", "1")
	})
	// The directory format (what an HF model checkpoints as) on the
	// built-in model: each resumed learner starts its worker on the
	// checkpoint's weights directory and loads the optimiser file.
	t.Run("torch-dir", func(t *testing.T) {
		needTorch(t)
		learnerKilledAndResumed(t, "torch", "--python", "/usr/bin/python3", "--torch-threads", "1", "--checkpoint-format", "dir")
	})
}

func learnerKilledAndResumed(t *testing.T, trainer string, trainerArgs ...string) {
	dir := t.TempDir()
	bin := testbin.Exgrpo(t, dir)
	cache := filepath.Join(dir, "cache")
	const steps = 12
	train := []string{"--steps", strconv.Itoa(steps), "--k", strconv.Itoa(itK), "--batch", strconv.Itoa(itB), "--minibatches", "1",
		"--max-new", "24", "--train-questions", "100", "--heldout", "8", "--eval-samples", "1", "--start", "0",
		"--pretrain-steps", "300", "--cache-dir", cache}
	port := bustest.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	procs := &processes{t: t, dir: dir, bin: bin, ctx: ctx}
	procs.start("server", nil, "server", "--port", strconv.Itoa(port), "--store", filepath.Join(dir, "js"), "--log-level", "warn")
	role := []string{"--nats", url, "--run", "rs", "--log-level", "info"}
	procs.start("replay", nil, append(append([]string{"replay"}, role...), train...)...)
	procs.start("verifier", nil, append([]string{"verifier"}, role...)...)
	procs.start("actor-0", nil, append([]string{"actor", "--id", "a0"}, role...)...)
	procs.start("actor-1", nil, append([]string{"actor", "--id", "a1"}, role...)...)
	b := openBus(t, ctx, url, "rs")

	learnerArgs := append(append(append([]string{"learner"}, role...), train...),
		"--checkpoint-dir", filepath.Join(dir, "ckpt"), "--checkpoint-every", "2", "--resume=auto", "--eval=false",
		"--trainer", trainer)
	learnerArgs = append(learnerArgs, trainerArgs...)
	// The third fault is armed by version: the resumed learners renumber
	// above what a dead one announced, so the test reads where it stands.
	faults := []func() string{
		func() string { return "learner.gather@3" },
		func() string { return "learner.after-report@6" },
		func() string {
			v, err := b.LatestVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("weights.put@%d", v+3) // during the publish after the resumed epoch's second update
		},
	}
	for i := 0; ; i++ {
		var env []string
		if i < len(faults) {
			env = []string{faultpoint.Env + "=" + faults[i]()}
		}
		name := fmt.Sprintf("learner-%d", i+1)
		start := time.Now()
		err := procs.start(name, env, learnerArgs...).Wait()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		switch {
		case i < len(faults) && !killed:
			procs.dump()
			t.Fatalf("%s (armed %s) ended with %v, not killed by its fault point", name, env[0], err)
		case i < len(faults):
			t.Logf("%s killed at %s after %v", name, env[0], time.Since(start).Round(time.Millisecond))
			continue
		case err != nil:
			procs.dump()
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s completed the run in %v", name, time.Since(start).Round(time.Millisecond))
		break
	}
	for i := 1; i <= len(faults)+1; i++ {
		log := procs.log(fmt.Sprintf("learner-%d", i))
		if strings.Contains(log, "gather waiting for rollouts") || strings.Contains(log, "gather deadline") {
			t.Errorf("learner-%d waited on a gather:\n%s", i, grepLines(log, "gather"))
		}
	}

	led, err := endurance.ReadLedger(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(led.Epochs) != len(faults)+1 {
		t.Errorf("lineage records name epochs %v; want %d epochs", led.Epochs, len(faults)+1)
	}
	if led.Rewinds == 0 {
		t.Error("no resumed learner went back before a report: the test did not exercise a rewind")
	}
	// The audit and the independent fold of the final lineage with the
	// pure pool, which the replay service's pool must equal.
	cfg := DefaultConfig()
	cfg.Learner.Learner.K = itK
	cfg.Normalize()
	audit, want, err := led.Check(cfg.Replay.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if !audit.OK() || audit.Steps != steps {
		t.Errorf("audit of the final lineage: %d steps (want %d); gaps %v, repeated %v, lost %v, named twice %v, two contents %v",
			audit.Steps, steps, audit.StepGaps, audit.StepRepeats, audit.Missing, audit.NamedTwice, audit.Conflicts)
	}
	var got *replay.Pool
	bustest.Eventually(t, 30*time.Second, "the replay service folds the last step", func() bool {
		p, err := rsvc.ReadSnapshot(ctx, b, cfg.Replay.Pool)
		if err != nil || p == nil {
			return false
		}
		got = p
		last, ok := p.LastStep()
		return ok && last == steps-1
	})
	if !bytes.Equal(got.Snapshot(), want.Snapshot()) {
		t.Errorf("replay pool %+v differs from the fold of the final lineage %+v", got.Stats(), want.Stats())
	}
	if st := want.Stats(); st.Questions == 0 {
		t.Errorf("the lineage stored nothing: %+v", st)
	}
	if slices.Contains(trainerArgs, "dir") {
		ckpt := filepath.Join(dir, "ckpt")
		if _, err := os.Stat(filepath.Join(ckpt, lsvc.LatestFile)); err == nil {
			t.Errorf("--checkpoint-format dir wrote %s", lsvc.LatestFile)
		}
		ck, err := lsvc.LatestDir(ckpt)
		if err != nil || ck.Meta[lsvc.MetaStep] != strconv.Itoa(steps-1) {
			t.Errorf("latest directory checkpoint %s %v: %v; want step %d", ck.Path, ck.Meta, err, steps-1)
		}
		for i := 2; i <= len(faults)+1; i++ {
			if log := procs.log(fmt.Sprintf("learner-%d", i)); !strings.Contains(log, `"format":"dir"`) || !strings.Contains(log, `"resuming":true`) {
				t.Errorf("learner-%d did not resume from a directory checkpoint:\n%s", i, grepLines(log, "resume"))
			}
		}
		// The keep rule's default across the kills: latest and the one
		// before it, nothing half-written.
		left, _ := filepath.Glob(filepath.Join(ckpt, "step-*"))
		want := []string{fmt.Sprintf("step-%06d", steps-3), fmt.Sprintf("step-%06d", steps-1)}
		for i := range left {
			left[i] = filepath.Base(left[i])
		}
		if !slices.Equal(left, want) {
			t.Errorf("checkpoints left %v, want %v (--checkpoint-keep's default for dir)", left, want)
		}
	}
}

func openBus(t *testing.T, ctx context.Context, url, run string) *bus.Bus {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := bus.Connect(octx, bus.ConnConfig{URL: url, Name: "audit"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := bus.Open(octx, nc, bus.DefaultConfig(run), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// processes starts role processes whose output goes to <dir>/<name>.log;
// they are stopped (SIGTERM) when the test ends.
type processes struct {
	t     *testing.T
	dir   string
	bin   string
	ctx   context.Context
	names []string
}

func (p *processes) start(name string, env []string, args ...string) *exec.Cmd {
	p.t.Helper()
	cmd := exec.CommandContext(p.ctx, p.bin, args...)
	logf, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.names = append(p.names, name)
	p.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
		logf.Close()
	})
	return cmd
}

func (p *processes) log(name string) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, name+".log"))
	return string(b)
}

func (p *processes) dump() {
	for _, n := range p.names {
		b := p.log(n)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		p.t.Logf("--- %s.log (tail)\n%s", n, b)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestActorAndVerifierKilledRecover kills (SIGKILL, through fault points)
// one of two actors while it holds a task of step 2 and one of two
// verifiers while it holds rollouts of step 4. Their work must come back
// within about the ack wait (15 s) and the run completes; the note's
// recovery figures are the extra time of those steps over the median step.
func TestActorAndVerifierKilledRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes")
	}
	dir := t.TempDir()
	bin := testbin.Exgrpo(t, dir)
	const steps = 7
	train := []string{"--steps", strconv.Itoa(steps), "--k", strconv.Itoa(itK), "--batch", strconv.Itoa(itB), "--minibatches", "1",
		"--max-new", "24", "--train-questions", "100", "--heldout", "8", "--eval-samples", "1",
		"--pretrain-steps", "20", "--cache-dir", filepath.Join(dir, "cache")}
	port := bustest.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	procs := &processes{t: t, dir: dir, bin: bin, ctx: ctx}
	procs.start("server", nil, "server", "--port", strconv.Itoa(port), "--store", filepath.Join(dir, "js"), "--log-level", "warn")
	role := []string{"--nats", url, "--run", "kv", "--log-level", "info"}
	procs.start("replay", nil, append(append([]string{"replay"}, role...), train...)...)
	v0 := procs.start("verifier-0", []string{faultpoint.Env + "=verifier.grade@4"}, append([]string{"verifier"}, role...)...)
	procs.start("verifier-1", nil, append([]string{"verifier"}, role...)...)
	a0 := procs.start("actor-0", []string{faultpoint.Env + "=actor.sample@2"}, append([]string{"actor", "--id", "a0"}, role...)...)
	procs.start("actor-1", nil, append([]string{"actor", "--id", "a1"}, role...)...)
	learner := procs.start("learner", nil, append(append(append([]string{"learner"}, role...), train...),
		"--checkpoint-dir", filepath.Join(dir, "ckpt"), "--eval=false")...)
	if err := learner.Wait(); err != nil {
		procs.dump()
		t.Fatalf("learner: %v", err)
	}
	for _, c := range []*exec.Cmd{a0, v0} {
		err := c.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s was not killed at its fault point: %v", filepath.Base(c.Args[1]), err)
		}
	}
	led, err := endurance.ReadLedger(ctx, openBus(t, ctx, url, "kv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(led.Reports) != steps {
		t.Fatalf("%d steps in the ledger, want %d", len(led.Reports), steps)
	}
	var normal []time.Duration
	took := map[int64]time.Duration{}
	for _, r := range led.Reports {
		took[r.Step] = time.Duration(r.StepMicros) * time.Microsecond
		if r.Step != 2 && r.Step != 4 && r.Step != 0 {
			normal = append(normal, took[r.Step])
		}
	}
	median := medianDuration(normal)
	for _, c := range []struct {
		step int64
		what string
	}{{2, "actor"}, {4, "verifier"}} {
		extra := took[c.step] - median
		t.Logf("kill -9 of the %s: step %d took %v, median step %v: recovered in %v", c.what, c.step,
			took[c.step].Round(time.Millisecond), median.Round(time.Millisecond), extra.Round(time.Millisecond))
		if took[c.step] > 30*time.Second {
			t.Errorf("step %d took %v after a dead %s; want its work back within about the 15 s ack wait", c.step, took[c.step], c.what)
		}
	}
}

func medianDuration(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
