package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/metrics"
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
	connLoss                   time.Duration
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
	fs.DurationVar(&f.connLoss, "conn-loss", 2*time.Minute, "exit with an error when the NATS connection stays down this long, so that a supervisor restarts the role (0: wait forever)")
	return f
}

// open connects (retrying until connect-timeout) and opens the run's bus.
// The caller closes the connection.
// check validates the flags that need no server, so that a typo fails at
// once instead of after --connect-timeout.
func (f *busFlags) check() error {
	if _, err := bus.NewNames(f.run); err != nil {
		return fmt.Errorf("%w: --run: %v", errUsage, err)
	}
	if f.replicas < 1 {
		return fmt.Errorf("%w: --replicas %d < 1", errUsage, f.replicas)
	}
	return nil
}

func (f *busFlags) open(ctx context.Context, name string, log *zap.Logger) (*nats.Conn, *bus.Bus, error) {
	if err := f.check(); err != nil {
		return nil, nil, err
	}
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

// serve runs a role until it returns, with its Prometheus endpoint and a
// watch on its NATS connection: a connection down longer than --conn-loss
// (or closed) stops the role with an error wrapping bus.ErrConnectionLost,
// as does a metrics endpoint that cannot serve. A role that ends by itself
// (a learner whose steps are done) ends the endpoint too.
func (f *busFlags) serve(ctx context.Context, nc *nats.Conn, log *zap.Logger, reg *metrics.Registry, run func(context.Context) error) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	mdone := make(chan struct{})
	go func() {
		defer close(mdone)
		if err := metrics.Serve(rctx, f.metrics, log, reg); err != nil {
			cancel(err)
		}
	}()
	if f.connLoss > 0 {
		lost := bus.WatchConnection(rctx, nc, f.connLoss)
		go func() {
			select {
			case err := <-lost:
				log.Error("NATS connection lost, stopping", zap.Error(err))
				cancel(err)
			case <-rctx.Done():
			}
		}()
	}
	err := run(rctx)
	if cause := context.Cause(rctx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // the role stopped because of the watch or the endpoint
	}
	cancel(nil)
	<-mdone
	return err
}
