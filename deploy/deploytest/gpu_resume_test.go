package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plantLatest writes what a learner leaves in its checkpoint directory
// after the dir-format checkpoint NAME: NAME/weights/ and latest naming it.
func plantLatest(t *testing.T, ckpt, name string) string {
	t.Helper()
	w := filepath.Join(ckpt, name, "weights")
	if err := os.MkdirAll(w, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ckpt, "latest"), name+"\n")
	return w
}

// TestGPUSlurmResumeStandIns: a job of a run whose checkpoint directory has
// a latest checkpoint starts torchrun on that checkpoint's weights when the
// learner resumes (--resume=auto), as the learner requires, and on the
// plan's model when it does not (the plan of a dry run).
func TestGPUSlurmResumeStandIns(t *testing.T) {
	s := newStandIns(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := filepath.Join(s.dir, "work")
	weights := plantLatest(t, filepath.Join(work, "checkpoints"), "step-000039")
	ports := freePorts(t, 3)
	ebase := consecutiveFreePorts(t, 1)
	env := append(s.env, "SLURM_JOB_NODELIST=localhost", "SLURM_JOB_ID=89", "SLURM_SUBMIT_DIR="+s.dir,
		"EXGRPO_BIN="+filepath.Join(s.shims, "exgrpo"), "EXGRPO_RUN=gpuci", "EXGRPO_WORKDIR="+work,
		"EXGRPO_STORE="+filepath.Join(s.dir, "store"), "EXGRPO_METRICS_BASE=0",
		"EXGRPO_NATS_PORT="+strconv.Itoa(ports[0]), "EXGRPO_CLUSTER_PORT="+strconv.Itoa(ports[1]), "EXGRPO_MONITOR_PORT="+strconv.Itoa(ports[2]),
		"EXGRPO_GPUS_PER_NODE=2", "EXGRPO_TRAINER_GPUS=1", "EXGRPO_ENGINE=vllm", "EXGRPO_TP=1",
		"EXGRPO_ENGINE_PORT="+strconv.Itoa(ebase), "STANDIN_LEARNER_EXIT=1", "EXGRPO_TRAIN_ARGS=--steps 3")
	sbatch := filepath.Join(root, "deploy", "slurm", "exgrpo.sbatch")

	out, err := run(ctx, root, append(env, "EXGRPO_DRY_RUN=1"), "bash", sbatch)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	for _, p := range parsePlan(t, out) {
		if p.name == "trainer" {
			mustContain(t, "torchrun of a learner that does not resume", p.cmd, "--model /models/Qwen2.5-Math-7B ")
		}
	}

	out, err = run(ctx, root, append(env, "EXGRPO_LEARNER_ARGS=--resume=auto"), "bash", sbatch)
	if err != nil {
		t.Fatalf("batch script: %v\n%s", err, out)
	}
	recs := s.records(t)
	checkOrder(t, recs, true)
	tr := startsOf(recs, `^trainer$`)
	if len(tr) != 1 {
		t.Fatalf("%d trainers, want 1:\n%s", len(tr), out)
	}
	mustContain(t, "torchrun of a resuming learner", tr[0].rest, "-m torchworker --model "+weights+" ")
	mustContain(t, "learner", startsOf(recs, `^exgrpo-learner$`)[0].rest, "--resume=auto", "--checkpoint-dir "+filepath.Join(work, "checkpoints"))
	// The engines start on the plan's model: the actors hand them the
	// learner's versions.
	mustContain(t, "engine", startsOf(recs, `^engine-`)[0].rest, "vllm serve /models/Qwen2.5-Math-7B ")
}

// TestGPUSSHRestartStandIns: launch-ssh.sh start, then the learner dies
// after a checkpoint; start again restarts it and its torchrun worker
// (still running, on the weights the dead learner trained) on the latest
// checkpoint's weights, read on the learner's host, and leaves the rest
// running.
func TestGPUSSHRestartStandIns(t *testing.T) {
	s := newStandIns(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	launch, work, _ := s.sshLaunch(t, ctx, root, "127.0.0.1  nats,learner,replay,verifier,actor  2  engine=sglang trainer=1\n",
		1, "--steps 50", "EXGRPO_LEARNER_ARGS=--resume=auto")
	out := launch("start")
	mustContain(t, "first start", out, "127.0.0.1: started trainer", "127.0.0.1: started learner")
	recs := s.waitStarts(t, `^exgrpo-learner$`, 1)
	if tr := startsOf(recs, `^trainer$`); len(tr) != 1 || !strings.Contains(tr[0].rest, "--model /models/Qwen2.5-Math-7B ") {
		t.Fatalf("first start: torchrun %v, want it on the plan's model (no checkpoint yet)", tr)
	}

	// The learner checkpoints, then dies (SIGKILL: no clean exit).
	weights := plantLatest(t, filepath.Join(work, "checkpoints"), "step-000019")
	pid := readPids(t, filepath.Join(work, "pids"))["learner"]
	if pid == 0 {
		t.Fatal("no learner pid file")
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i > 100 {
			t.Fatal("the learner did not die")
		}
		time.Sleep(50 * time.Millisecond)
	}

	plan := launch("plan")
	for _, p := range parsePlan(t, plan) {
		if p.name == "trainer" {
			mustContain(t, "plan after the checkpoint", p.cmd, "--model "+weights+" ")
		}
	}
	out = launch("start")
	mustContain(t, "restart", out, ": stopped trainer", "127.0.0.1: started trainer", "127.0.0.1: started learner",
		"engine-0 already running", "actor-0 already running")
	recs = s.waitStarts(t, `^exgrpo-learner$`, 2)
	tr := startsOf(recs, `^trainer$`)
	if len(tr) != 2 {
		t.Fatalf("torchrun started %d times, want 2:\n%s", len(tr), out)
	}
	mustContain(t, "torchrun after the restart", tr[1].rest, "-m torchworker --model "+weights+" ")
	var stopped float64
	for _, r := range recs {
		if r.kind == "stop" && r.who == "trainer" {
			stopped = r.at
		}
	}
	l := startsOf(recs, `^exgrpo-learner$`)
	if stopped == 0 || stopped > tr[1].at || len(l) != 2 || l[1].at < tr[1].at {
		t.Errorf("restart order: old worker stopped at %.3f, new one started at %.3f, learners %v", stopped, tr[1].at, l)
	}
	if n := len(startsOf(recs, `^engine-`)); n != 1 {
		t.Errorf("the engine was started %d times, want once", n)
	}
	launch("stop")
	if left := readPids(t, filepath.Join(work, "pids")); len(left) > 0 {
		t.Errorf("pid files left after stop: %v", left)
	}
}

// waitStarts waits until n processes matching re have recorded their start
// (the launchers return once they started them in the background) and
// returns the records.
func (s *standIns) waitStarts(t *testing.T, re string, n int) []record {
	t.Helper()
	for i := 0; ; i++ {
		recs := s.records(t)
		if len(startsOf(recs, re)) >= n || i == 100 {
			return recs
		}
		time.Sleep(100 * time.Millisecond)
	}
}
