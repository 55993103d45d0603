package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrConfig marks an invalid configuration; the message says how to fix it.
	ErrConfig = errors.New("auth: invalid config")
	// ErrExists is returned by Write when the directory already holds a
	// generated configuration and Overwrite is off.
	ErrExists = errors.New("auth: credentials already exist")
	// ErrDenied marks an operation the server refused for lack of permission.
	ErrDenied = errors.New("auth: permission denied")
)

// File names written by Bundle.Write, relative to its directory.
const (
	ServerConfFile = "server.conf"   // include in (or pass as) the nats-server config
	KeysDir        = "keys"          // operator and account seeds: keep them off the cluster
	CredsSuffix    = ".creds"        // one <role>.creds per role
	operatorSeed   = "operator.nk"   // inside KeysDir
	accountSeed    = "account.nk"    // inside KeysDir
	systemSeed     = "system.nk"     // inside KeysDir
	readmeFile     = "README.txt"    // what the files are
	confMarker     = "# exgrpo auth" // first line of ServerConfFile
)

// MaxControlLine is the server's max_control_line in the generated
// configuration: the CONNECT line carries the role's user JWT (up to ~9 KiB
// for the learner), above the server's 4 KiB default.
const MaxControlLine = 64 << 10

// TLSConfig names the certificate files of a TLS-enabled server. Empty
// means plain TCP (fine on a private network or loopback).
type TLSConfig struct {
	CertFile string // server certificate (PEM)
	KeyFile  string // its private key (PEM)
	CAFile   string // CA that signed client certificates; with Verify, clients must present one
	Verify   bool   // require and verify client certificates (mutual TLS)
}

// Config says what to generate.
type Config struct {
	// RunID scopes every permission to one run's subjects and streams
	// ([A-Za-z0-9_-], 1-64 characters, as bus.NewNames).
	RunID string
	// Name labels the operator and accounts (shown in server logs);
	// default "exgrpo".
	Name string
	// TLS, optional, is written into the server configuration.
	TLS TLSConfig
}

// DefaultConfig is the configuration for run with no TLS.
func DefaultConfig(run string) Config { return Config{RunID: run, Name: "exgrpo"} }

// Validate reports contradictions.
func (c Config) Validate() error {
	if _, err := newRunNames(c.RunID); err != nil {
		return err
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%w: TLS needs both a certificate and its key (--tls-cert and --tls-key)", ErrConfig)
	}
	if t.Verify && t.CAFile == "" {
		return fmt.Errorf("%w: verifying client certificates needs the CA that signed them (--tls-ca)", ErrConfig)
	}
	if (t.Verify || t.CAFile != "") && t.CertFile == "" {
		return fmt.Errorf("%w: a TLS CA or client verification was given without a server certificate (--tls-cert, --tls-key)", ErrConfig)
	}
	return nil
}

// Bundle is a generated configuration: the server's trust anchors and one
// credentials file per role. It holds private seeds; write it with Write.
type Bundle struct {
	Config      Config
	OperatorJWT string
	SystemJWT   string // system account (required by operator mode)
	AccountJWT  string // the run's account, JetStream enabled
	SystemPub   string
	AccountPub  string
	// Creds maps each role to its .creds file contents (user JWT + seed).
	Creds map[Role][]byte
	// Seeds of the signing keys, so that more users can be issued later.
	OperatorSeed, AccountSeed, SystemSeed []byte
}

// Generate makes fresh keys and signs the accounts and one user per role.
func Generate(cfg Config) (*Bundle, error) {
	if cfg.Name == "" {
		cfg.Name = "exgrpo"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	op, err := nkeys.CreateOperator()
	if err != nil {
		return nil, fmt.Errorf("auth: operator key: %w", err)
	}
	opPub, _ := op.PublicKey()
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("auth: system account key: %w", err)
	}
	sysPub, _ := sys.PublicKey()
	acc, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("auth: account key: %w", err)
	}
	accPub, _ := acc.PublicKey()

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = cfg.Name
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	if err != nil {
		return nil, fmt.Errorf("auth: sign operator: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return nil, fmt.Errorf("auth: sign system account: %w", err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = cfg.Name + "-" + cfg.RunID
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
	}
	accJWT, err := ac.Encode(op)
	if err != nil {
		return nil, fmt.Errorf("auth: sign account: %w", err)
	}

	b := &Bundle{
		Config: cfg, OperatorJWT: opJWT, SystemJWT: sysJWT, AccountJWT: accJWT,
		SystemPub: sysPub, AccountPub: accPub, Creds: make(map[Role][]byte, len(Roles)),
	}
	for _, role := range Roles {
		creds, err := issueUser(cfg.RunID, role, acc)
		if err != nil {
			return nil, err
		}
		b.Creds[role] = creds
	}
	if b.OperatorSeed, err = op.Seed(); err != nil {
		return nil, fmt.Errorf("auth: operator seed: %w", err)
	}
	if b.AccountSeed, err = acc.Seed(); err != nil {
		return nil, fmt.Errorf("auth: account seed: %w", err)
	}
	if b.SystemSeed, err = sys.Seed(); err != nil {
		return nil, fmt.Errorf("auth: system seed: %w", err)
	}
	return b, nil
}

