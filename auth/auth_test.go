package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const testRun = "t1"

// startServer writes a fresh bundle and starts an in-process server on a
// random port under its configuration.
func startServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	return startServerWith(t, dir, DefaultConfig(testRun)), dir
}

// startServerWith writes the bundle generated for cfg into dir and starts
// a JetStream server from its server.conf on a free loopback port.
func startServerWith(t *testing.T, dir string, cfg Config) *server.Server {
	t.Helper()
	b, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, ServerConfFile))
	if err != nil {
		t.Fatalf("generated config does not parse: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

func connect(t *testing.T, url, dir string, role Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserCredentials(CredsFile(dir, role)), nats.Name(string(role)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // violations are read via LastError
	if err != nil {
		t.Fatalf("%s connect: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// topology lays out the run's streams as package bus declares them (work
// queues, limits streams, KV, Object Store, the two shared consumers), using
// the learner's credentials: the learner may create and update everything
// of its run.
func topology(t *testing.T, nc *nats.Conn, js jetstream.JetStream, n runNames) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	for _, k := range bus.Kinds {
		base := n.Subject(k)
		cfg := jetstream.StreamConfig{Name: n.Stream(k), Subjects: []string{base, base + ".>"}, Storage: jetstream.MemoryStorage}
		switch k {
		case bus.Tasks:
			cfg.Retention = jetstream.WorkQueuePolicy
		case bus.Rollouts:
			cfg.AllowDirect = true
		case bus.Experience:
			cfg.Subjects, cfg.AllowDirect = []string{base + ".>"}, true
		case bus.Dead:
			cfg.Subjects = []string{base + ".>"}
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatalf("learner creates %s: %v", cfg.Name, Explain(nc, "", err))
		}
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: n.StateBucket(), Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("learner creates KV: %v", Explain(nc, "", err))
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: n.WeightsBucket(), Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("learner creates object store: %v", Explain(nc, "", err))
	}
	for _, c := range []struct{ stream, durable string }{{n.Stream(bus.Tasks), "actors"}, {n.Stream(bus.Rollouts), "verifiers"}} {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{Durable: c.durable, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatalf("learner creates consumer %s: %v", c.durable, Explain(nc, "", err))
		}
	}
}

func TestAnonymousAndForeignRefused(t *testing.T) {
	s, _ := startServer(t)
	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous connection: want an authorization error, got %v", err)
	}
	// Credentials of another generated bundle: signed by a key this server
	// does not trust.
	other, err := Generate(DefaultConfig(testRun))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := other.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(CredsFile(dir, Learner))); err == nil {
		nc.Close()
		t.Fatal("foreign credentials accepted")
	}
}

// TestDenied: each publish must fail, be explained as ErrDenied with the
// server's violation text, and leave nothing in the stream.
func TestDenied(t *testing.T) {
	s, dir := startServer(t)
	n, _ := newRunNames(testRun)
	lnc, ljs := connect(t, s.ClientURL(), dir, Learner)
	topology(t, lnc, ljs, n)

	type op struct {
		name, subject string
		do            func(ctx context.Context, js jetstream.JetStream) error
	}
	pub := func(subj string) func(ctx context.Context, js jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, subj, []byte("x"))
			return err
		}
	}
	putWeights := func(ctx context.Context, js jetstream.JetStream) error {
		obs, err := js.ObjectStore(ctx, n.WeightsBucket())
		if err != nil {
			return err
		}
		_, err = obs.PutBytes(ctx, "v9", bytes.Repeat([]byte{1}, 1000))
		return err
	}
	putVersion := func(ctx context.Context, js jetstream.JetStream) error {
		kv, err := js.KeyValue(ctx, n.StateBucket())
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, bus.VersionKey, []byte("9"))
		return err
	}
	putAnnouncement := func(ctx context.Context, js jetstream.JetStream) error {
		kv, err := js.KeyValue(ctx, n.StateBucket())
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, "weights.v9", []byte("{}"))
		return err
	}
	updateStream := func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: n.Stream(bus.Control), Subjects: []string{n.Subject(bus.Control)}, Storage: jetstream.MemoryStorage, MaxMsgs: 1})
		return err
	}
	readScored := func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.CreateOrUpdateConsumer(ctx, n.Stream(bus.Scored), jetstream.ConsumerConfig{Durable: "snoop", AckPolicy: jetstream.AckExplicitPolicy})
		return err
	}
	weights := "$O." + n.WeightsBucket() + ".>"
	version := "$KV." + n.StateBucket() + "." + bus.VersionKey
	announcement := "$KV." + n.StateBucket() + ".weights.v9"
	cases := []struct {
		role Role
		ops  []op
	}{
		{Actor, []op{
			{"weights", weights, putWeights},
			{"experience", n.Subject(bus.Experience) + ".q1", pub(n.Subject(bus.Experience) + ".q1")},
			{"control", n.Subject(bus.Control), pub(n.Subject(bus.Control))},
			{"tasks", n.Subject(bus.Tasks), pub(n.Subject(bus.Tasks))},
			{"scored", n.Subject(bus.Scored), pub(n.Subject(bus.Scored))},
			{"policy version", version, putVersion},
			{"weights announcement", announcement, putAnnouncement},
			{"stream update", "$JS.API.STREAM.UPDATE." + n.Stream(bus.Control), updateStream},
			{"read scored", "$JS.API.CONSUMER.CREATE." + n.Stream(bus.Scored) + ".>", readScored},
		}},
		{Verifier, []op{
			{"weights", "", putWeights}, // refused already when looking up the object
			{"experience", n.Subject(bus.Experience) + ".q1", pub(n.Subject(bus.Experience) + ".q1")},
			{"rollouts", n.Subject(bus.Rollouts), pub(n.Subject(bus.Rollouts))},
		}},
		{Replay, []op{
			{"weights", "", putWeights},
			{"tasks", n.Subject(bus.Tasks), pub(n.Subject(bus.Tasks))},
			{"control", n.Subject(bus.Control), pub(n.Subject(bus.Control))},
			{"policy version", version, putVersion},
			{"weights announcement", announcement, putAnnouncement},
			{"rollouts", n.Subject(bus.Rollouts), pub(n.Subject(bus.Rollouts))},
			{"read scored", "$JS.API.CONSUMER.CREATE." + n.Stream(bus.Scored) + ".>", readScored},
		}},
		{Inspect, []op{
			{"dead", n.Subject(bus.Dead) + ".x", pub(n.Subject(bus.Dead) + ".x")},
			{"scored", n.Subject(bus.Scored), pub(n.Subject(bus.Scored))},
			{"control", n.Subject(bus.Control), pub(n.Subject(bus.Control))},
			{"stream update", "$JS.API.STREAM.UPDATE." + n.Stream(bus.Control), updateStream},
		}},
	}
	// The operations run concurrently (each waits out its timeout), then
	// each is judged in its own subtest.
	type result struct {
		role Role
		op   op
		err  error
	}
	var results []*result
	var wg sync.WaitGroup
	for _, c := range cases {
		for _, o := range c.ops {
			r := &result{role: c.role, op: o}
			results = append(results, r)
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(CredsFile(dir, r.role)),
					nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
				if err != nil {
					r.err = fmt.Errorf("connect: %w", err)
					return
				}
				defer nc.Close()
				js, _ := jetstream.New(nc)
				ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				defer cancel()
				if err := r.op.do(ctx, js); err == nil {
					r.err = errors.New("allowed")
				} else {
					r.err = Explain(nc, r.op.subject, err)
				}
			}()
		}
	}
	wg.Wait()
	for _, r := range results {
		t.Run(string(r.role)+"/"+r.op.name, func(t *testing.T) {
			if !errors.Is(r.err, ErrDenied) || !strings.Contains(r.err.Error(), "Permissions Violation") {
				t.Fatalf("want ErrDenied naming the server's violation on %q, got %v", r.op.subject, r.err)
			}
		})
	}
	// Nothing got through.
	ctx := ctxT(t, 5*time.Second)
	for _, k := range []bus.Kind{bus.Control, bus.Tasks, bus.Experience, bus.Scored, bus.Rollouts, bus.Dead} {
		st, err := ljs.Stream(ctx, n.Stream(k))
		if err != nil {
			t.Fatal(err)
		}
		if m := st.CachedInfo().State.Msgs; m != 0 {
			t.Errorf("%s holds %d messages after denied publishes", k, m)
		}
	}
	obs, _ := ljs.ObjectStore(ctx, n.WeightsBucket())
	if _, err := obs.GetInfo(ctx, "v9"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("weights v9 exist after denied puts (err %v)", err)
	}
}

