package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/internal/groupcommit"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/verifier/worker"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// DataplaneConfig is `exgrpo bench dataplane`.
type DataplaneConfig struct {
	N                   int    // trajectories per measurement
	Tokens              int    // response tokens per trajectory
	Reps                int    // repetitions of each measurement (best is reported)
	Quick               bool   // short run (N 500, Reps 1)
	VerifierConcurrency int    // verifier worker concurrency
	Memory              bool   // memory storage for every stream (default file storage)
	CPUProfile          string // write a CPU profile of the whole run (server included) here; empty = none
	Phase               string // both, bare or pipeline (one phase alone, e.g. to profile it)
	Skeleton            bool   // also measure the pipeline's message flow alone (no codecs, no grading)
	Ops                 bool   // also measure each JetStream operation of the data path alone
}

// DefaultDataplane is the configuration BENCHMARKS.md reports.
func DefaultDataplane() DataplaneConfig {
	return DataplaneConfig{N: 4000, Tokens: 1024, Reps: 5, VerifierConcurrency: runtime.NumCPU(), Phase: "both"}
}

// Dataplane measures the data path of ARCHITECTURE.md against its
// anchor, bare JetStream publish+consume of the same bytes, on one embedded
// server in the same run.
func Dataplane(ctx context.Context, w io.Writer, cfg DataplaneConfig) error {
	if cfg.Phase != "both" && cfg.Phase != "bare" && cfg.Phase != "pipeline" {
		return fmt.Errorf("bench dataplane: --phase %q: want both, bare or pipeline", cfg.Phase)
	}
	runBare, runPipe := cfg.Phase != "pipeline", cfg.Phase != "bare"
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.Quick {
		cfg.N, cfg.Reps = 500, 1
	}
	dir, err := os.MkdirTemp("", "exgrpo-bench-dataplane-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scfg := bus.DefaultServerConfig(dir)
	scfg.Port = -1
	srv, err := bus.StartServer(scfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer srv.Shutdown()

	payloads, trajs := makeTrajectories(cfg.N, cfg.Tokens)
	storage := "file"
	if cfg.Memory {
		storage = "memory"
	}
	benchMemory = cfg.Memory
	fmt.Fprintf(w, "dataplane: %d trajectories of %d tokens (%d bytes each encoded), %d CPUs, GOMAXPROCS %d, %s storage\n",
		cfg.N, cfg.Tokens, len(payloads[0]), runtime.NumCPU(), runtime.GOMAXPROCS(0), storage)
	var bestBare, bestPipe time.Duration
	var ratios []float64
	// Process CPU (server included), summed over reps: over the whole
	// repetition (set-up of connections, streams and consumers included) and
	// over the timed window only (the one the wall-clock rates use).
	var cpuBare, cpuPipe, winBare, winPipe time.Duration
	var flowBare, flowPipe flow // of the last repetition
	for r := range cfg.Reps {
		var bare, pipe timed
		c0 := processCPU()
		if runBare {
			if bare, flowBare, err = benchBare(ctx, srv, fmt.Sprintf("bare%d", r), payloads); err != nil {
				return fmt.Errorf("bare: %w", err)
			}
		}
		c1 := processCPU()
		if runPipe {
			if pipe, flowPipe, err = benchPipeline(ctx, srv, fmt.Sprintf("pipe%d", r), trajs, cfg.VerifierConcurrency); err != nil {
				return fmt.Errorf("pipeline: %w", err)
			}
		}
		c2 := processCPU()
		cpuBare += c1 - c0
		cpuPipe += c2 - c1
		winBare += bare.cpu
		winPipe += pipe.cpu
		us := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(cfg.N) }
		if !runBare || !runPipe {
			t, c := bare, c1-c0
			if runPipe {
				t, c = pipe, c2-c1
			}
			fmt.Fprintf(w, "  rep %d: %s %.0f traj/s (%.2fs wall); CPU per trajectory %.0f us in the timed window, %.0f us with set-up\n", r+1, cfg.Phase,
				float64(cfg.N)/t.wall.Seconds(), t.wall.Seconds(), us(t.cpu), us(c))
			continue
		}
		fmt.Fprintf(w, "  rep %d: bare %.0f traj/s (%.2fs wall, %.2fs CPU, %.2fs with set-up), pipeline %.0f traj/s (%.2fs wall, %.2fs CPU, %.2fs with set-up)\n", r+1,
			float64(cfg.N)/bare.wall.Seconds(), bare.wall.Seconds(), bare.cpu.Seconds(), (c1 - c0).Seconds(),
			float64(cfg.N)/pipe.wall.Seconds(), pipe.wall.Seconds(), pipe.cpu.Seconds(), (c2 - c1).Seconds())
		ratios = append(ratios, bare.wall.Seconds()/pipe.wall.Seconds())
		if bestBare == 0 || bare.wall < bestBare {
			bestBare = bare.wall
		}
		if bestPipe == 0 || pipe.wall < bestPipe {
			bestPipe = pipe.wall
		}
	}
	var skelWin time.Duration
	var flowSkel flow
	if cfg.Skeleton {
		for r := range cfg.Reps {
			t, f, err := benchSkeleton(ctx, srv, fmt.Sprintf("skel%d", r), payloads, trajs)
			if err != nil {
				return fmt.Errorf("skeleton: %w", err)
			}
			skelWin += t.cpu
			flowSkel = f
			fmt.Fprintf(w, "  rep %d: skeleton %.0f traj/s (%.2fs wall, %.2fs CPU)\n", r+1, float64(cfg.N)/t.wall.Seconds(), t.wall.Seconds(), t.cpu.Seconds())
		}
	}
	var ops []opCosts
	if cfg.Ops {
		for r := range cfg.Reps {
			c, err := measureOps(ctx, srv, fmt.Sprintf("ops%d", r), payloads, trajs)
			if err != nil {
				return fmt.Errorf("ops: %w", err)
			}
			ops = append(ops, c)
		}
	}
	// CPU per role: the pipeline once more per repetition under a CPU
	// profile, its roles labelled (labels.go); outside the timed
	// repetitions, so that profiling costs them nothing.
	var roleCPU map[string]int64
	var roleSamples int
	if runPipe && cfg.CPUProfile == "" {
		var buf bytes.Buffer
		if err := pprof.StartCPUProfile(&buf); err != nil {
			return err
		}
		for r := range cfg.Reps {
			if _, _, err := benchPipeline(ctx, srv, fmt.Sprintf("prof%d", r), trajs, cfg.VerifierConcurrency); err != nil {
				pprof.StopCPUProfile()
				return fmt.Errorf("pipeline (profiled): %w", err)
			}
		}
		pprof.StopCPUProfile()
		if roleCPU, roleSamples, err = labelCPU(buf.Bytes(), "role"); err != nil {
			return err
		}
	}
	per := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(cfg.N*cfg.Reps) }
	if runBare {
		flowBare.print(w, "bare:", cfg.N, []string{"publisher", "consumer"})
	}
	if runPipe {
		flowPipe.print(w, "pipeline:", cfg.N, roleNames)
	}
	if cfg.Skeleton {
		flowSkel.print(w, "skeleton:", cfg.N, roleNames)
	}
	if roleCPU != nil {
		var total int64
		for _, ns := range roleCPU {
			total += ns
		}
		parts := make([]string, 0, len(roleNames)+1)
		for _, r := range roleNames {
			parts = append(parts, fmt.Sprintf("%s %.0f us", r, float64(roleCPU[r])/1e3/float64(cfg.N*cfg.Reps)))
		}
		parts = append(parts, fmt.Sprintf("embedded server and runtime (unlabelled) %.0f us", float64(roleCPU[""])/1e3/float64(cfg.N*cfg.Reps)))
		fmt.Fprintf(w, "pipeline CPU per trajectory by role (CPU profile of %d more repetitions, %d samples, set-up included; total %.0f us): %s\n",
			cfg.Reps, roleSamples, float64(total)/1e3/float64(cfg.N*cfg.Reps), strings.Join(parts, ", "))
	}
	if cfg.Skeleton {
		fmt.Fprintf(w, "CPU per trajectory of the pipeline's message flow alone (skeleton), timed window: %.0f us\n", per(skelWin))
	}
	if len(ops) > 0 {
		share := 0.0 // what the replay service fetches: the correct ones
		for i := range trajs {
			if (i%97)+(i%2) == i%97 {
				share++
			}
		}
		printOps(w, medianOps(ops), share/float64(len(trajs)))
	}
	if !runBare || !runPipe {
		return nil
	}
	bt, pt := float64(cfg.N)/bestBare.Seconds(), float64(cfg.N)/bestPipe.Seconds()
	fmt.Fprintf(w, "bare JetStream publish+consume: %.0f traj/s (%.1f MB/s)\n", bt, bt*float64(len(payloads[0]))/1e6)
	fmt.Fprintf(w, "pipeline actor->ROLLOUTS->verifier->SCORED verdicts->learner join->CONTROL->replay fetch: %.0f traj/s\n", pt)
	fmt.Fprintf(w, "CPU per trajectory (all roles and the server in this process), timed window: bare %.0f us, pipeline %.0f us; CPU-bound ratio %.2f\n",
		per(winBare), per(winPipe), winBare.Seconds()/winPipe.Seconds())
	fmt.Fprintf(w, "CPU per trajectory with set-up (connections, streams, consumers): bare %.0f us, pipeline %.0f us; ratio %.2f\n",
		per(cpuBare), per(cpuPipe), cpuBare.Seconds()/cpuPipe.Seconds())
	if cfg.Skeleton {
		fmt.Fprintf(w, "skeleton CPU-bound ratio (its ceiling: bare CPU / skeleton CPU, timed windows): %.2f\n", winBare.Seconds()/skelWin.Seconds())
	}
	sort.Float64s(ratios)
	fmt.Fprintf(w, "ratio pipeline/bare: %.2f of the bests, %.2f median of the %d adjacent pairs (goal >= 0.60)\n",
		pt/bt, ratios[len(ratios)/2], len(ratios))
	return nil
}

