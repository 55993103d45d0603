package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// planLine is one "plan: host=H name=N env=E ready=R cmd=..." line of a
// dry run (env's variables separated by ';').
type planLine struct{ host, name, env, ready, cmd string }

var planRe = regexp.MustCompile(`^plan: host=(\S+) name=(\S+) env=(\S+) (?:ready=(\S+) )?cmd=(.*)$`)

func parsePlan(t *testing.T, out string) []planLine {
	t.Helper()
	var p []planLine
	for _, l := range strings.Split(out, "\n") {
		if m := planRe.FindStringSubmatch(l); m != nil {
			p = append(p, planLine{m[1], m[2], m[3], m[4], m[5]})
		}
	}
	return p
}

// TestSlurmDryRun runs deploy/slurm/exgrpo.sbatch in dry-run mode on a
// made-up allocation and checks the layout: three NATS nodes clustered
// with each other, learner and replay on the first node, one actor per GPU
// pinned with CUDA_VISIBLE_DEVICES on the GPU nodes, verifier workers on the
// CPU node, every process an srun step on its node, nothing started.
func TestSlurmDryRun(t *testing.T) {
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := []string{"SLURM_JOB_NODELIST=gpu[01-03],cpu07", "SLURM_JOB_ID=4242", "SLURM_SUBMIT_DIR=/shared/u",
		"EXGRPO_GPUS_PER_NODE=4", "EXGRPO_CPU_NODES=1", "EXGRPO_VERIFIERS_PER_CPU_NODE=3",
		"EXGRPO_AUTH=/shared/u/auth", "EXGRPO_TRAIN_ARGS=--steps 50", "PATH=/usr/bin:/bin"}
	out, err := run(ctx, root, env, "bash", filepath.Join(root, "deploy", "slurm", "exgrpo.sbatch"), "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	plan := parsePlan(t, out)
	count := map[string]int{}
	for _, p := range plan {
		role := strings.SplitN(p.name, "-", 2)[0]
		count[p.host+"/"+role]++
		switch role {
		case "nats":
			if !strings.Contains(p.cmd, "--cluster-port") || !strings.Contains(p.cmd, "--config /shared/u/auth/server.conf") ||
				!strings.Contains(p.cmd, "--store /tmp/exgrpo-4242/jetstream") {
				t.Errorf("NATS node not clustered with auth and a node-local store: %s", p.cmd)
			}
			if strings.Contains(p.cmd, "nats-route://"+p.host+":") {
				t.Errorf("NATS node %s routes to itself: %s", p.host, p.cmd)
			}
		case "actor", "verifier", "learner", "replay":
			if !strings.Contains(p.cmd, "--replicas 3") || !strings.Contains(p.cmd, "--creds /shared/u/auth/"+role+".creds") ||
				!strings.Contains(p.cmd, "--nats nats://gpu01:4222,nats://gpu02:4222,nats://gpu03:4222") {
				t.Errorf("%s on %s lacks replicas, its credentials or the cluster URL: %s", p.name, p.host, p.cmd)
			}
		}
		if role == "actor" && p.env != "CUDA_VISIBLE_DEVICES="+strings.TrimPrefix(p.name, "actor-") {
			t.Errorf("%s on %s: env %s, want it pinned to its own GPU", p.name, p.host, p.env)
		}
		if (role == "learner" || role == "replay") && !strings.Contains(p.cmd, "--steps 50") {
			t.Errorf("%s without the training flags: %s", role, p.cmd)
		}
	}
	want := map[string]int{
		"gpu01/nats": 1, "gpu02/nats": 1, "gpu03/nats": 1,
		"gpu01/learner": 1, "gpu01/replay": 1, "gpu01/verifier": 1,
		"gpu02/actor": 4, "gpu03/actor": 4, "cpu07/verifier": 3,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%s: %d processes, want %d", k, count[k], n)
		}
	}
	for k := range count {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected process %s", k)
		}
	}
	// Every planned process is launched as an srun step on its node, and
	// the NATS nodes are awaited before the roles start.
	runs := regexp.MustCompile(`(?m)^run: srun .* -w (\S+) .*$`).FindAllStringSubmatch(out, -1)
	if len(runs) != len(plan) {
		t.Errorf("%d srun steps for %d planned processes", len(runs), len(plan))
	}
	waited := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "wait: "):
			waited = true
		case strings.HasPrefix(l, "run: srun"):
			if isServer := strings.Contains(l, " exgrpo server "); isServer == waited {
				t.Errorf("launch order: NATS nodes first, then a health wait, then the roles; got %q (waited=%v)", l, waited)
			}
		}
	}
	if !strings.Contains(out, "dry run: nothing was started") {
		t.Error("dry run did not say it started nothing")
	}
}

