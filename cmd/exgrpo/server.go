package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/exgrpo/exgrpo/bus"
	"go.uber.org/zap"
)

func init() {
	register("server", "an embedded NATS server with JetStream (single node, or one node of a cluster)", runServer)
}

// runServer turns flags into a bus.ServerConfig and serves until a signal.
func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	cfg := bus.DefaultServerConfig("")
	fs.StringVar(&cfg.ConfigFile, "config", "", "nats-server configuration file (e.g. from 'exgrpo auth init'); flags below override it")
	fs.StringVar(&cfg.Host, "host", "", "client listen host (default 127.0.0.1, or the config file's)")
	fs.IntVar(&cfg.Port, "port", 0, "client port (default 4222, or the config file's; -1 = random)")
	fs.StringVar(&cfg.StoreDir, "store", "", "JetStream store directory (required unless the config file sets one)")
	fs.StringVar(&cfg.ServerName, "name", "", "server name, unique within a cluster")
	fs.IntVar(&cfg.HTTPPort, "http-port", 0, "monitoring port (/healthz, /varz, /jsz); 0 = off")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "cluster name (cluster mode)")
	fs.IntVar(&cfg.ClusterPort, "cluster-port", 0, "route listen port (cluster mode), e.g. 6222")
	routes := fs.String("routes", "", "comma-separated routes of every cluster node, this one included (clustered JetStream needs them), e.g. nats-route://n1:6222,nats-route://n2:6222,nats-route://n3:6222")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.ConfigFile == "" && cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if *routes != "" {
		cfg.Routes = strings.Split(*routes, ",")
	}
	cfg.Debug = *logLevel == "debug"
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := newRoleLogger(*logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	s, err := bus.StartServer(cfg, log)
	if err != nil {
		return err
	}
	log.Info("server ready", zap.String("url", s.ClientURL()), zap.String("store", cfg.StoreDir))
	<-ctx.Done()
	s.Shutdown()
	return nil
}
