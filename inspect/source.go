package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/rundir"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUsage: the command line is wrong (the message says how).
	ErrUsage = errors.New("inspect: usage")
	// ErrNotFound: the step, question or trajectory asked for is not in the streams.
	ErrNotFound = errors.New("inspect: not found")
	// ErrRunning: the run directory's store is in use by a running server.
	ErrRunning = errors.New("inspect: run still going")
	// ErrNoRun: the directory is not a run directory with a JetStream store.
	ErrNoRun = errors.New("inspect: not a run directory")
)

// consumerPrefix names inspect's own ephemeral consumers, so that the
// streams view can leave them out.
const consumerPrefix = "exgrpo-inspect"

// Source is a read-only handle on one run's streams.
type Source struct {
	JS    jetstream.JetStream
	Names bus.Names
	// K is the group size from the run directory's config (0 = unknown; the
	// fold then takes it from the first step report).
	K int
	// Where says what is inspected, for headers: a URL or a run directory.
	Where string
	// Rules are the pool rules of E4 and its replay limit the fold uses
	// (replay.Config.RetireAfter, ReplayLimit): the run directory's, else
	// the paper's (retire after one all-correct group, no limit).
	Rules PoolRules

	// Refetched counts messages an ordered read skipped and a direct get
	// supplied (diagnostics; 0 in a healthy read).
	Refetched int

	nc  *nats.Conn
	srv *bus.Server
}

// NewSource inspects run over an existing connection (the caller keeps it).
func NewSource(nc *nats.Conn, run string) (*Source, error) {
	names, err := bus.NewNames(run)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("inspect: jetstream: %w", err)
	}
	return &Source{JS: js, Names: names, Where: nc.ConnectedUrlRedacted(), Rules: PaperRules()}, nil
}

// Dial connects to a live cluster (read-only credentials suffice: package
// auth, role "inspect") and inspects run.
func Dial(ctx context.Context, cc bus.ConnConfig, run string, log *zap.Logger) (*Source, error) {
	if cc.Name == "" {
		cc.Name = "inspect"
	}
	nc, err := bus.Connect(ctx, cc, log)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	s, err := NewSource(nc, run)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.nc = nc
	return s, nil
}

// runConfig is the part of a run directory's config.json inspect reads.
type runConfig struct {
	RunID   string `json:"run_id"`
	Learner struct {
		Learner struct{ K int }
	} `json:"learner"`
	Replay struct {
		Pool struct {
			K           int
			RetireAfter *int
			ReplayLimit int
		}
	} `json:"replay"`
}

// PoolRules are the pool's rules beyond K that change its fold.
type PoolRules struct {
	RetireAfter int // 1 = the paper's E4, 0 = never
	ReplayLimit int // 0 = none
}

// PaperRules are the paper's.
func PaperRules() PoolRules { return PoolRules{RetireAfter: 1} }

// OpenRunDir starts an embedded server (127.0.0.1, a free port) on a run
// directory's JetStream store and inspects the run it holds: run overrides
// the run id of config.json. Close shuts the server down. While `exgrpo run`
// still uses the directory, it fails with ErrRunning and says how to inspect
// the run live.
func OpenRunDir(ctx context.Context, dir, run string, log *zap.Logger) (*Source, error) {
	if log == nil {
		log = zap.NewNop()
	}
	store := filepath.Join(dir, rundir.JetStreamDir)
	if st, err := os.Stat(store); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: %s has no %s/ (give the directory `exgrpo run` wrote, or use --nats)", ErrNoRun, dir, rundir.JetStreamDir)
	}
	var rc runConfig
	if b, err := os.ReadFile(filepath.Join(dir, rundir.ConfigFile)); err == nil {
		if err := json.Unmarshal(b, &rc); err != nil {
			return nil, fmt.Errorf("inspect: %s: %w", filepath.Join(dir, rundir.ConfigFile), err)
		}
	}
	if run == "" {
		run = rc.RunID
	}
	if run == "" {
		return nil, fmt.Errorf("%w: %s has no run id in %s; give --run", ErrUsage, dir, rundir.ConfigFile)
	}
	srv, err := bus.StartServer(bus.ServerConfig{Host: "127.0.0.1", Port: -1, StoreDir: store,
		ReadyTimeout: 30 * time.Second}, log.Named("server").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)))
	if errors.Is(err, bus.ErrStoreLocked) {
		hint := "--nats <its server URL>"
		if u := runServerURL(dir); u != "" {
			hint = "--nats " + u
		}
		return nil, fmt.Errorf("%w: the JetStream store of %s is in use by a running `exgrpo run` (or server), so it cannot be opened a second time; inspect the run live instead: exgrpo inspect <view> %s --run %s",
			ErrRunning, dir, hint, run)
	}
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "inspect"}, log)
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("inspect: %w", err)
	}
	s, err := NewSource(nc, run)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	s.nc, s.srv, s.Where = nc, srv, dir
	s.K = rc.Replay.Pool.K
	if ra := rc.Replay.Pool.RetireAfter; ra != nil {
		s.Rules.RetireAfter = *ra
	}
	s.Rules.ReplayLimit = rc.Replay.Pool.ReplayLimit
	if s.K == 0 {
		s.K = rc.Learner.Learner.K
	}
	return s, nil
}

