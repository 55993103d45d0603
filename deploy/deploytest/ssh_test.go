package deploytest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/auth"
	"github.com/exgrpo/exgrpo/bus"
	"go.uber.org/zap"
)

// sshd finds Debian's sshd (openssh-server, installed by .ci/run).
func sshd() string {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		return p
	}
	return ""
}

// startSSHD runs sshd on a free loopback port with a throwaway host key,
// accepting only a throwaway client key, and returns the ssh command line
// that logs in with it.
func startSSHD(t *testing.T, dir string) string {
	t.Helper()
	bin := sshd()
	if bin == "" {
		t.Skip("sshd not installed (Debian: apt-get install openssh-server), skipping the ssh launcher test")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh client not installed, skipping the ssh launcher test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, k := range []string{"hostkey", "id"} {
		if _, err := run(ctx, "", nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	}
	port := freePorts(t, 1)[0]
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
`, port, filepath.Join(dir, "hostkey"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	})
	ssh := fmt.Sprintf("ssh -p %d -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10",
		port, filepath.Join(dir, "id"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := run(ctx, "", nil, "sh", "-c", ssh+" 127.0.0.1 echo ok")
		if err == nil && strings.TrimSpace(out) == "ok" {
			return ssh
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Fatalf("cannot log in through sshd: %v\nsshd log:\n%s", err, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestSSHLauncher starts a short run through deploy/launch-ssh.sh on an
// sshd on loopback (NATS node, replay, learner, a verifier and an actor, all
// with per-role credentials and the built-in CPU policy), checks that the
// steps complete with a clean ledger, then stops it and checks that no
// process it started is left.
func TestSSHLauncher(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a short training run")
	}
	dir := t.TempDir()
	ssh := startSSHD(t, dir)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "exgrpo")
	if out, err := run(ctx, root, nil, "go", "build", "-o", bin, "./cmd/exgrpo"); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const runID = "sshci"
	authDir := filepath.Join(dir, "auth")
	if _, err := run(ctx, "", nil, bin, "auth", "init", "--out", authDir, "--run", runID); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("# loopback\n127.0.0.1  nats,learner,replay,verifier,actor  0  actors=1 verifiers=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	work := filepath.Join(dir, "work")
	const steps = 6
	train := "--steps " + strconv.Itoa(steps) + " --k 4 --batch 4 --minibatches 1 --max-new 24 --train-questions 100 " +
		"--heldout 8 --eval-samples 1 --eval-every 100000 --pretrain-steps 20"
	launcher := filepath.Join(root, "deploy", "launch-ssh.sh")
	args := []string{"-H", hosts, "--run", runID, "--workdir", work, "--bin", bin, "--auth", authDir, "--ssh", ssh,
		"--nats-port", strconv.Itoa(ports[0]), "--cluster-port", strconv.Itoa(ports[1]), "--monitor-port", strconv.Itoa(ports[2]),
		"--metrics-base", "0", "--train", train}
	launch := func(ctx context.Context, cmd string) (string, error) {
		return run(ctx, root, nil, launcher, append(append([]string{}, args...), cmd)...)
	}
	logs := func() {
		for _, n := range []string{"nats", "replay", "learner", "verifier-0", "actor-0"} {
			b, _ := os.ReadFile(filepath.Join(work, "logs", n+".log"))
			t.Logf("--- %s.log (tail)\n%s", n, tail(string(b), 2500))
		}
	}
	stopped := false
	stop := func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer scancel()
		if out, err := launch(sctx, "stop"); err != nil {
			t.Errorf("launch-ssh.sh stop: %v\n%s", err, out)
		} else {
			t.Logf("stop:\n%s", out)
		}
		stopped = true
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	out, err := launch(ctx, "start")
	if err != nil {
		logs()
		t.Fatalf("launch-ssh.sh start: %v\n%s", err, out)
	}
	pids := readPids(t, filepath.Join(work, "pids"))
	if len(pids) != 5 {
		t.Fatalf("want 5 processes started (nats, replay, learner, verifier-0, actor-0), pid files: %v\n%s", pids, out)
	}

	// The ledger, read with the inspect credentials.
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	nc, err := bus.Connect(cctx, bus.ConnConfig{URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]),
		CredsFile: auth.CredsFile(authDir, auth.Inspect), Name: "ssh-test"}, zap.NewNop())
	ccancel()
	if err != nil {
		logs()
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the ledger's own cleanup (LIFO)
	led := followLedger(ctx, t, nc, runID)
	if !led.waitSteps(steps, 8*time.Minute, logs) {
		t.Fatalf("fewer than %d steps completed through the ssh launcher: %s", steps, led.status())
	}
	if n := led.check(t); n == 0 {
		t.Error("no trajectory ids in the ledger")
	}
	status, err := launch(ctx, "status")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", status)
	led.stop()
	nc.Close()

	stop()
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) still running after stop", name, pid)
		}
	}
	if left := processesRunning(bin); len(left) > 0 {
		t.Errorf("processes of %s left after stop: %v", bin, left)
	}
	if left := readPids(t, filepath.Join(work, "pids")); len(left) > 0 {
		t.Errorf("pid files left after stop: %v", left)
	}
}

// readPids maps a pid directory's <name>.pid files to their pids.
func readPids(t *testing.T, dir string) map[string]int {
	t.Helper()
	m := map[string]int{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pid") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		m[strings.TrimSuffix(e.Name(), ".pid")] = pid
	}
	return m
}

// processesRunning lists the pids of live processes executing bin (by
// /proc/<pid>/exe), zombies excluded.
func processesRunning(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != bin {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