// TestSSHDryRun checks the ssh launcher's plan for the example hosts file
// and that a dry run touches no host.
func TestSSHDryRun(t *testing.T) {
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, root, []string{"EXGRPO_SSH=false"}, filepath.Join(root, "deploy", "launch-ssh.sh"),
		"-H", filepath.Join(root, "deploy", "hosts.example"), "--run", "demo", "--dry-run", "start")
	if err != nil {
		t.Fatal(err)
	}
	plan := parsePlan(t, out)
	actors := map[string]int{}
	nats := 0
	for _, p := range plan {
		switch {
		case p.name == "nats":
			nats++
		case strings.HasPrefix(p.name, "actor-"):
			actors[p.host]++
			if p.env != "CUDA_VISIBLE_DEVICES="+strings.TrimPrefix(p.name, "actor-") {
				t.Errorf("%s on %s: env %s", p.name, p.host, p.env)
			}
		}
	}
	if nats != 3 || actors["gpu0"] != 8 || actors["gpu1"] != 8 || len(actors) != 2 {
		t.Errorf("plan: %d NATS nodes, actors %v; want 3 and 8 per GPU host", nats, actors)
	}
	if !strings.Contains(out, "dry run: nothing was started") || !strings.Contains(out, "--- false gpu0 sh -s") {
		t.Errorf("dry run output unexpected:\n%s", tail(out, 3000))
	}
	// A broken hosts file is refused with a reason.
	bad := filepath.Join(t.TempDir(), "hosts")
	writeFile(t, bad, "n1 nats,actor,wizard 0\n")
	if out, err := run(ctx, root, nil, filepath.Join(root, "deploy", "launch-ssh.sh"), "-H", bad, "--dry-run", "plan"); err == nil || !strings.Contains(out, "unknown role 'wizard'") {
		t.Errorf("bad role accepted or unexplained: %v\n%s", err, out)
	}
}

// srunStandIn stands in for Slurm's srun on a machine without Slurm: it drops
// the step options, applies --export=ALL,VAR=value and runs the command on
// this machine (every "node" is this machine).
const srunStandIn = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --export=*) e=${1#--export=}; old=$IFS; IFS=,
      for kv in $e; do case $kv in ALL) ;; *) export "$kv" ;; esac; done; IFS=$old ;;
    -w|-N|-n) shift ;;
    -*) ;;
    *) break ;;
  esac
  shift