var listenRE = regexp.MustCompile(`Listening for client connections on ([0-9A-Za-z.:\[\]-]+)`)

// runServerURL finds the client URL of a running run's embedded server in
// its log (the server logs where it listens), "" when it is not there.
func runServerURL(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, rundir.LogFile))
	if err != nil {
		return ""
	}
	m := listenRE.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return ""
	}
	return "nats://" + strings.TrimSpace(string(m[len(m)-1][1]))
}

// consumerName is a fresh name prefix for one ordered read: the client
// numbers an ordered consumer's incarnations from 1, so a fixed prefix would
// meet the consumer of an earlier read that the server still keeps.
func consumerName() string { return consumerPrefix + "_" + nuid.Next() }

// drop removes an ordered read's consumer now rather than after its
// inactivity threshold.
func (s *Source) drop(ctx context.Context, stream string, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if ci := cons.CachedInfo(); ci != nil {
		_ = s.JS.DeleteConsumer(dctx, stream, ci.Name)
	}
}

// Close closes what the source opened (its connection, its embedded server).
func (s *Source) Close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
	}
}

// raw is one stored message as read.
type raw struct {
	seq  uint64
	subj string
	data []byte
	time time.Time
}

// read calls fn for every message of stream kind k from sequence start on,
// in stream order, with an ephemeral ordered consumer (removed afterwards).
// It returns the last sequence it saw (start-1 when none).
func (s *Source) read(ctx context.Context, k bus.Kind, start uint64, fn func(raw)) (uint64, error) {
	last := start - 1
	if start == 0 {
		start, last = 1, 0
	}
	name := s.Names.Stream(k)
	st, err := s.JS.Stream(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return last, nil // nothing declared yet: an empty run
		}
		return last, fmt.Errorf("inspect: stream %s: %w", name, err)
	}
	state := st.CachedInfo().State
	if state.LastSeq < start {
		return last, nil
	}
	cfg := jetstream.OrderedConsumerConfig{NamePrefix: consumerName(), InactiveThreshold: 30 * time.Second}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := s.JS.OrderedConsumer(ctx, name, cfg)
	if err != nil {
		return last, fmt.Errorf("inspect: read %s: %w", name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return last, fmt.Errorf("inspect: read %s: %w", name, err)
	}
	defer s.drop(ctx, name, cons)
	// next is the sequence expected next. The ordered reads are checked
	// against it, and what they skip is read by sequence (a direct get),
	// so that a read returns every message the stream held when it began,
	// in order, or fails.
	next := max(start, state.FirstSeq)
	fill := func(upto uint64) error {
		for ; next < upto; next++ {
			m, err := st.GetMsg(ctx, next)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // deleted (limits, purge): not there to read
			}
			if err != nil {
				return fmt.Errorf("inspect: read %s seq %d: %w", name, next, err)
			}
			s.Refetched++
			last = next
			fn(raw{seq: next, subj: m.Subject, data: m.Data, time: m.Time})
		}
		return nil
	}
	left := info.NumPending
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return last, fmt.Errorf("inspect: read %s: %w", name, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			left--
			md, err := m.Metadata()
			if err != nil {
				return last, fmt.Errorf("inspect: read %s: %w", name, err)
			}
			seq := md.Sequence.Stream
			if seq < next {
				continue // delivered twice
			}
			if err := fill(seq); err != nil {
				return last, err
			}
			next, last = seq+1, seq
			fn(raw{seq: seq, subj: m.Subject(), data: m.Data(), time: md.Timestamp})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return last, fmt.Errorf("inspect: read %s: %w", name, err)
		}
		if err := ctx.Err(); err != nil {
			return last, fmt.Errorf("inspect: read %s: %w", name, err)
		}
		if n == 0 {
			break
		}
	}
	if err := fill(state.LastSeq + 1); err != nil {
		return last, err
	}
	return last, nil
}
