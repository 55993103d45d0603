package inspect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"go.uber.org/zap"
)

// Usage is the command's help text.
const Usage = `usage: exgrpo inspect <view> [args] [flags]

views:
  buckets [--at-step N]   questions per bucket k = 1..K-1, retired, pool size,
                          trajectories stored, mixed mode; now or as of step N
  question ID             the question's history step by step and its stored
                          trajectories (--checkpoint FILE: their entropy now)
  step N                  the groups of step N: fresh or replayed, rewards,
                          advantages, verifier reasons, the E7 candidates
  versions                the policy versions: transport, full or delta, bytes
                          of the files and stored, the actors' leases
  streams                 each stream's messages, bytes and age, each consumer's
                          pending / ack-pending / redelivered, DEAD's recent entries
  serve [--http ADDR]     the same as a web page (step slider, curves, links)

where the run is (one of):
  --run-dir DIR           a run directory written by 'exgrpo run' (after the run)
  --nats URL --run ID     a live cluster (--creds FILE: the inspect role's creds)

flags:
`

// Options are the parsed flags of one inspect command.
type Options struct {
	View       string
	Arg        string // question id or step number
	NATS       string
	Creds      string
	User       string
	Password   string
	TLSCA      string // TLS: the servers' CA, and a client certificate and key
	TLSCert    string
	TLSKey     string
	Run        string
	RunDir     string
	JSON       bool
	K          int
	AtStep     int64
	Dead       int
	Checkpoint string
	HTTP       string
	Timeout    time.Duration
}

// ParseArgs parses `inspect <view> [arg] [flags]`; flags may come before or
// after the positional arguments.
func ParseArgs(args []string, stderr io.Writer) (Options, error) {
	o := Options{AtStep: -1}
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), Usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.NATS, "nats", "", "NATS server URL(s) of a live cluster, comma-separated (default nats://127.0.0.1:4222 when no --run-dir)")
	fs.StringVar(&o.Creds, "creds", "", "NATS credentials file (the inspect role's, from 'exgrpo auth init')")
	fs.StringVar(&o.User, "user", "", "NATS user (user/password auth)")
	fs.StringVar(&o.Password, "password", "", "NATS password")
	fs.StringVar(&o.TLSCA, "tls-ca", "", "PEM file of the CA that signed the NATS servers' certificates (TLS)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "client TLS certificate (PEM), for servers that verify clients")
	fs.StringVar(&o.TLSKey, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&o.Run, "run", "", "run id (default: the run directory's, or \"default\" on a cluster)")
	fs.StringVar(&o.RunDir, "run-dir", "", "inspect a run directory: start an embedded server on its JetStream store")
	fs.BoolVar(&o.JSON, "json", false, "print JSON instead of tables")
	fs.IntVar(&o.K, "k", 0, "group size K (default: the run's config, else the step reports)")
	fs.Int64Var(&o.AtStep, "at-step", -1, "buckets: the pool as of this step (default: the last)")
	fs.IntVar(&o.Dead, "dead", 10, "streams: DEAD entries shown")
	fs.StringVar(&o.Checkpoint, "checkpoint", "", "question/serve: a policy checkpoint (.safetensors) to score stored trajectories with")
	fs.StringVar(&o.HTTP, "http", "127.0.0.1:8080", "serve: listen address")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up reading the streams after this long")
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return o, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	if len(pos) == 0 {
		fs.Usage()
		return o, fmt.Errorf("%w: name a view: buckets, question, step, streams, versions or serve", ErrUsage)
	}
	o.View = pos[0]
	want := map[string]int{"buckets": 0, "question": 1, "step": 1, "streams": 0, "versions": 0, "serve": 0}
	n, ok := want[o.View]
	if !ok {
		return o, fmt.Errorf("%w: unknown view %q: buckets, question, step, streams, versions or serve", ErrUsage, o.View)
	}
	if len(pos)-1 != n {
		what := map[string]string{"question": "a question id", "step": "a step number"}[o.View]
		if n == 0 {
			return o, fmt.Errorf("%w: %s takes no arguments, got %q", ErrUsage, o.View, pos[1:])
		}
		return o, fmt.Errorf("%w: %s takes %s", ErrUsage, o.View, what)
	}
	if n == 1 {
		o.Arg = pos[1]
	}
	if o.View == "step" {
		if _, err := strconv.ParseInt(o.Arg, 10, 64); err != nil {
			return o, fmt.Errorf("%w: step %q is not a step number", ErrUsage, o.Arg)
		}
	}
	if o.RunDir != "" && (o.NATS != "" || o.Creds != "") {
		return o, fmt.Errorf("%w: give either --run-dir or --nats/--creds, not both", ErrUsage)
	}
	return o, nil
}

// Open opens the source the options name.
func (o Options) Open(ctx context.Context, log *zap.Logger) (*Source, error) {
	var (
		s   *Source
		err error
	)
	if o.RunDir != "" {
		s, err = OpenRunDir(ctx, o.RunDir, o.Run, log)
	} else {
		run := o.Run
		if run == "" {
			run = "default"
		}
		url := o.NATS
		if url == "" {
			url = "nats://127.0.0.1:4222"
		}
		// The connection is part of the read: --timeout bounds it too.
		cctx, cancel := context.WithTimeout(ctx, min(15*time.Second, o.Timeout))
		s, err = Dial(cctx, bus.ConnConfig{URL: url, CredsFile: o.Creds, User: o.User, Password: o.Password, Name: "inspect",
			TLSCA: o.TLSCA, TLSCert: o.TLSCert, TLSKey: o.TLSKey}, run, log)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	if o.K > 0 {
		s.K = o.K
	}
	return s, nil
}

// Main runs `exgrpo inspect` with args (after "inspect"), writing the view
// to stdout. It returns an error wrapping ErrUsage for a wrong command line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	o, err := ParseArgs(args, stderr)
	if err != nil {
		return err
	}
	var ck *policy.Checkpoint
	if o.Checkpoint != "" {
		c, err := policy.LoadFile(o.Checkpoint)
		if err != nil {
			return fmt.Errorf("inspect: checkpoint: %w", err)
		}
		ck = &c
	}
	src, err := o.Open(ctx, log)
	if err != nil {
		return err
	}
	defer src.Close()
	if o.View == "serve" {
		return Serve(ctx, src, ServeConfig{Addr: o.HTTP, Checkpoint: ck, CheckpointName: o.Checkpoint, Out: stderr}, log)
	}
	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	v, err := o.view(rctx, src, ck)
	if err != nil {
		return err
	}
	if o.JSON {
		return WriteJSON(stdout, v)
	}
	return WriteTable(stdout, v)
}

// view builds the view the options ask for.
func (o Options) view(ctx context.Context, src *Source, ck *policy.Checkpoint) (any, error) {
	if o.View == "streams" {
		return src.Streams(ctx, o.Dead)
	}
	if o.View == "versions" {
		return src.Versions(ctx)
	}
	l, err := src.Load(ctx)
	if err != nil {
		return nil, err
	}
	switch o.View {
	case "buckets":
		return l.Buckets(src.Names.Run, o.AtStep), nil
	case "question":
		return l.Question(ctx, src, o.Arg, ck, o.Checkpoint)
	case "step":
		n, _ := strconv.ParseInt(o.Arg, 10, 64)
		return l.Step(src.Names.Run, n)
	}
	return nil, errors.New("inspect: unreachable view " + o.View)
}
