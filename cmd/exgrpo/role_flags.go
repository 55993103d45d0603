package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// busFlags are the flags every networked role shares (actor, verifier,
// replay, learner, inspect): where NATS is, who we are, which run, where
// metrics are served.
type busFlags struct {
	url, creds, user, password string
	tlsCA, tlsCert, tlsKey     string
	run                        string
	replicas                   int
	metrics                    string
	logLevel                   string
	connectWait                time.Duration
}

// addBusFlags registers the shared role flags on fs.
func addBusFlags(fs *flag.FlagSet) *busFlags {
	f := &busFlags{}
	fs.StringVar(&f.url, "nats", nats.DefaultURL, "NATS server URL(s), comma-separated")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file (from 'exgrpo auth init')")
	fs.StringVar(&f.user, "user", "", "NATS user (user/password auth)")
	fs.StringVar(&f.password, "password", os.Getenv("EXGRPO_NATS_PASSWORD"), "NATS password (default $EXGRPO_NATS_PASSWORD)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of the CA that signed the NATS servers' certificates (TLS)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "this client's TLS certificate (PEM), for servers that verify clients")
	fs.StringVar(&f.tlsKey, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&f.run, "run", "default", "run id: names every stream, bucket and subject of the run")
	fs.IntVar(&f.replicas, "replicas", 1, "stream replicas when this role creates the topology (3 in a 3-node cluster)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus /metrics on this address (e.g. :9090); empty = off")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.connectWait, "connect-timeout", 2*time.Minute, "give up when NATS or JetStream is not reachable for this long")
	return f
}

// open connects (retrying until connect-timeout) and opens the run's bus.
// The caller closes the connection.
func (f *busFlags) open(ctx context.Context, name string, log *zap.Logger) (*nats.Conn, *bus.Bus, error) {
	cctx, cancel := context.WithTimeout(ctx, f.connectWait)
	defer cancel()
	nc, err := bus.Connect(cctx, bus.ConnConfig{URL: f.url, CredsFile: f.creds, User: f.user, Password: f.password, Name: name,
		TLSCA: f.tlsCA, TLSCert: f.tlsCert, TLSKey: f.tlsKey}, log)
	if err != nil {
		return nil, nil, err
	}
	cfg := bus.DefaultConfig(f.run)
	cfg.Replicas = f.replicas
	b, err := bus.Open(cctx, nc, cfg, log)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, b, nil
}

// newRoleLogger is the process's zap logger: JSON lines on stderr at level.
func newRoleLogger(level string) (*zap.Logger, error) {
	var lv zapcore.Level
	if err := lv.Set(level); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: %v", errUsage, level, err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lv)
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}