// timed is one measurement: wall time and process CPU time, both from the
// first publish until the last message was consumed.
type timed struct{ wall, cpu time.Duration }

// benchMemory selects memory storage for the measurement's streams.
var benchMemory bool

// makeTrajectories builds n trajectories with `tokens` response tokens each
// (random ids, log-probs and entropies; an arith answer half of them get
// right) and their encodings.
func makeTrajectories(n, tokens int) ([][]byte, []wire.Trajectory) {
	rng := rand.New(rand.NewPCG(1, 2))
	trajs := make([]wire.Trajectory, n)
	payloads := make([][]byte, n)
	for i := range trajs {
		tok := make(wire.Int32s, tokens)
		lp := make(wire.Float32s, tokens)
		ent := make(wire.Float32s, tokens)
		for j := range tok {
			tok[j] = rng.Int32N(40)
			lp[j] = -rng.Float32() * 3
			ent[j] = rng.Float32() * 2
		}
		ans := strconv.Itoa(i % 97)
		text := strings.Repeat("1+1=2,", tokens/6) + "\\boxed{" + strconv.Itoa((i%97)+(i%2)) + "}"
		trajs[i] = wire.Trajectory{ID: fmt.Sprintf("%d/q%d/%d", i/8, i/8, i%8), TaskID: fmt.Sprintf("%d/q%d", i/8, i/8),
			QuestionID: fmt.Sprintf("q%d", i/8), Index: i % 8, PromptTokens: make(wire.Int32s, 32),
			Tokens: tok, LogProbs: lp, Entropies: ent, Text: text, Finish: "length", Answer: ans, Kind: "arith"}
		b, err := wire.Encode(&trajs[i])
		if err != nil {
			panic(err)
		}
		payloads[i] = b
	}
	return payloads, trajs
}