// issueUser signs a user of role with the account key and formats its
// credentials file.
func issueUser(run string, role Role, acc nkeys.KeyPair) ([]byte, error) {
	perms, err := RolePermissions(run, role)
	if err != nil {
		return nil, err
	}
	u, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("auth: %s user key: %w", role, err)
	}
	uPub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(uPub)
	uc.Name = string(role)
	uc.Tags.Add("role:"+string(role), "run:"+strings.ToLower(run))
	uc.Pub.Allow.Add(perms.Publish...)
	uc.Pub.Deny.Add(perms.DenyPublish...)
	uc.Sub.Allow.Add(perms.Subscribe...)
	if perms.RespondToRequests {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	userJWT, err := uc.Encode(acc)
	if err != nil {
		return nil, fmt.Errorf("auth: sign %s user: %w", role, err)
	}
	seed, err := u.Seed()
	if err != nil {
		return nil, fmt.Errorf("auth: %s seed: %w", role, err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return nil, fmt.Errorf("auth: format %s creds: %w", role, err)
	}
	return creds, nil
}

// ServerConf is the nats-server configuration fragment: the trusted
// operator, the system account, the preloaded account JWTs and, if
// configured, TLS. It sets nothing else (ports, JetStream store, cluster),
// so it can be passed to `exgrpo server --config` or included from a fuller
// nats-server configuration with `include server.conf`.
func (b *Bundle) ServerConf() []byte {
	var s strings.Builder
	fmt.Fprintf(&s, "%s: server configuration for run %q (generated by `exgrpo auth init`).\n", confMarker, b.Config.RunID)
	s.WriteString("# Operator mode: only users signed by this run's account key may connect;\n")
	s.WriteString("# anonymous connections are refused. Role credentials: <role>.creds next to this file.\n")
	fmt.Fprintf(&s, "operator: %s\n", b.OperatorJWT)
	fmt.Fprintf(&s, "system_account: %s\n", b.SystemPub)
	s.WriteString("resolver: MEMORY\n")
	s.WriteString("# A role's user JWT, which lists its permissions, travels in the CONNECT line;\n")
	s.WriteString("# the default limit of 4 KiB is too small for the learner's.\n")
	fmt.Fprintf(&s, "max_control_line: %d\n", MaxControlLine)
	s.WriteString("resolver_preload: {\n")
	fmt.Fprintf(&s, "  # SYS\n  %s: %s\n", b.SystemPub, b.SystemJWT)
	fmt.Fprintf(&s, "  # %s-%s (JetStream enabled)\n  %s: %s\n", b.Config.Name, b.Config.RunID, b.AccountPub, b.AccountJWT)
	s.WriteString("}\n")
	if t := b.Config.TLS; t.CertFile != "" {
		s.WriteString("tls {\n")
		fmt.Fprintf(&s, "  cert_file: %s\n  key_file: %s\n", strconv.Quote(t.CertFile), strconv.Quote(t.KeyFile))
		if t.CAFile != "" {
			fmt.Fprintf(&s, "  ca_file: %s\n", strconv.Quote(t.CAFile))
		}
		if t.Verify {
			s.WriteString("  verify: true\n")
		}
		s.WriteString("}\n")
	}
	return []byte(s.String())
}

// CredsFile is the path of role's credentials file under dir.
func CredsFile(dir string, role Role) string { return filepath.Join(dir, string(role)+CredsSuffix) }

// Exists reports whether dir already holds a generated configuration.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ServerConfFile))
	return err == nil
}

// Write stores the bundle in dir (created if missing): ServerConfFile, one
// <role>.creds per role (mode 0600) and the signing seeds under KeysDir
// (0700). It refuses to replace an existing configuration unless overwrite,
// because new keys invalidate every credentials file already handed out.
func (b *Bundle) Write(dir string, overwrite bool) error {
	if Exists(dir) && !overwrite {
		return fmt.Errorf("%w: %s holds %s; pass --force to replace it (this invalidates every credentials file issued from it)",
			ErrExists, dir, ServerConfFile)
	}
	if err := os.MkdirAll(filepath.Join(dir, KeysDir), 0o700); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{filepath.Join(KeysDir, operatorSeed), b.OperatorSeed, 0o600},
		{filepath.Join(KeysDir, accountSeed), b.AccountSeed, 0o600},
		{filepath.Join(KeysDir, systemSeed), b.SystemSeed, 0o600},
		{readmeFile, []byte(b.readme()), 0o644},
	}
	for _, role := range Roles {
		files = append(files, struct {
			name string
			data []byte
			mode os.FileMode
		}{string(role) + CredsSuffix, b.Creds[role], 0o600})
	}
	// The server configuration goes last: its presence marks a complete set.
	files = append(files, struct {
		name string
		data []byte
		mode os.FileMode
	}{ServerConfFile, b.ServerConf(), 0o644})
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bundle) readme() string {
	var s strings.Builder
	fmt.Fprintf(&s, "NATS credentials for exgrpo run %q.\n\n", b.Config.RunID)
	s.WriteString(ServerConfFile + "  server side: exgrpo server --config " + ServerConfFile + " (or include it in a nats-server config)\n")
	for _, r := range Roles {
		fmt.Fprintf(&s, "%-14s  the %s role: --creds %s%s\n", string(r)+CredsSuffix, r, r, CredsSuffix)
	}
	s.WriteString(KeysDir + "/           operator and account seeds; they can sign new users. Keep them off the cluster.\n")
	return s.String()
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile keeps an existing file's mode
		return fmt.Errorf("auth: chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}
