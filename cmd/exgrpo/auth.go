package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/exgrpo/exgrpo/auth"
)

func init() {
	register("auth", "NATS security: 'auth init' writes a server config and per-role credentials", runAuth)
}

// authOut receives the command's messages (tests silence it).
var authOut io.Writer = os.Stderr

func runAuth(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "init" {
		fmt.Fprintf(authOut, "usage: exgrpo auth init --out DIR --run ID [--tls-cert F --tls-key F [--tls-ca F] [--tls-verify]] [--force | --if-missing]\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: the only subcommand is 'init'", errUsage)
	}
	fs := flag.NewFlagSet("auth init", flag.ContinueOnError)
	fs.SetOutput(authOut)
	out := fs.String("out", "", "directory to write server.conf, <role>.creds and keys/ into (required)")
	run := fs.String("run", "", "run id the permissions are scoped to (required; the roles' --run)")
	name := fs.String("name", "exgrpo", "operator and account name shown in server logs")
	force := fs.Bool("force", false, "replace an existing configuration (invalidates credentials issued from it)")
	ifMissing := fs.Bool("if-missing", false, "do nothing when DIR already holds a configuration (for init containers)")
	cert := fs.String("tls-cert", "", "server certificate (PEM) path as the server sees it; enables TLS")
	key := fs.String("tls-key", "", "server private key (PEM) path")
	ca := fs.String("tls-ca", "", "CA (PEM) that signed client certificates")
	verify := fs.Bool("tls-verify", false, "require client certificates signed by --tls-ca (mutual TLS)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *out == "" || *run == "" {
		return fmt.Errorf("%w: --out and --run are required", errUsage)
	}
	if *force && *ifMissing {
		return fmt.Errorf("%w: --force and --if-missing contradict each other", errUsage)
	}
	if *ifMissing && auth.Exists(*out) {
		fmt.Fprintf(authOut, "exgrpo auth: %s already holds a configuration; kept\n", *out)
		return nil
	}
	cfg := auth.DefaultConfig(*run)
	cfg.Name = *name
	cfg.TLS = auth.TLSConfig{CertFile: *cert, KeyFile: *key, CAFile: *ca, Verify: *verify}
	b, err := auth.Generate(cfg)
	if err != nil {
		if errors.Is(err, auth.ErrConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	if err := b.Write(*out, *force); err != nil {
		return err
	}
	fmt.Fprintf(authOut, "exgrpo auth: wrote %s and credentials for %d roles to %s (run %q)\n",
		auth.ServerConfFile, len(auth.Roles), *out, *run)
	return nil
}
