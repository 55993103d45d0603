package deploytest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The GPU launch path, exercised without GPUs: stand-in programs for
// exgrpo, vllm, SGLang's Python, torchrun, srun and ssh record how they
// were started (arguments, environment, time) and stopped, serve the
// health endpoints the launchers poll, and check at start what must
// already be true (an actor's engine answers /health; the learner's
// trainer socket exists). The tests read the records back.

// standInLib is sourced by every stand-in: rec appends one record line;
// serve DIR PORT FILE answers GET /FILE on 127.0.0.1:PORT until TERM.
const standInLib = `
rec() { echo "$1 $(date +%s.%N) $2" >>"$STANDIN_LOG"; }
child=
trap 'rec stop "$me"; [ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM INT
serve() {
  mkdir -p "$1" && : >"$1/$3"
  /usr/bin/python3 -m http.server "$2" --bind 127.0.0.1 --directory "$1" >/dev/null 2>&1 &
  child=$!
  wait "$child"
}
hang() { sleep 100000 & child=$!; wait "$child"; }
arg() { # arg FLAG ARGS...: the value after FLAG
  f=$1; shift
  while [ $# -gt 1 ]; do [ "$1" = "$f" ] && { echo "$2"; return; }; shift; done
}
`

const exgrpoStandIn = `#!/bin/sh
. "$STANDIN_LIB"
if [ "$1" = health ]; then
  exec /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$3"
fi
me="exgrpo-$1"
[ "$1" = actor ] && me="exgrpo-actor-$(arg --id "$@")"
rec start "$me | $* | CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"
case "$1" in
  server) serve "$STANDIN_DIR/nats-www" "$(arg --http-port "$@")" healthz ;;
  actor)
    url=$(arg --engine-url "$@")
    if [ -n "$url" ] && ! /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url/health" 2>/dev/null; then
      rec fail "$me: engine $url not healthy at actor start"; exit 1
    fi
    hang ;;
  learner)
    sock=$(arg --torch-socket "$@")
    if [ -n "$sock" ] && [ ! -S "$sock" ]; then rec fail "$me: trainer socket $sock missing at learner start"; exit 1; fi
    if [ -n "$STANDIN_LEARNER_EXIT" ]; then sleep 2; rec exit "$me"; exit 0; fi
    hang ;;
  *) hang ;;
esac
`

// engineStandIn is vllm ("vllm serve MODEL --port P ...") and SGLang's
// Python ("python3 -m sglang.launch_server --port P ..."): a second of
// start-up, then /health.
const engineStandIn = `#!/bin/sh
. "$STANDIN_LIB"
port=$(arg --port "$@")
me="engine-$port"
rec start "$me | $(basename "$0") $* | CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} VLLM_SERVER_DEV_MODE=${VLLM_SERVER_DEV_MODE:-}"
sleep 1
rec ready "$me"
serve "$STANDIN_DIR/engine-$port" "$port" health
`

// torchrunStandIn listens on the worker's socket after a second.
const torchrunStandIn = `#!/bin/sh
. "$STANDIN_LIB"
me=trainer
sock=$(arg --listen "$@")
rec start "$me | torchrun $* | CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} PYTHONPATH=${PYTHONPATH:-}"
sleep 1
rm -f "$sock"
/usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
time.sleep(100000)' "$sock" &
child=$!
wait "$child"
`

// sshStandIn runs the launcher's script on this machine: "ssh HOST sh -s".
const sshStandIn = `#!/bin/sh
shift
exec "$@"
`

type standIns struct {
	dir, shims, log string
	env             []string
}