func TestExplainLeavesOtherErrors(t *testing.T) {
	other := errors.New("boom")
	if got := Explain(nil, "x", other); got != other {
		t.Fatalf("nil conn: got %v", got)
	}
	s, dir := startServer(t)
	nc, _ := connect(t, s.ClientURL(), dir, Actor)
	if got := Explain(nc, "x", other); got != other {
		t.Fatalf("no violation: got %v", got)
	}
	if got := Explain(nc, "x", nil); got != nil {
		t.Fatalf("nil error: got %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig("r1"), true},
		{"empty run", DefaultConfig(""), false},
		{"dotted run", DefaultConfig("a.b"), false},
		{"wildcard run", DefaultConfig("a*"), false},
		{"tls", Config{RunID: "r", TLS: TLSConfig{CertFile: "c", KeyFile: "k"}}, true},
		{"mtls", Config{RunID: "r", TLS: TLSConfig{CertFile: "c", KeyFile: "k", CAFile: "ca", Verify: true}}, true},
		{"cert without key", Config{RunID: "r", TLS: TLSConfig{CertFile: "c"}}, false},
		{"verify without ca", Config{RunID: "r", TLS: TLSConfig{CertFile: "c", KeyFile: "k", Verify: true}}, false},
		{"ca without cert", Config{RunID: "r", TLS: TLSConfig{CAFile: "ca"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestWriteRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	b, err := Generate(DefaultConfig("r"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second Write: want ErrExists, got %v", err)
	}
	if err := b.Write(dir, true); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	for _, r := range Roles {
		fi, err := os.Stat(CredsFile(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s creds mode %v, want 0600", r, fi.Mode().Perm())
		}
	}
}

func TestTLSInServerConf(t *testing.T) {
	cfg := Config{RunID: "r", TLS: TLSConfig{CertFile: "/certs/server.pem", KeyFile: "/certs/server-key.pem", CAFile: "/certs/ca.pem", Verify: true}}
	b, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b.ServerConf())
	for _, want := range []string{`cert_file: "/certs/server.pem"`, `key_file: "/certs/server-key.pem"`, `ca_file: "/certs/ca.pem"`, "verify: true"} {
		if !strings.Contains(conf, want) {
			t.Errorf("server.conf lacks %q", want)
		}
	}
	if strings.Contains(string(mustGen(t, DefaultConfig("r")).ServerConf()), "tls {") {
		t.Error("server.conf without TLS config has a tls block")
	}
}

func mustGen(t *testing.T, c Config) *Bundle {
	t.Helper()
	b, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
