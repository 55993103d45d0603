package bus

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// ReconnectBufSize bounds what a connection buffers while reconnecting.
const ReconnectBufSize = 8 << 20

// ConnConfig says how a role reaches NATS.
type ConnConfig struct {
	URL       string // comma-separated server URLs; default nats.DefaultURL
	CredsFile string // a .creds file (JWT + nkey), optional
	User      string // user/password auth, optional (not with CredsFile)
	Password  string
	Token     string // token auth, optional
	Name      string // connection name shown in server monitoring, e.g. "actor-3"
	// ReconnectWait between reconnect attempts; default 500ms. Reconnects
	// never give up: roles outlive server restarts.
	ReconnectWait time.Duration
	// TLS, optional: TLSCA is the PEM file of the CA the servers'
	// certificates are checked against (a server whose certificate the
	// system pool trusts needs none, but then the URL must say tls://);
	// TLSCert and TLSKey are this client's certificate and key, for servers
	// that verify clients (mutual TLS).
	TLSCA, TLSCert, TLSKey string
}

// Validate reports contradictions.
func (c ConnConfig) Validate() error {
	if c.CredsFile != "" && (c.User != "" || c.Token != "") {
		return fmt.Errorf("%w: give either a creds file or user/password or a token, not several", ErrConfig)
	}
	if c.Password != "" && c.User == "" {
		return fmt.Errorf("%w: password given without a user", ErrConfig)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%w: a TLS client certificate needs its key and the key its certificate (--tls-cert, --tls-key)", ErrConfig)
	}
	return nil
}

// Connect dials NATS, retrying the first connection until ctx ends, and
// reconnects forever afterwards. Connection events are logged on log.
// The caller closes the connection (Drain or Close).
func Connect(ctx context.Context, cfg ConnConfig, log *zap.Logger) (*nats.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	url := cfg.URL
	if url == "" {
		url = nats.DefaultURL
	}
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		// What is published while reconnecting is buffered and written to
		// the new server in one write under the connection's lock. If that
		// write fails (times out), nats.go leaves the new socket open and
		// its reconnect waits for that socket's reader, i.e. until the
		// server drops the connection as stale: with nats-server's default
		// pings 4 to 6 minutes without a "reconnected" (the compose test's
		// learner stall after a node kill; the learner was buffering
		// weights chunks). A small buffer keeps that write short; the
		// publishers retry what does not fit (ErrReconnectBufExceeded).
		// See also ClientPingInterval and WatchConnection.
		nats.ReconnectBufSize(ReconnectBufSize),
		// A host that vanishes without closing its sockets (a killed
		// container, a network partition) is noticed by missing pongs
		// within about a minute instead of the default 4 to 6.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		// No separate DNS lookup while holding the connection's lock: the
		// dialer resolves host names (a dead container's name among the
		// cluster URLs) within its connect timeout.
		nats.SkipHostLookup(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", zap.String("url", c.ConnectedUrl())) }),
		// A connection the client gives up on (for example after repeated
		// authorization errors while reconnecting) ends here; without this
		// line such a role would stall with nothing in its log.
		nats.ClosedHandler(func(c *nats.Conn) {
			forgetDenials(c)
			if err := c.LastError(); err != nil {
				log.Warn("nats connection closed", zap.Error(err))
			}
		}),
		nats.ErrorHandler(func(c *nats.Conn, s *nats.Subscription, err error) {
			noteDenied(c, err)
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("nats async error", zap.String("subject", subj), zap.Error(err))
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	for _, f := range []string{cfg.TLSCA, cfg.TLSCert, cfg.TLSKey} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("bus: TLS file: %w", err)
		}
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	backoff := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if isAuthError(err) {
			return nil, fmt.Errorf("%w: connect %s as %q: the server refused the credentials (%v); pass this role's --creds for this server",
				ErrDenied, url, cfg.Name, err)
		}
		if isCertError(err) {
			return nil, fmt.Errorf("bus: connect %s: %w", url, err)
		}
		log.Debug("nats connect failed, retrying", zap.String("url", url), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: connect %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// isCertError: the server's certificate is not trusted (or not for this
// host), which retrying does not change.
func isCertError(err error) bool {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	return errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he)
}

// isAuthError: the server refused the credentials (none, unknown, expired,
// revoked), which retrying does not change. nats.go sometimes returns the
// server's -ERR text rather than its sentinel, so the text is checked too.
func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization violation") || strings.Contains(msg, "authentication expired") ||
		strings.Contains(msg, "authentication revoked") || strings.Contains(msg, "user authentication")
}

// ErrConnectionLost: a connection stayed disconnected longer than allowed
// (WatchConnection).
var ErrConnectionLost = errors.New("bus: NATS connection lost")

// WatchConnection returns a channel that receives one error (wrapping
// ErrConnectionLost) when nc has not been connected for longer than maxDown,
// or when it is closed; nothing is sent after ctx ends. A role that cannot
// work without the bus exits on it with a clear error and is restarted,
// instead of waiting forever on a client that does not come back.
func WatchConnection(ctx context.Context, nc *nats.Conn, maxDown time.Duration) <-chan error {
	out := make(chan error, 1)
	go func() {
		tick := time.NewTicker(maxDown/20 + 50*time.Millisecond)
		defer tick.Stop()
		var downSince time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			switch st := nc.Status(); {
			case st == nats.CONNECTED:
				downSince = time.Time{}
			case st == nats.CLOSED:
				out <- fmt.Errorf("%w: connection closed (last error: %v)", ErrConnectionLost, nc.LastError())
				return
			case downSince.IsZero():
				downSince = time.Now()
			case time.Since(downSince) > maxDown:
				out <- fmt.Errorf("%w: %s for %s (last error: %v)", ErrConnectionLost, st,
					time.Since(downSince).Round(time.Second), nc.LastError())
				return
			}
		}
	}()
	return out
}