func newStandIns(t *testing.T) *standIns {
	dir := t.TempDir()
	s := &standIns{dir: dir, shims: filepath.Join(dir, "shims"), log: filepath.Join(dir, "standin.log")}
	if err := os.MkdirAll(s.shims, 0o755); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "standin-lib.sh")
	writeFile(t, lib, standInLib)
	for name, body := range map[string]string{"exgrpo": exgrpoStandIn, "vllm": engineStandIn, "sglang-python": engineStandIn,
		"torchrun": torchrunStandIn, "srun": srunStandIn, "ssh": sshStandIn} {
		if err := os.WriteFile(filepath.Join(s.shims, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.env = []string{"PATH=" + s.shims + string(os.PathListSeparator) + os.Getenv("PATH"),
		"STANDIN_LIB=" + lib, "STANDIN_LOG=" + s.log, "STANDIN_DIR=" + dir,
		"EXGRPO_VLLM=" + filepath.Join(s.shims, "vllm"), "EXGRPO_SGLANG_PYTHON=" + filepath.Join(s.shims, "sglang-python"),
		"EXGRPO_TORCHRUN=" + filepath.Join(s.shims, "torchrun"), "EXGRPO_MODEL=/models/Qwen2.5-Math-7B",
		"EXGRPO_TRAINER_SOCKET=" + filepath.Join(dir, "trainer.sock")}
	t.Cleanup(func() { killLeft(t, dir) })
	return s
}

// record is one line of the stand-ins' log.
type record struct {
	kind string // start, ready, stop, exit, fail
	at   float64
	who  string // the process, e.g. exgrpo-learner, engine-8001, trainer
	rest string // start: "| args | env"
}

func (s *standIns) records(t *testing.T) []record {
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatalf("no stand-in records: %v", err)
	}
	var out []record
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, " ", 3)
		if len(f) < 3 {
			continue
		}
		at, _ := strconv.ParseFloat(f[1], 64)
		who, rest, _ := strings.Cut(f[2], " ")
		out = append(out, record{f[0], at, who, rest})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// killLeft ends any stand-in still running (a failed test) and reports it.
func killLeft(t *testing.T, dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			continue
		}
		t.Errorf("process left after teardown: %d %s", pid, strings.ReplaceAll(string(b), "\x00", " "))
		p, _ := os.FindProcess(pid)
		_ = p.Kill()
	}
}

// kindRank orders processes as the launchers must start them (and, the
// other way round, stop them).
func kindRank(who string) int {
	switch {
	case who == "exgrpo-server":
		return 0
	case who == "exgrpo-replay", who == "exgrpo-inspect", who == "exgrpo-verifier":
		return 1
	case strings.HasPrefix(who, "engine-"):
		return 2
	case strings.HasPrefix(who, "exgrpo-actor-"):
		return 3
	case who == "trainer":
		return 4
	case who == "exgrpo-learner":
		return 5
	}
	return -1
}

// checkOrder: every start of a later kind comes after every start (and,
// for engines and the trainer, every readiness) of earlier kinds; stops run
// the other way: the learner and trainer first, NATS last.
func checkOrder(t *testing.T, recs []record, wantStops bool) {
	t.Helper()
	lastStart := map[int]float64{}
	for _, r := range recs {
		if r.kind == "fail" {
			t.Errorf("stand-in check failed: %s %s", r.who, r.rest)
		}
		k := kindRank(r.who)
		if r.kind == "start" || r.kind == "ready" {
			for earlier := k + 1; earlier <= 5; earlier++ {
				if at, ok := lastStart[earlier]; ok && at > r.at {
					t.Errorf("%s %s at %.3f before a later kind (rank %d) started", r.who, r.kind, r.at, earlier)
				}
			}
			if r.at > lastStart[k] {
				lastStart[k] = r.at
			}
		}
	}
	if !wantStops {
		return
	}
	stopRank := func(who string) int { // learner/trainer 0, actors 1, engines/verifiers/replay 2, NATS 3
		switch k := kindRank(who); k {
		case 5, 4:
			return 0
		case 3:
			return 1
		case 0:
			return 3
		default:
			return 2
		}
	}
	prev, prevWho := -1, ""
	stopped := map[string]bool{}
	for _, r := range recs {
		if r.kind != "stop" && r.kind != "exit" {
			continue
		}
		stopped[r.who] = true
		if k := stopRank(r.who); k < prev {
			t.Errorf("teardown order: %s stopped after %s", r.who, prevWho)
		} else {
			prev, prevWho = k, r.who
		}
	}
	for _, r := range recs {
		if r.kind == "start" && !stopped[r.who] {
			t.Errorf("%s was started and never stopped", r.who)
		}
	}
}

// startsOf returns the start records whose process matches re.
func startsOf(recs []record, re string) []record {
	var out []record
	for _, r := range recs {
		if r.kind == "start" && regexp.MustCompile(re).MatchString(r.who) {
			out = append(out, r)
		}
	}
	return out
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q: %s", what, sub, s)
		}
	}
}