done
exec "$@"
`

// TestSlurmBatchRuns executes deploy/slurm/exgrpo.sbatch for real on a
// one-node "allocation" (this machine) with a stand-in srun: the NATS node,
// learner, replay, a verifier and an actor start as steps, the job ends when
// the learner has done its steps, exits with the learner's status, and
// leaves no process behind.
func TestSlurmBatchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a short training run")
	}
	dir := t.TempDir()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "exgrpo")
	if out, err := run(ctx, root, nil, "go", "build", "-o", bin, "./cmd/exgrpo"); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	shims := filepath.Join(dir, "shims")
	if err := os.MkdirAll(shims, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shims, "srun"), []byte(srunStandIn), 0o755); err != nil {
		t.Fatal(err)
	}
	authDir := filepath.Join(dir, "auth")
	if _, err := run(ctx, "", nil, bin, "auth", "init", "--out", authDir, "--run", "slurmci"); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	work := filepath.Join(dir, "work")
	const steps = 4
	env := []string{
		"PATH=" + shims + string(os.PathListSeparator) + os.Getenv("PATH"),
		"SLURM_JOB_NODELIST=localhost", "SLURM_JOB_ID=77", "SLURM_SUBMIT_DIR=" + dir,
		"EXGRPO_BIN=" + bin, "EXGRPO_RUN=slurmci", "EXGRPO_WORKDIR=" + work, "EXGRPO_STORE=" + filepath.Join(dir, "store"),
		"EXGRPO_AUTH=" + authDir, "EXGRPO_METRICS_BASE=0",
		"EXGRPO_NATS_PORT=" + strconv.Itoa(ports[0]), "EXGRPO_CLUSTER_PORT=" + strconv.Itoa(ports[1]),
		"EXGRPO_MONITOR_PORT=" + strconv.Itoa(ports[2]),
		"EXGRPO_TRAIN_ARGS=--steps " + strconv.Itoa(steps) + " --k 4 --batch 4 --minibatches 1 --max-new 24 --train-questions 100 " +
			"--heldout 8 --eval-samples 1 --eval-every 100000 --pretrain-steps 20",
	}
	out, err := run(ctx, root, env, "bash", filepath.Join(root, "deploy", "slurm", "exgrpo.sbatch"))
	logs := filepath.Join(work, "logs")
	if err != nil {
		for _, n := range []string{"nats", "learner", "replay", "actor-0", "verifier-0"} {
			b, _ := os.ReadFile(filepath.Join(logs, "localhost-"+n+".log"))
			t.Logf("--- %s (tail)\n%s", n, tail(string(b), 2000))
		}
		t.Fatalf("batch script: %v\n%s", err, out)
	}
	if !strings.Contains(out, "learner exited with 0") {
		t.Errorf("batch output does not report the learner's exit:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(logs, "localhost-learner.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"msg":"step"`); n != steps {
		t.Errorf("learner log has %d step lines, want %d", n, steps)
	}
	for _, n := range []string{"nats", "replay", "actor-0", "verifier-0"} {
		if _, err := os.Stat(filepath.Join(logs, "localhost-"+n+".log")); err != nil {
			t.Errorf("no log for %s: %v", n, err)
		}
	}
	if left := processesRunning(bin); len(left) > 0 {
		t.Errorf("processes of %s left after the job: %v", bin, left)
	}
}

// TestPlanRejects: hosts files the plan cannot run are refused with a reason.
func TestPlanRejects(t *testing.T) {
	root := repoRoot(t)
	cases := []struct{ name, hosts, want string }{
		{"no nats", "a learner,replay,actor 0\n", "no host has the nats role"},
		{"two learners", "a nats,learner,replay 0\nb learner,actor 1\n", "exactly one host must have the learner role (found 2)"},
		{"no replay", "a nats,learner,actor 0\n", "exactly one host must have the replay role (found 0)"},
		{"bad gpu count", "a nats,learner,replay,actor x\n", "GPU count 'x' is not a number"},
		{"unknown option", "a nats,learner,replay gpus=2\n", "GPU count 'gpus=2'"},
		{"unknown key", "a nats,learner,replay 0 color=red\n", "unknown option 'color=red'"},
		{"empty", "# nothing\n", "no hosts"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			hosts := filepath.Join(t.TempDir(), "hosts")
			writeFile(t, hosts, c.hosts)
			out, err := run(ctx, root, nil, filepath.Join(root, "deploy", "launch-ssh.sh"), "-H", hosts, "plan")
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("want a refusal saying %q, got err=%v\n%s", c.want, err, out)
			}
		})
	}
}
