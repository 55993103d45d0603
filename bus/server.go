package bus

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// ErrConfig marks an invalid configuration; the message says how to fix it.
var ErrConfig = errors.New("bus: invalid config")

// ErrStoreLocked: another embedded server (in this or another process) uses
// the JetStream store directory. Connect to that server instead.
var ErrStoreLocked = errors.New("bus: JetStream store in use by another server")

// storeLockFile is the lock file StartServer holds in the store directory.
const storeLockFile = "exgrpo.lock"

// MaxPayload is the embedded server's max_payload: the largest wire message
// plus room for headers. It is above nats' 8 MiB advice, which the server
// logs as a warning; it stays well under the 64 MiB MaxPending.
const MaxPayload = wire.MaxMessageBytes + 64<<10

// ClientPingInterval and ClientMaxPingsOut: the embedded server pings every
// client this often and drops one that leaves this many pings unanswered
// (nats-server's defaults are 2 minutes and 2). A client connection whose
// reconnect stalled on a half-flushed socket is only released when the
// server drops that socket (see Connect), so this bounds such a stall to
// about a minute instead of four to six.
const (
	ClientPingInterval = 20 * time.Second
	ClientMaxPingsOut  = 3
)

// ServerConfig configures an embedded nats-server with JetStream.
type ServerConfig struct {
	// ConfigFile is an optional nats-server configuration file (for example
	// the per-role users written by `exgrpo auth init`). Fields below that are
	// set (non-zero) override the file.
	ConfigFile string
	Host       string // client listen host; default "127.0.0.1" (no file)
	Port       int    // client port; -1 picks a free one (tests); default 4222
	StoreDir   string // JetStream store directory; required unless the file sets it
	ServerName string // unique per cluster node; default derived by the server
	HTTPPort   int    // monitoring port (/varz, /jsz); 0 = off
	// MaxPayload overrides the max message size; default bus.MaxPayload.
	MaxPayload int32
	// Cluster mode (the 3-node compose cluster): a cluster name, the route
	// listen port and the nodes' route URLs ("nats-route://host:6222"). Give
	// every node the same full list, itself included: clustered JetStream
	// refuses to start without configured routes.
	ClusterName string
	ClusterHost string // default "0.0.0.0"
	ClusterPort int    // 0 = no cluster
	Routes      []string
	// ReadyTimeout bounds the wait for the server to accept clients; default 10s.
	ReadyTimeout time.Duration
	// Debug enables the server's debug log lines.
	Debug bool
}

// DefaultServerConfig is a single local node on 127.0.0.1:4222 storing in dir.
func DefaultServerConfig(dir string) ServerConfig {
	return ServerConfig{Host: "127.0.0.1", Port: 4222, StoreDir: dir, ReadyTimeout: 10 * time.Second}
}

// Validate reports contradictions.
func (c ServerConfig) Validate() error {
	if c.ConfigFile == "" && c.StoreDir == "" {
		return fmt.Errorf("%w: server needs a StoreDir (--store) or a config file with a jetstream store_dir", ErrConfig)
	}
	if c.ClusterPort != 0 && c.ClusterName == "" {
		return fmt.Errorf("%w: cluster port %d set without a cluster name (--cluster-name)", ErrConfig, c.ClusterPort)
	}
	if len(c.Routes) > 0 && c.ClusterPort == 0 {
		return fmt.Errorf("%w: routes given without a cluster port (--cluster-port)", ErrConfig)
	}
	if c.MaxPayload < 0 {
		return fmt.Errorf("%w: MaxPayload %d is negative", ErrConfig, c.MaxPayload)
	}
	return nil
}

// Server is a running embedded nats-server. Safe for concurrent use.
type Server struct {
	ns     *server.Server
	once   sync.Once
	unlock func() // releases the store lock
}

// StartServer starts the server and waits until it accepts clients and
// JetStream is ready. Shut it down with Shutdown.
func StartServer(cfg ServerConfig, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		o, err := server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("bus: server config %s: %w", cfg.ConfigFile, err)
		}
		opts = o
		if opts.Host == "" {
			// The file names no listen host: bind where the flags say the
			// default is, not on every interface (nats-server's default).
			opts.Host = "127.0.0.1"
		}
	} else {
		opts.Host = "127.0.0.1"
		opts.Port = 4222
	}
	if cfg.Host != "" {
		opts.Host = cfg.Host
	}
	if cfg.Port != 0 {
		opts.Port = cfg.Port
	}
	if cfg.ServerName != "" {
		opts.ServerName = cfg.ServerName
	}
	if cfg.HTTPPort != 0 {
		opts.HTTPPort = cfg.HTTPPort
	}
	opts.JetStream = true
	if cfg.StoreDir != "" {
		opts.StoreDir = cfg.StoreDir
	}
	if cfg.MaxPayload > 0 {
		opts.MaxPayload = cfg.MaxPayload
	} else if opts.MaxPayload < MaxPayload {
		opts.MaxPayload = MaxPayload
	}
	if cfg.ClusterPort != 0 {
		opts.Cluster.Name = cfg.ClusterName
		opts.Cluster.Host = cfg.ClusterHost
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = "0.0.0.0"
		}
		opts.Cluster.Port = cfg.ClusterPort
		if len(cfg.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
		}
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = ClientPingInterval
	}
	if opts.MaxPingsOut == 0 {
		opts.MaxPingsOut = ClientMaxPingsOut
	}
	opts.NoSigs = true // the process owns signals; cmd/ shuts us down.
	unlock := func() {}
	if opts.StoreDir != "" {
		u, err := lockStore(opts.StoreDir)
		if err != nil {
			return nil, err
		}
		unlock = u
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("bus: new server: %w", err)
	}
	ns.SetLoggerV2(&serverLog{log.Named("nats").WithOptions(zap.AddStacktrace(zap.FatalLevel)).Sugar()}, cfg.Debug, false, false)
	ns.Start()
	wait := cfg.ReadyTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if cfg.ClusterPort != 0 {
		// A clustered node only serves clients once its routes are up; its
		// JetStream meta leader needs a quorum, which Open's retries absorb.
		wait = 4 * wait
	}
	deadline := time.Now().Add(wait)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		stopped := !ns.Running()
		if stopped || time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			unlock()
			if stopped {
				return nil, fmt.Errorf("bus: server stopped while starting (see its log; a cluster node needs --routes, its own included)")
			}
			return nil, fmt.Errorf("bus: server not ready after %s (port %d in use? store %s writable?)", wait, opts.Port, opts.StoreDir)
		}
	}
	return &Server{ns: ns, unlock: unlock}, nil
}

// ClientURL is the URL clients connect to (nats://host:port).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// NATS exposes the underlying server (for tests and monitoring).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits for it; idempotent.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		if s.unlock != nil {
			s.unlock()
		}
	})
}

// serverLog adapts zap to the nats-server logger interface.
type serverLog struct{ l *zap.SugaredLogger }

func (s *serverLog) Noticef(format string, v ...any) { s.l.Infof(format, v...) }
func (s *serverLog) Warnf(format string, v ...any)   { s.l.Warnf(format, v...) }
func (s *serverLog) Fatalf(format string, v ...any)  { s.l.Errorf(format, v...) }
func (s *serverLog) Errorf(format string, v ...any)  { s.l.Errorf(format, v...) }
func (s *serverLog) Debugf(format string, v ...any)  { s.l.Debugf(format, v...) }
func (s *serverLog) Tracef(format string, v ...any)  { s.l.Debugf(format, v...) }