// consecutiveFreePorts returns a base port with n free ports from it.
func consecutiveFreePorts(t *testing.T, n int) int {
	for try := 0; try < 50; try++ {
		base := freePorts(t, 1)[0]
		ok := true
		var ls []net.Listener
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no consecutive free ports")
	return 0
}

// TestGPUSlurmStandIns runs deploy/slurm/exgrpo.sbatch for real on a
// one-node "allocation" of 8 GPUs with stand-ins: the trainer on GPUs 0-3
// (torchrun, FSDP, the worker's socket), two vLLM engines of tensor
// parallelism 2 on GPUs 4-5 and 6-7 with the flags GPU.md lists, an actor
// beside each, started only once its engine answers /health, the learner
// last once the socket listens; the job ends with the learner and stops
// every step, learner and trainer first, NATS last.
func TestGPUSlurmStandIns(t *testing.T) {
	s := newStandIns(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ports := freePorts(t, 3)
	ebase := consecutiveFreePorts(t, 2)
	env := append(s.env, "SLURM_JOB_NODELIST=localhost", "SLURM_JOB_ID=88", "SLURM_SUBMIT_DIR="+s.dir,
		"EXGRPO_BIN="+filepath.Join(s.shims, "exgrpo"), "EXGRPO_RUN=gpuci", "EXGRPO_WORKDIR="+filepath.Join(s.dir, "work"),
		"EXGRPO_STORE="+filepath.Join(s.dir, "store"), "EXGRPO_METRICS_BASE=0",
		"EXGRPO_NATS_PORT="+strconv.Itoa(ports[0]), "EXGRPO_CLUSTER_PORT="+strconv.Itoa(ports[1]), "EXGRPO_MONITOR_PORT="+strconv.Itoa(ports[2]),
		"EXGRPO_GPUS_PER_NODE=8", "EXGRPO_TRAINER_GPUS=4", "EXGRPO_ENGINE=vllm", "EXGRPO_TP=2",
		"EXGRPO_ENGINE_PORT="+strconv.Itoa(ebase), "EXGRPO_MAX_LOGPROBS=8", "STANDIN_LEARNER_EXIT=1",
		"EXGRPO_TRAIN_ARGS=--steps 3 --k 8")
	out, err := run(ctx, root, env, "bash", filepath.Join(root, "deploy", "slurm", "exgrpo.sbatch"))
	if err != nil {
		t.Fatalf("batch script: %v\n%s", err, out)
	}
	mustContain(t, "batch output", out, "learner exited with 0", "engine-0 on localhost ready", "trainer on localhost ready")
	recs := s.records(t)
	checkOrder(t, recs, true)
	engines := startsOf(recs, `^engine-`)
	if len(engines) != 2 {
		t.Fatalf("%d engines started, want 2:\n%s", len(engines), out)
	}
	for i, e := range engines {
		port := ebase + i
		if e.who != fmt.Sprintf("engine-%d", port) {
			e = startsOf(recs, fmt.Sprintf("^engine-%d$", port))[0]
		}
		mustContain(t, "engine", e.rest, "vllm serve /models/Qwen2.5-Math-7B", fmt.Sprintf("--port %d", port), "--tensor-parallel-size 2",
			"--logprobs-mode processed_logprobs", "--max-logprobs 8", "--dtype bfloat16", "--max-model-len 9216",
			"VLLM_SERVER_DEV_MODE=1", fmt.Sprintf("CUDA_VISIBLE_DEVICES=%d,%d", 4+2*i, 5+2*i))
	}
	if actors := startsOf(recs, `^exgrpo-actor-`); len(actors) != 2 {
		t.Fatalf("%d actors, want 2", len(actors))
	}
	for i := range 2 { // actor i beside engine i
		a := startsOf(recs, fmt.Sprintf(`^exgrpo-actor-.*-a%d$`, i))[0]
		mustContain(t, "actor", a.rest, "--engine vllm", fmt.Sprintf("--engine-url http://127.0.0.1:%d", ebase+i),
			fmt.Sprintf("--nats nats://localhost:%d", ports[0]))
	}
	tr := startsOf(recs, `^trainer$`)
	if len(tr) != 1 {
		t.Fatalf("%d trainers, want 1", len(tr))
	}
	mustContain(t, "torchrun", tr[0].rest, "--nnodes 1 --node-rank 0 --nproc-per-node 4", "-m torchworker --model /models/Qwen2.5-Math-7B",
		"--listen "+filepath.Join(s.dir, "trainer.sock"), "--device cuda --fsdp", "CUDA_VISIBLE_DEVICES=0,1,2,3",
		"PYTHONPATH="+filepath.Join(root, "trainer", "torch"))
	l := startsOf(recs, `^exgrpo-learner$`)
	if len(l) != 1 {
		t.Fatalf("%d learners, want 1", len(l))
	}
	mustContain(t, "learner", l[0].rest, "--trainer torch --torch-socket "+filepath.Join(s.dir, "trainer.sock"), "--steps 3 --k 8")
	if n := len(startsOf(recs, `^exgrpo-server$`)); n != 1 {
		t.Errorf("%d NATS nodes on one node, want 1", n)
	}
}

// sshLaunch is deploy/launch-ssh.sh for one host of the stand-ins: a hosts
// file of hostLine, engines on engines consecutive free ports from ebase,
// the learner's --train flags steps, and env extra; launch(cmd) runs it
// with cmd and fails the test on an error. work is its --workdir.
func (s *standIns) sshLaunch(t *testing.T, ctx context.Context, root, hostLine string, engines int, steps string,
	extra ...string) (launch func(cmd string) string, work string, ebase int) {
	t.Helper()
	ports := freePorts(t, 3)
	ebase = consecutiveFreePorts(t, engines)
	hosts := filepath.Join(s.dir, "hosts")
	writeFile(t, hosts, hostLine)
	env := append(append(s.env, "EXGRPO_ENGINE_PORT="+strconv.Itoa(ebase)), extra...)
	work = filepath.Join(s.dir, "work")
	args := []string{"-H", hosts, "--run", "sshgpu", "--workdir", work, "--bin", filepath.Join(s.shims, "exgrpo"),
		"--ssh", filepath.Join(s.shims, "ssh"), "--nats-port", strconv.Itoa(ports[0]), "--cluster-port", strconv.Itoa(ports[1]),
		"--monitor-port", strconv.Itoa(ports[2]), "--metrics-base", "0", "--train", steps, "--ready-timeout", "60"}
	launch = func(cmd string) string {
		out, err := run(ctx, root, env, filepath.Join(root, "deploy", "launch-ssh.sh"), append(append([]string{}, args...), cmd)...)
		if err != nil {
			t.Fatalf("launch-ssh.sh %s: %v\n%s", cmd, err, out)
		}
		return out
	}
	return launch, work, ebase
}

// TestGPUSSHStandIns drives deploy/launch-ssh.sh start, status and stop on
// one host (an ssh stand-in runs the scripts here) with SGLang engines:
// the commands, flags and environment, the start order with its readiness
// waits, and a teardown that leaves nothing.
func TestGPUSSHStandIns(t *testing.T) {
	s := newStandIns(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	launch, work, ebase := s.sshLaunch(t, ctx, root,
		"127.0.0.1  nats,learner,replay,verifier,actor  4  engine=sglang trainer=2 verifiers=2\n", 2, "--steps 5")
	dry := launch("plan")
	plan := parsePlan(t, dry)
	// nats, replay, 2 verifiers, (4 GPUs - 2 for the trainer) / tp 1 = 2
	// engines and 2 actors, the trainer, the learner.
	if len(plan) != 10 {
		t.Errorf("plan of %d processes, want 10:\n%s", len(plan), dry)
	}
	out := launch("start")
	mustContain(t, "start output", out, ": engine-0 ready", ": engine-1 ready", ": trainer ready", ": nats ready", "127.0.0.1: started learner")
	if st := launch("status"); strings.Count(st, " running pid ") != 10 {
		t.Errorf("status shows %d running, want 10:\n%s", strings.Count(st, " running pid "), st)
	}
	stop := launch("stop")
	recs := s.records(t)
	checkOrder(t, recs, true)
	engines := startsOf(recs, `^engine-`)
	if len(engines) != 2 {
		t.Fatalf("%d engines, want 2", len(engines))
	}
	for _, e := range engines {
		mustContain(t, "sglang", e.rest, "sglang-python -m sglang.launch_server --model-path /models/Qwen2.5-Math-7B", "--tp-size 1",
			"--context-length 9216", "--host 127.0.0.1")
	}
	for i, want := range []string{"CUDA_VISIBLE_DEVICES=2 ", "CUDA_VISIBLE_DEVICES=3 "} {
		e := startsOf(recs, fmt.Sprintf("^engine-%d$", ebase+i))
		if len(e) != 1 || !strings.Contains(e[0].rest+" ", want) {
			t.Errorf("engine %d: %v, want %s", i, e, want)
		}
	}
	for i := range 2 {
		a := startsOf(recs, fmt.Sprintf(`^exgrpo-actor-.*-a%d$`, i))
		if len(a) != 1 {
			t.Fatalf("actor %d started %d times", i, len(a))
		}
		mustContain(t, "actor", a[0].rest, "--engine sglang", fmt.Sprintf("--engine-url http://127.0.0.1:%d", ebase+i))
	}
	mustContain(t, "torchrun", startsOf(recs, `^trainer$`)[0].rest, "--nproc-per-node 2", "CUDA_VISIBLE_DEVICES=0,1")
	if left := readPids(t, filepath.Join(work, "pids")); len(left) > 0 {
		t.Errorf("pid files left after stop: %v\n%s", left, stop)
	}
}