func benchBus(ctx context.Context, srv *bus.Server, run, name string) (*nats.Conn, *bus.Bus, error) {
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: name}, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	cfg := bus.DefaultConfig(run)
	if cfg.Memory = benchMemory; cfg.Memory { // memory streams reserve their limits
		cfg.WorkQueueMaxBytes, cfg.RolloutsMaxBytes, cfg.ScoredMaxBytes, cfg.ExperienceMaxBytes = 64<<20, 256<<20, 64<<20, 64<<20
		cfg.ControlMaxBytes, cfg.DeadMaxBytes = 64<<20, 64<<20
	}
	b, err := bus.Open(ctx, nc, cfg, zap.NewNop())
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, b, nil
}

// benchBare: one publisher (async, bounded in flight, the same bytes) and
// one pull consumer acking each message, concurrently, on a plain stream.
func benchBare(ctx context.Context, srv *bus.Server, run string, payloads [][]byte) (timed, flow, error) {
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "bare-pub"}, zap.NewNop())
	if err != nil {
		return timed{}, flow{}, err
	}
	defer nc.Close()
	nc2, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "bare-sub"}, zap.NewNop())
	if err != nil {
		return timed{}, flow{}, err
	}
	defer nc2.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2048))
	js2, _ := jetstream.New(nc2)
	name := "BARE_" + strings.ToUpper(run)
	subj := "bare." + run
	storage := jetstream.FileStorage
	if benchMemory {
		storage = jetstream.MemoryStorage
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, MaxMsgSize: bus.MaxPayload, Storage: storage, MaxBytes: 256 << 20}); err != nil {
		return timed{}, flow{}, err
	}
	cons, err := js2.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return timed{}, flow{}, err
	}
	conns := map[string]*nats.Conn{"publisher": nc, "consumer": nc2}
	before := connStats(conns)
	start, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		futs := make([]jetstream.PubAckFuture, 0, len(payloads))
		for _, p := range payloads {
			f, err := js.PublishAsync(subj, p, jetstream.WithStallWait(time.Minute))
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-gctx.Done():
			return gctx.Err()
		}
		for _, f := range futs { // every ack checked, as the pipeline does
			select {
			case err := <-f.Err():
				return err
			default:
			}
		}
		return nil
	})
	g.Go(func() error { return consumeN(gctx, cons, len(payloads), nil) })
	if err := g.Wait(); err != nil {
		return timed{}, flow{}, err
	}
	el := timed{time.Since(start), processCPU() - cpu0}
	f, err := measureFlow(ctx, js, map[string]string{"BARE": name}, conns, before)
	_ = js.DeleteStream(ctx, name)
	return el, f, err
}

