package deploytest

import (
	"bytes"
	"context"
	"fmt"
	"github.com/exgrpo/exgrpo/replay"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// repoRoot is the module root (this package lives in deploy/deploytest).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// run executes a command with a deadline and returns its combined output.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 4000))
	}
	return out.String(), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// ledger follows a run's CONTROL stream (the learner's step reports). It
// polls: every two seconds a fresh ordered consumer (read permissions only)
// reads from the next stream sequence to the end. A long-lived consumer
// can sit on a NATS node that the test kills; a fresh one per poll lands on
// a live node.
type ledger struct {
	mu      sync.Mutex
	reports []wire.StepReport // the ledger: folded through lin (wire.Lineage)
	lin     replay.Lineage
	bad     []string
	lastErr error
	next    uint64 // next stream sequence to read
	// stop ends the polling and waits for it; idempotent. Call it before
	// closing the connection (also registered with t.Cleanup).
	stop func()
}

func followLedger(ctx context.Context, t *testing.T, nc *nats.Conn, run string) *ledger {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream := "EXGRPO_" + strings.ToUpper(run) + "_CONTROL"
	l := &ledger{next: 1, lin: replay.NewLineage()}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			err := l.poll(pctx, js, stream)
			l.mu.Lock()
			l.lastErr = err
			l.mu.Unlock()
			select {
			case <-pctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	var once sync.Once
	l.stop = func() { once.Do(func() { stop(); <-done }) }
	t.Cleanup(l.stop)
	return l
}

// poll reads CONTROL from l.next to its end.
func (l *ledger) poll(ctx context.Context, js jetstream.JetStream, stream string) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(octx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: l.next,
		// A reset retries forever by default, ignoring the context: a
		// closed connection or a lost node would hang the poll.
		MaxResetAttempts: 2})
	if err != nil {
		return err // the learner may not have declared the topology yet
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			var r wire.StepReport
			l.mu.Lock()
			if strings.HasSuffix(m.Subject(), ".control.lineage") {
				// A lineage record: a restarted learner (docker restarts
				// it after a lost node) may take reports out of the ledger.
				var rec wire.Lineage
				if err := wire.Decode(m.Data(), &rec); err != nil {
					l.bad = append(l.bad, err.Error())
				} else if d := l.lin.Record(&rec); d.Rewind {
					keep := l.reports[:0]
					for _, r := range l.reports {
						if r.Step <= d.To {
							keep = append(keep, r)
						}
					}
					l.reports = keep
				}
			} else if err := wire.Decode(m.Data(), &r); err != nil {
				l.bad = append(l.bad, err.Error())
			} else if l.lin.Report(&r).Fold {
				l.reports = append(l.reports, r)
			}
			l.next = meta.Sequence.Stream + 1
			l.mu.Unlock()
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// status says how far the ledger got, for failure messages.
func (l *ledger) status() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d step reports read, last read error: %v", len(l.reports), l.lastErr)
}

// steps is the number of step reports seen so far.
func (l *ledger) steps() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reports)
}

// waitSteps polls until at least n reports arrived or the deadline passes.
func (l *ledger) waitSteps(n int, d time.Duration, onTimeout func()) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if l.steps() >= n {
			return true
		}
		time.Sleep(time.Second)
	}
	if onTimeout != nil {
		onTimeout()
	}
	return false
}

// check verifies the ledger: steps 0..n-1 each once; in every group, the
// fresh trajectory ids are <task>/0..m-1 of one task (m = K, or K-1 next to
// a replayed trajectory) so none is missing; no fresh id appears twice in
// the whole run; and a replayed id is one that an earlier step trained on
// fresh. It returns the number of trajectory ids checked.
func (l *ledger) check(t *testing.T) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) > 0 {
		t.Errorf("undecodable step reports: %v", l.bad)
	}
	fresh := map[string]int64{} // id -> step that generated it
	checked := 0
	for i, r := range l.reports {
		if r.Step != int64(i) {
			t.Errorf("report %d is for step %d: steps missing or duplicated", i, r.Step)
			continue
		}
		for _, g := range r.Groups {
			ids := g.TrajectoryIDs
			if len(ids) != g.Size || len(g.Rewards) != g.Size {
				t.Errorf("step %d question %s: %d ids and %d rewards for a group of %d", r.Step, g.QuestionID, len(ids), len(g.Rewards), g.Size)
				continue
			}
			if g.Replayed {
				if len(ids) == 0 || ids[0] != g.ReplayedID {
					t.Errorf("step %d question %s: replayed id %q is not first in %v", r.Step, g.QuestionID, g.ReplayedID, ids)
					continue
				}
				if st, ok := fresh[g.ReplayedID]; !ok || st >= r.Step {
					t.Errorf("step %d replays %s, which no earlier step generated", r.Step, g.ReplayedID)
				}
				ids = ids[1:]
			}
			prefix, seen := "", make([]bool, len(ids))
			for j, id := range ids {
				task, idx, ok := groupSlot(id)
				if j == 0 {
					prefix = task
				}
				if !ok || task != prefix || idx < 0 || idx >= len(ids) || seen[idx] {
					t.Errorf("step %d question %s: fresh ids %v are not %s/0..%d", r.Step, g.QuestionID, ids, prefix, len(ids)-1)
					break
				}
				seen[idx] = true
			}
			for _, id := range ids {
				if st, dup := fresh[id]; dup {
					t.Errorf("trajectory %s trained fresh twice (steps %d and %d)", id, st, r.Step)
				}
				fresh[id] = r.Step
				checked++
			}
		}
	}
	return checked
}

// groupSlot parses a fresh trajectory id: "<task>/<index>", or
// "<task>~<index>.<attempt>/0" for a rollout the learner asked for again
// (wire.RetryTaskID).
func groupSlot(id string) (task string, idx int, ok bool) {
	k := strings.LastIndexByte(id, '/')
	if k < 0 {
		return "", 0, false
	}
	task, tail := id[:k], id[k+1:]
	if base, rest, retry := strings.Cut(task, "~"); retry && tail == "0" {
		n, _, _ := strings.Cut(rest, ".")
		task, tail = base, n
	}
	idx, err := strconv.Atoi(tail)
	return task, idx, err == nil
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
