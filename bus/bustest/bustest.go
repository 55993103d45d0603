// Package bustest starts a real embedded JetStream server for tests: a
// random port, a t.TempDir() store, shut down by t.Cleanup.
package bustest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Server starts an embedded server on a random port with its store in a
// temporary directory.
func Server(t testing.TB) *bus.Server {
	t.Helper()
	cfg := bus.DefaultServerConfig(t.TempDir())
	cfg.Port = -1
	s, err := bus.StartServer(cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Conn connects to s; closed by t.Cleanup.
func Conn(t testing.TB, s *bus.Server, name string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), Name: name}, zap.NewNop())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Open connects to s and opens the run's topology with cfg.
func Open(t testing.TB, s *bus.Server, cfg bus.Config) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, Conn(t, s, "test"), cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("open bus: %v", err)
	}
	return b
}

// Publisher is a publisher of b with the default settings, closed when the
// test ends.
func Publisher(t testing.TB, b *bus.Bus) *bus.Publisher {
	t.Helper()
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return pub
}

// Eventually polls cond every 10ms until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Cluster starts n embedded nodes (named n1..nn) joined by routes on
// loopback, every node with the full route list as in the compose cluster,
// each shut down by t.Cleanup. Streams at n replicas need Open's retries
// while the meta leader is elected.
func Cluster(t testing.TB, n int) []*bus.Server {
	t.Helper()
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		ports[i] = FreePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
	}
	nodes := make([]*bus.Server, n)
	errs := make(chan error, n)
	for i := range nodes {
		dir := t.TempDir()
		go func() {
			cfg := bus.DefaultServerConfig(dir)
			cfg.Port, cfg.ServerName, cfg.ClusterName = -1, fmt.Sprintf("n%d", i+1), "exgrpo-test"
			cfg.ClusterHost, cfg.ClusterPort, cfg.Routes = "127.0.0.1", ports[i], routes
			s, err := bus.StartServer(cfg, zap.NewNop())
			nodes[i] = s
			errs <- err
		}()
	}
	var startErr error
	for range nodes {
		if err := <-errs; err != nil {
			startErr = err
		}
	}
	for _, s := range nodes {
		if s != nil {
			t.Cleanup(s.Shutdown)
		}
	}
	if startErr != nil {
		t.Fatal(startErr)
	}
	return nodes
}

// FreePort is a loopback TCP port that was free a moment ago, for a
// process or node that must be told its port before it starts.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// URLs is the comma-separated client URL list of nodes, as roles get it.
func URLs(nodes []*bus.Server) string {
	var us []string
	for _, s := range nodes {
		us = append(us, s.ClientURL())
	}
	return strings.Join(us, ",")
}

// OpenCluster connects to nodes (every client URL, so that the client can
// move to another node) with log and opens the run's topology with cfg; the
// connection is closed by t.Cleanup.
func OpenCluster(ctx context.Context, t testing.TB, nodes []*bus.Server, name string, cfg bus.Config, log *zap.Logger) *bus.Bus {
	t.Helper()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: URLs(nodes), Name: name}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := bus.Open(ctx, nc, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// NodeLossRounds runs a node-loss test f as subtests 0, 1, ...:
// EXGRPO_NODE_LOSS_ROUNDS times (once when unset), to repeat a rare stall.
// Skipped with -short, since f starts a 3-node cluster.
func NodeLossRounds(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	rounds := 1
	if s := os.Getenv("EXGRPO_NODE_LOSS_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			t.Fatalf("EXGRPO_NODE_LOSS_ROUNDS=%q: want a count of at least 1", s)
		}
	}
	for r := range rounds {
		t.Run(fmt.Sprint(r), f)
	}
}

// LogDump is the observed log, one entry a line, for a failure message.
func LogDump(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}