// pull starts a continuous pull on cons with up to buffered messages held;
// it stops when ctx ends or stop is called.
func pull(ctx context.Context, cons jetstream.Consumer, buffered int) (it jetstream.MessagesContext, stop func(), err error) {
	it, err = cons.Messages(jetstream.PullMaxMessages(buffered))
	if err != nil {
		return nil, nil, err
	}
	unhook := context.AfterFunc(ctx, it.Stop)
	return it, func() { unhook(); it.Stop() }, nil
}

// consumeN pulls (a continuous pull with up to 512 messages buffered) and
// acks until n messages were seen; each is passed to f (which may be nil).
func consumeN(ctx context.Context, cons jetstream.Consumer, n int, f func(jetstream.Msg) error) error {
	it, stop, err := pull(ctx, cons, 512)
	if err != nil {
		return err
	}
	defer stop()
	for seen := 0; seen < n; seen++ {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if f != nil {
			if err := f(m); err != nil {
				return err
			}
		}
		if err := m.Ack(); err != nil {
			return err
		}
	}
	return nil
}

// The pipeline of ARCHITECTURE.md's data path, as the roles run it: each
// trajectory is stored once, on ROLLOUTS; the verifier publishes a small
// verdict on SCORED naming its ROLLOUTS sequence; the learner follows
// ROLLOUTS, joins each trajectory with its verdict and publishes a step
// report on CONTROL every stepGroups groups, naming each trajectory's
// sequence; the replay service reads the reports and fetches by sequence
// only the trajectories its pool would store (a mixed step's correct ones,
// replay/service.Named).

// verdictBatch is the verifier's default VerdictBatch, for the skeleton's
// stand-in.
var verdictBatch = worker.DefaultConfig().VerdictBatch

// stepGroups is how many groups of 8 a step report of the benchmark holds.
const stepGroups = 8

// roleNames are the pipeline's roles, each on its own connection.
var roleNames = []string{"actor", "verifier", "learner", "replay"}

// flow is what one measurement moved through JetStream, from stream and
// connection statistics: the bytes and messages each stream stores at the
// end, and the bytes each role's connection received (deliveries, acks of
// its publishes, replies) and sent.
type flow struct {
	streams []streamUse
	in, out map[string]uint64
}

type streamUse struct {
	kind        string
	msgs, bytes uint64
	stored      uint64 // messages ever stored (last sequence): a work queue removes what is acked
}

// connStats snapshots the connections' byte counters.
func connStats(conns map[string]*nats.Conn) map[string]nats.Statistics {
	out := make(map[string]nats.Statistics, len(conns))
	for r, nc := range conns {
		out[r] = nc.Stats()
	}
	return out
}

// measureFlow reads the streams' sizes and the connections' byte counts
// since before.
func measureFlow(ctx context.Context, js jetstream.JetStream, streams map[string]string, conns map[string]*nats.Conn, before map[string]nats.Statistics) (flow, error) {
	f := flow{in: map[string]uint64{}, out: map[string]uint64{}}
	for _, kind := range sortedKeys(streams) {
		st, err := js.Stream(ctx, streams[kind])
		if err != nil {
			return f, err
		}
		info := st.CachedInfo()
		f.streams = append(f.streams, streamUse{kind: kind, msgs: info.State.Msgs, bytes: info.State.Bytes, stored: info.State.LastSeq})
	}
	for r, nc := range conns {
		s := nc.Stats()
		f.in[r], f.out[r] = s.InBytes-before[r].InBytes, s.OutBytes-before[r].OutBytes
	}
	return f, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// runStreams names the pipeline's streams of run b by kind.
func runStreams(b *bus.Bus) map[string]string {
	out := map[string]string{}
	for _, k := range []bus.Kind{bus.Rollouts, bus.Scored, bus.Control} {
		out[string(k)] = b.Names.Stream(k)
	}
	return out
}

// print writes the per-trajectory bytes of f.
func (f flow) print(w io.Writer, label string, n int, roles []string) {
	var total uint64
	var parts []string
	for _, s := range f.streams {
		total += s.bytes
		parts = append(parts, fmt.Sprintf("%s %.0f B (%.2f msgs held, %.2f stored)", s.kind, float64(s.bytes)/float64(n), float64(s.msgs)/float64(n), float64(s.stored)/float64(n)))
	}
	fmt.Fprintf(w, "%s bytes stored per trajectory (stream info): %.0f B: %s\n", label, float64(total)/float64(n), strings.Join(parts, ", "))
	var in, out uint64
	parts = parts[:0]
	for _, r := range roles {
		in, out = in+f.in[r], out+f.out[r]
		parts = append(parts, fmt.Sprintf("%s %.0f B in / %.0f B out", r, float64(f.in[r])/float64(n), float64(f.out[r])/float64(n)))
	}
	fmt.Fprintf(w, "%s bytes delivered per trajectory (connection counters, protocol included): %.0f B to the roles: %s\n",
		label, float64(in)/float64(n), strings.Join(parts, ", "))
}

// labelled runs f under pprof label role=<role> (see labels.go); goroutines
// it starts inherit the label.
func labelled(ctx context.Context, role string, f func(context.Context) error) error {
	var err error
	pprof.Do(ctx, pprof.Labels("role", role), func(ctx context.Context) { err = f(ctx) })
	return err
}

// benchSkeleton moves the pipeline's messages and nothing else: the same
// streams, consumers, message ids, publishers, acks and gets by sequence as
// benchPipeline, with pre-encoded trajectories, a verifier stand-in that
// publishes a verdict-sized payload carrying the ROLLOUTS sequence (256 in
// flight, acking after the SCORED ack), a learner stand-in that follows
// ROLLOUTS and the verdicts without decoding and reports every other
// trajectory of each 64 as a sequence list, and a replay stand-in that
// fetches those by sequence. Its CPU is what JetStream and its client cost
// for this topology: the floor for any verifier and codec.
func benchSkeleton(ctx context.Context, srv *bus.Server, run string, payloads [][]byte, trajs []wire.Trajectory) (timed, flow, error) {
	rs, closeAll, err := dataplaneRoles(ctx, srv, run)
	if err != nil {
		return timed{}, flow{}, err
	}
	defer closeAll()
	defer dropStreams(rs.b["verifier"])
	vb, lb, rb := rs.b["verifier"], rs.b["learner"], rs.b["replay"]
	verdicts := make(chan uint64, 4096)
	// A verdict's size as the verifier encodes it in a batch.
	vsize := len(mustEncode(&wire.Verdict{RunID: run, ID: trajs[0].ID, TaskID: trajs[0].TaskID, Seq: 1 << 20, Size: len(payloads[0]),
		Reward: 1, Reason: "correct", Extracted: "42", VerifyMicros: 12}))
	followV, err := lb.Follow(ctx, bus.Scored, func(m jetstream.Msg) {
		for d := m.Data(); len(d) >= vsize; d = d[vsize:] {
			verdicts <- binary.LittleEndian.Uint64(d)
		}
	}, nil)
	if err != nil {
		return timed{}, flow{}, err
	}
	defer followV.Stop()
	reportCons, err := rb.Reader(ctx, bus.Control, "replay", bus.ReaderOptions{})
	if err != nil {
		return timed{}, flow{}, err
	}
	rollCons, err := vb.Shared(ctx, bus.Rollouts)
	if err != nil {
		return timed{}, flow{}, err
	}
	rolled := make(chan uint64, 4096)
	follow, err := lb.Follow(ctx, bus.Rollouts, func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil {
			rolled <- md.Sequence.Stream
		}
	}, nil)
	if err != nil {
		return timed{}, flow{}, err
	}
	defer follow.Stop()
	subj := rs.b["actor"].Names.Subject(bus.Rollouts)
	want := 0 // trajectories the replay stand-in fetches: every other one of each 64
	for i := 0; i < len(payloads); i += 64 {
		want += (min(64, len(payloads)-i) + 1) / 2
	}
	before := connStats(rs.nc)
	start, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return labelled(gctx, "actor", func(ctx context.Context) error {
			return publishRollouts(ctx, rs.pub["actor"], subj, len(trajs), func(i int) string { return trajs[i].ID },
				func(i int) ([]byte, error) { return payloads[i], nil })
		})
	})
	g.Go(func() error {
		return labelled(gctx, "verifier", func(ctx context.Context) error {
			it, stop, err := pull(ctx, rollCons, 256)
			if err != nil {
				return err
			}
			defer stop()
			subj := vb.Names.Subject(bus.Scored)
			// The worker's group commit: what is in hand while earlier
			// verdict messages wait for their acks goes in the next one.
			in := make(chan jetstream.Msg, 256)
			var failed atomic.Pointer[error]
			vg, vctx := errgroup.WithContext(ctx)
			vg.Go(func() error {
				defer close(in)
				for range payloads {
					m, err := it.Next()
					if err != nil {
						return err
					}
					in <- m
				}
				return nil
			})
			groupcommit.Run(in, verdictBatch, 2, func(ms []jetstream.Msg) {
				v := make([]byte, vsize*len(ms))
				for i, m := range ms {
					md, err := m.Metadata()
					if err != nil {
						failed.Store(&err)
						return
					}
					binary.LittleEndian.PutUint64(v[i*vsize:], md.Sequence.Stream)
				}
				batch := rs.pub["verifier"].Batch()
				err := batch.Add(vctx, subj, fmt.Sprintf("%s+%d", ms[0].Headers().Get(jetstream.MsgIDHeader), len(ms)-1), v)
				if err == nil {
					err = batch.Wait(vctx)
				}
				for _, m := range ms {
					if err == nil {
						err = m.Ack()
					}
				}
				if err != nil {
					failed.Store(&err)
				}
			})
			if err := vg.Wait(); err != nil {
				return err
			}
			if err := failed.Load(); err != nil {
				return *err
			}
			return nil
		})
	})
	g.Go(func() error {
		return labelled(gctx, "learner", func(ctx context.Context) error {
			seen, graded := map[uint64]bool{}, map[uint64]bool{}
			var step []uint64
			joined, steps := 0, 0
			report := func() error {
				rep := make([]byte, 0, 8*len(step)/2+8)
				for i := 0; i < len(step); i += 2 {
					rep = binary.LittleEndian.AppendUint64(rep, step[i])
				}
				step = step[:0]
				steps++
				_, err := rs.pub["learner"].Publish(ctx, lb.Names.Subject(bus.Control), fmt.Sprintf("step/%d", steps), rep)
				return err
			}
			join := func(seq uint64) error {
				joined++
				if step = append(step, seq); len(step) == 64 || joined == len(payloads) {
					return report()
				}
				return nil
			}
			for joined < len(payloads) {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case seq := <-rolled:
					if graded[seq] {
						delete(graded, seq)
						if err := join(seq); err != nil {
							return err
						}
					} else {
						seen[seq] = true
					}
				case seq := <-verdicts:
					if seen[seq] {
						delete(seen, seq)
						if err := join(seq); err != nil {
							return err
						}
					} else {
						graded[seq] = true
					}
				}
			}
			return nil
		})
	})
	g.Go(func() error {
		return labelled(gctx, "replay", func(ctx context.Context) error {
			fetched := 0
			it, stop, err := pull(ctx, reportCons, 64)
			if err != nil {
				return err
			}
			defer stop()
			for fetched < want {
				m, err := it.Next()
				if err != nil {
					return err
				}
				seqs := make([]uint64, 0, len(m.Data())/8)
				for d := m.Data(); len(d) >= 8; d = d[8:] {
					seqs = append(seqs, binary.LittleEndian.Uint64(d))
				}
				n, err := fetchAll(ctx, rb, seqs, nil)
				if err != nil {
					return err
				}
				fetched += n
				if err := m.Ack(); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err := g.Wait(); err != nil {
		return timed{}, flow{}, err
	}
	el := timed{time.Since(start), processCPU() - cpu0}
	f, err := measureFlow(ctx, vb.JS, runStreams(vb), rs.nc, before)
	return el, f, err
}

// fetchAll gets the given ROLLOUTS sequences (asking again for those a
// replica could not serve yet), passes each message to fn (nil: none) and
// returns how many it got. A sequence ROLLOUTS no longer holds is an error
// here: nothing is discarded in a measurement.
func fetchAll(ctx context.Context, b *bus.Bus, seqs []uint64, fn func([]byte) error) (int, error) {
	n := 0
	for tries := 0; len(seqs) > 0; tries++ {
		got, err := b.GetRollouts(ctx, seqs)
		if err != nil {
			return n, err
		}
		if len(got.Gone) > 0 {
			return n, fmt.Errorf("ROLLOUTS no longer holds sequences %v", got.Gone)
		}
		for _, m := range got.Msgs {
			if fn != nil {
				if err := fn(m.Data); err != nil {
					return n, err
				}
			}
			n++
		}
		if seqs = got.Later; len(seqs) > 0 && tries == 20 {
			return n, fmt.Errorf("ROLLOUTS did not serve %d sequences: %v", len(seqs), got.Err)
		}
	}
	return n, nil
}

func mustEncode(m wire.Message) []byte {
	b, err := wire.Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

// benchPipeline: an actor-side publisher encodes and publishes every
// trajectory to ROLLOUTS by id; a verifier worker grades each and publishes
// its verdict to SCORED; a learner-like reader follows ROLLOUTS and the
// verdicts, decodes and joins them by sequence and publishes a step report
// every stepGroups complete groups; a replay-like reader folds the reports'
// named trajectories: it fetches the correct ones by sequence (the pool's
// share) and decodes them. Timed until the learner joined all and the
// replay reader fetched every correct one.
func benchPipeline(ctx context.Context, srv *bus.Server, run string, trajs []wire.Trajectory, conc int) (timed, flow, error) {
	rs, closeAll, err := dataplaneRoles(ctx, srv, run)
	if err != nil {
		return timed{}, flow{}, err
	}
	defer closeAll()
	defer dropStreams(rs.b["verifier"]) // after the worker stopped (deferred later, run earlier)
	ab, vb, lb, rb := rs.b["actor"], rs.b["verifier"], rs.b["learner"], rs.b["replay"]
	reportCons, err := rb.Reader(ctx, bus.Control, "replay", bus.ReaderOptions{})
	if err != nil {
		return timed{}, flow{}, err
	}
	wcfg := worker.DefaultConfig()
	wcfg.Concurrency = conc
	wctx, stopWorker := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	err = labelled(wctx, "verifier", func(wctx context.Context) error {
		w, err := worker.New(vb, wcfg, zap.NewNop(), nil)
		if err != nil {
			return err
		}
		go func() { wdone <- w.Run(wctx) }()
		return nil
	})
	if err != nil {
		stopWorker()
		return timed{}, flow{}, err
	}
	defer func() { stopWorker(); <-wdone }()
	rolled, verdicts := make(chan jetstream.Msg, 4096), make(chan jetstream.Msg, 4096)
	var follow, followV jetstream.ConsumeContext
	err = labelled(ctx, "learner", func(ctx context.Context) error {
		var err error
		if follow, err = lb.Follow(ctx, bus.Rollouts, func(m jetstream.Msg) { rolled <- m }, nil); err != nil {
			return err
		}
		followV, err = lb.Follow(ctx, bus.Scored, func(m jetstream.Msg) { verdicts <- m }, nil)
		return err
	})
	if follow != nil {
		defer follow.Stop()
	}
	if followV != nil {
		defer followV.Stop()
	}
	if err != nil {
		return timed{}, flow{}, err
	}
	want := 0 // correct trajectories: what a mixed step's reports name for the pool
	for i := range trajs {
		if (i%97)+(i%2) == i%97 {
			want++
		}
	}
	before := connStats(rs.nc)
	start, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return labelled(gctx, "actor", func(ctx context.Context) error {
			err := publishRollouts(ctx, rs.pub["actor"], ab.Names.Subject(bus.Rollouts), len(trajs), func(i int) string { return trajs[i].ID },
				func(i int) ([]byte, error) { return wire.Encode(&trajs[i]) })
			if os.Getenv("EXGRPO_BENCH_DEBUG") != "" {
				fmt.Fprintf(os.Stdout, "    actor published all after %.2fs: %+v\n", time.Since(start).Seconds(), rs.pub["actor"].Stats())
			}
			return err
		})
	})
	g.Go(func() error {
		return labelled(gctx, "learner", func(ctx context.Context) error {
			return learnerStandIn(ctx, lb, rs.pub["learner"], verdicts, rolled, len(trajs))
		})
	})
	var stored atomic.Int64
	g.Go(func() error {
		return labelled(gctx, "replay", func(ctx context.Context) error {
			it, stop, err := pull(ctx, reportCons, 64)
			if err != nil {
				return err
			}
			defer stop()
			for stored.Load() < int64(want) {
				m, err := it.Next()
				if err != nil {
					return err
				}
				var rep wire.StepReport
				if err := wire.Decode(m.Data(), &rep); err != nil {
					return err
				}
				named := rsvc.Named(&rep)
				seqs := make([]uint64, len(named))
				ids := make(map[string]bool, len(named))
				for i, n := range named {
					seqs[i], ids[n.ID] = n.Seq, true
				}
				_, err = fetchAll(ctx, rb, seqs, func(data []byte) error {
					var t wire.Trajectory
					if err := wire.Decode(data, &t); err != nil {
						return err
					}
					if !ids[t.ID] {
						return fmt.Errorf("fetched trajectory %s, which the report does not name", t.ID)
					}
					stored.Add(1)
					return nil
				})
				if err != nil {
					return err
				}
				if err := m.Ack(); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if os.Getenv("EXGRPO_BENCH_DEBUG") != "" {
		go func() {
			for gctx.Err() == nil {
				time.Sleep(250 * time.Millisecond)
				lr, _ := vb.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer)
				ll, _ := vb.ConsumerLag(ctx, bus.Scored, "learner")
				fmt.Fprintf(os.Stdout, "    %.2fs rollouts %+v verdicts %+v stored %d\n", time.Since(start).Seconds(), lr, ll, stored.Load())
			}
		}()
	}
	if err := g.Wait(); err != nil {
		return timed{}, flow{}, err
	}
	el := timed{time.Since(start), processCPU() - cpu0}
	if got := stored.Load(); got != int64(want) {
		return timed{}, flow{}, fmt.Errorf("the replay reader fetched %d trajectories, want the %d correct ones", got, want)
	}
	f, err := measureFlow(ctx, vb.JS, runStreams(vb), rs.nc, before)
	return el, f, err
}

// learnerStandIn joins n trajectories (followed on ROLLOUTS) with their
// verdicts (SCORED) by sequence, as the learner service does (decoding
// both), and publishes a mixed-mode step report every stepGroups complete
// groups of 8, naming each trajectory's id, reward and ROLLOUTS sequence.
func learnerStandIn(ctx context.Context, b *bus.Bus, pub *bus.Publisher, verdicts, rolled <-chan jetstream.Msg, n int) error {
	trajs := map[uint64]*wire.Trajectory{}
	waiting := map[uint64]*wire.Verdict{}
	type member struct {
		id     string
		seq    uint64
		reward float32
	}
	groups := map[string][]member{}
	var rep wire.StepReport
	joined := 0
	publish := func() error {
		if len(rep.Groups) == 0 {
			return nil
		}
		rep.RunID, rep.Mixed = b.Names.Run, true
		data, err := wire.Encode(&rep)
		if err != nil {
			return err
		}
		_, err = pub.Publish(ctx, b.Names.Subject(bus.Control), fmt.Sprintf("step/%d", rep.Step), data)
		rep = wire.StepReport{Step: rep.Step + 1}
		return err
	}
	join := func(t *wire.Trajectory, v *wire.Verdict) error {
		if t.ID != v.ID {
			return fmt.Errorf("verdict for %s names the sequence of %s", v.ID, t.ID)
		}
		joined++
		g := append(groups[t.TaskID], member{t.ID, v.Seq, v.Reward})
		groups[t.TaskID] = g
		if len(g) == 8 {
			delete(groups, t.TaskID)
			sort.Slice(g, func(i, j int) bool { return g[i].id < g[j].id })
			gr := wire.GroupReport{QuestionID: t.QuestionID, Size: 8}
			for _, m := range g {
				gr.TrajectoryIDs, gr.Rewards, gr.Seqs = append(gr.TrajectoryIDs, m.id), append(gr.Rewards, m.reward), append(gr.Seqs, m.seq)
				gr.Correct += int(m.reward)
			}
			rep.Groups = append(rep.Groups, gr)
			if len(rep.Groups) == stepGroups {
				return publish()
			}
		}
		return nil
	}
	for joined < n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-rolled:
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			t := new(wire.Trajectory)
			if err := wire.Decode(m.Data(), t); err != nil {
				return err
			}
			seq := md.Sequence.Stream
			if v, ok := waiting[seq]; ok {
				delete(waiting, seq)
				if err := join(t, v); err != nil {
					return err
				}
			} else {
				trajs[seq] = t
			}
		case m := <-verdicts:
			vs, err := wire.DecodeVerdicts(m.Data())
			if err != nil {
				return err
			}
			for i := range vs {
				v := &vs[i]
				if t, ok := trajs[v.Seq]; ok {
					delete(trajs, v.Seq)
					if err := join(t, v); err != nil {
						return err
					}
				} else {
					waiting[v.Seq] = v
				}
			}
		}
	}
	for _, task := range sortedKeys(groups) { // the last, short group when n is not a multiple of 8
		g := groups[task]
		gr := wire.GroupReport{QuestionID: task, Size: len(g)}
		for _, m := range g {
			gr.TrajectoryIDs, gr.Rewards, gr.Seqs = append(gr.TrajectoryIDs, m.id), append(gr.Rewards, m.reward), append(gr.Seqs, m.seq)
			gr.Correct += int(m.reward)
		}
		rep.Groups = append(rep.Groups, gr)
	}
	return publish()
}

// roles is one measurement's connections, buses and publishers by role.
type roles struct {
	nc  map[string]*nats.Conn
	b   map[string]*bus.Bus
	pub map[string]*bus.Publisher
}

// dataplaneRoles opens a connection, the run's bus and a publisher for each
// role of the pipeline (actor, verifier, learner, replay), each under its
// role's pprof label. closeAll closes them, the last opened first.
func dataplaneRoles(ctx context.Context, srv *bus.Server, run string) (roles, func(), error) {
	rs := roles{nc: map[string]*nats.Conn{}, b: map[string]*bus.Bus{}, pub: map[string]*bus.Publisher{}}
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	for _, name := range roleNames {
		err := labelled(ctx, name, func(ctx context.Context) error {
			nc, b, err := benchBus(ctx, srv, run, name)
			if err != nil {
				return err
			}
			closers = append(closers, nc.Close)
			pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
			if err != nil {
				return err
			}
			closers = append(closers, pub.Close)
			rs.nc[name], rs.b[name], rs.pub[name] = nc, b, pub
			return nil
		})
		if err != nil {
			closeAll()
			return roles{}, nil, err
		}
	}
	return rs, closeAll, nil
}

// publishRollouts publishes payload(i) for each of n trajectories to
// subject under id(i), waiting for the acks after every 64 (an actor waits
// per task; keep its pace).
func publishRollouts(ctx context.Context, pub *bus.Publisher, subject string, n int, id func(i int) string, payload func(i int) ([]byte, error)) error {
	batch := pub.Batch()
	for i := range n {
		data, err := payload(i)
		if err != nil {
			return err
		}
		if err := batch.Add(ctx, subject, id(i), data); err != nil {
			return err
		}
		if batch.Len() == 64 {
			if err := batch.Wait(ctx); err != nil {
				return err
			}
		}
	}
	return batch.Wait(ctx)
}

// dropStreams deletes a measurement's streams once it is over, so that the
// repetitions do not add up to the server's storage limit.
func dropStreams(b *bus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, k := range bus.Kinds {
		_ = b.JS.DeleteStream(ctx, b.Names.Stream(k))
	}
}
