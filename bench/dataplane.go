package bench

import (
	"context"
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
	for r := range cfg.Reps {
		var bare, pipe timed
		c0 := processCPU()
		if runBare {
			if bare, err = benchBare(ctx, srv, fmt.Sprintf("bare%d", r), payloads); err != nil {
				return fmt.Errorf("bare: %w", err)
			}
		}
		c1 := processCPU()
		if runPipe {
			if pipe, err = benchPipeline(ctx, srv, fmt.Sprintf("pipe%d", r), trajs, cfg.VerifierConcurrency); err != nil {
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
	if cfg.Skeleton {
		var win time.Duration
		for r := range cfg.Reps {
			t, err := benchSkeleton(ctx, srv, fmt.Sprintf("skel%d", r), payloads, trajs)
			if err != nil {
				return fmt.Errorf("skeleton: %w", err)
			}
			win += t.cpu
			fmt.Fprintf(w, "  rep %d: skeleton %.0f traj/s (%.2fs wall, %.2fs CPU)\n", r+1, float64(cfg.N)/t.wall.Seconds(), t.wall.Seconds(), t.cpu.Seconds())
		}
		fmt.Fprintf(w, "CPU per trajectory of the pipeline's message flow alone (skeleton), timed window: %.0f us\n",
			win.Seconds()*1e6/float64(cfg.N*cfg.Reps))
	}
	if !runBare || !runPipe {
		return nil
	}
	bt, pt := float64(cfg.N)/bestBare.Seconds(), float64(cfg.N)/bestPipe.Seconds()
	fmt.Fprintf(w, "bare JetStream publish+consume: %.0f traj/s (%.1f MB/s)\n", bt, bt*float64(len(payloads[0]))/1e6)
	fmt.Fprintf(w, "pipeline actor->verifier->SCORED->learner+replay: %.0f traj/s\n", pt)
	per := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(cfg.N*cfg.Reps) }
	fmt.Fprintf(w, "CPU per trajectory (all roles and the server in this process), timed window: bare %.0f us, pipeline %.0f us; CPU-bound ratio %.2f\n",
		per(winBare), per(winPipe), winBare.Seconds()/winPipe.Seconds())
	fmt.Fprintf(w, "CPU per trajectory with set-up (connections, streams, consumers): bare %.0f us, pipeline %.0f us; ratio %.2f\n",
		per(cpuBare), per(cpuPipe), cpuBare.Seconds()/cpuPipe.Seconds())
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
		cfg.WorkQueueMaxBytes, cfg.ScoredMaxBytes, cfg.ExperienceMaxBytes = 256<<20, 256<<20, 64<<20
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
func benchBare(ctx context.Context, srv *bus.Server, run string, payloads [][]byte) (timed, error) {
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "bare-pub"}, zap.NewNop())
	if err != nil {
		return timed{}, err
	}
	defer nc.Close()
	nc2, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "bare-sub"}, zap.NewNop())
	if err != nil {
		return timed{}, err
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
		return timed{}, err
	}
	cons, err := js2.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return timed{}, err
	}
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
		return timed{}, err
	}
	return timed{time.Since(start), processCPU() - cpu0}, nil
}

// consumeN pulls (a continuous pull with up to 512 messages buffered) and
// acks until n messages were seen; each is passed to f (which may be nil).
func consumeN(ctx context.Context, cons jetstream.Consumer, n int, f func(jetstream.Msg) error) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
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

// benchSkeleton moves the pipeline's messages and nothing else: the same
// streams, consumers, message ids, publishers and acks as benchPipeline,
// with the actor publishing pre-encoded bytes, a verifier stand-in
// republishing each ROLLOUTS payload unchanged to SCORED (256 in flight,
// acking after the SCORED ack) and readers that ack without decoding. Its
// CPU is what JetStream and its client cost for this topology: the floor
// for any verifier and codec.
func benchSkeleton(ctx context.Context, srv *bus.Server, run string, payloads [][]byte, trajs []wire.Trajectory) (timed, error) {
	ab, vb, lb, rb, closeAll, err := dataplaneRoles(ctx, srv, run)
	if err != nil {
		return timed{}, err
	}
	defer closeAll()
	defer dropStreams(vb)
	learnerCons, replayCons, err := scoredReaders(ctx, lb, rb)
	if err != nil {
		return timed{}, err
	}
	rollCons, err := vb.Shared(ctx, bus.Rollouts)
	if err != nil {
		return timed{}, err
	}
	vpub, err := vb.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		return timed{}, err
	}
	defer vpub.Close()
	apub, err := ab.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		return timed{}, err
	}
	defer apub.Close()
	start, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return publishRollouts(gctx, apub, ab, trajs, func(i int) ([]byte, error) { return payloads[i], nil })
	})
	g.Go(func() error {
		it, err := rollCons.Messages(jetstream.PullMaxMessages(256))
		if err != nil {
			return err
		}
		defer it.Stop()
		stop := context.AfterFunc(gctx, it.Stop)
		defer stop()
		subj := vb.Names.Subject(bus.Scored)
		slots := make(chan struct{}, 256)
		vg, vctx := errgroup.WithContext(gctx)
		for range payloads {
			m, err := it.Next()
			if err != nil {
				return err
			}
			slots <- struct{}{}
			vg.Go(func() error {
				defer func() { <-slots }()
				batch := vpub.Batch()
				if err := batch.Add(vctx, subj, m.Headers().Get(jetstream.MsgIDHeader), m.Data()); err != nil {
					return err
				}
				if err := batch.Wait(vctx); err != nil {
					return err
				}
				return m.Ack()
			})
		}
		return vg.Wait()
	})
	g.Go(func() error { return consumeN(gctx, learnerCons, len(payloads), nil) })
	g.Go(func() error { return consumeN(gctx, replayCons, len(payloads), nil) })
	if err := g.Wait(); err != nil {
		return timed{}, err
	}
	return timed{time.Since(start), processCPU() - cpu0}, nil
}

// benchPipeline: an actor-side publisher encodes and publishes every
// trajectory to ROLLOUTS by id; a verifier worker grades them into SCORED;
// a learner-like and a replay-like reader each decode and ack every scored
// trajectory. Timed until both readers saw all of them.
func benchPipeline(ctx context.Context, srv *bus.Server, run string, trajs []wire.Trajectory, conc int) (timed, error) {
	ab, vb, lb, rb, closeAll, err := dataplaneRoles(ctx, srv, run)
	if err != nil {
		return timed{}, err
	}
	defer closeAll()
	defer dropStreams(vb) // after the worker stopped (deferred later, run earlier)
	learnerCons, replayCons, err := scoredReaders(ctx, lb, rb)
	if err != nil {
		return timed{}, err
	}
	wcfg := worker.DefaultConfig()
	wcfg.Concurrency = conc
	w, err := worker.New(vb, wcfg, zap.NewNop(), nil)
	if err != nil {
		return timed{}, err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { stopWorker(); <-wdone }()

	var correct atomic.Int64
	decode := func(m jetstream.Msg) error {
		var s wire.Scored
		if err := wire.Decode(m.Data(), &s); err != nil {
			return err
		}
		if s.Reward == 1 {
			correct.Add(1)
		}
		return nil
	}
	pub, err := ab.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		return timed{}, err
	}
	defer pub.Close()
	start, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := publishRollouts(gctx, pub, ab, trajs, func(i int) ([]byte, error) { return wire.Encode(&trajs[i]) })
		if os.Getenv("EXGRPO_BENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stdout, "    actor published all after %.2fs: %+v\n", time.Since(start).Seconds(), pub.Stats())
		}
		return err
	})
	g.Go(func() error { return consumeN(gctx, learnerCons, len(trajs), decode) })
	g.Go(func() error { return consumeN(gctx, replayCons, len(trajs), decode) })
	if os.Getenv("EXGRPO_BENCH_DEBUG") != "" {
		go func() {
			for gctx.Err() == nil {
				time.Sleep(250 * time.Millisecond)
				lr, _ := vb.ConsumerLag(ctx, bus.Rollouts, bus.VerifiersConsumer)
				ll, _ := vb.ConsumerLag(ctx, bus.Scored, "learner")
				fmt.Fprintf(os.Stdout, "    %.2fs rollouts %+v learner %+v\n", time.Since(start).Seconds(), lr, ll)
				if f, err := os.Create(fmt.Sprintf("/tmp/dp-goroutines-%d.txt", time.Since(start)/time.Second)); err == nil {
					_ = pprof.Lookup("goroutine").WriteTo(f, 1)
					f.Close()
				}
			}
		}()
	}
	if err := g.Wait(); err != nil {
		return timed{}, err
	}
	el := timed{time.Since(start), processCPU() - cpu0}
	if got, want := correct.Load(), int64(len(trajs)); got != want { // half right, seen by both readers
		return timed{}, fmt.Errorf("readers saw %d correct, want %d", got, want)
	}
	return el, nil
}

// dataplaneRoles opens a connection and the run's bus for each role of the
// pipeline: actor, verifier, learner and replay. closeAll closes the
// connections, the last opened first.
func dataplaneRoles(ctx context.Context, srv *bus.Server, run string) (ab, vb, lb, rb *bus.Bus, closeAll func(), err error) {
	var conns []*nats.Conn
	closeAll = func() {
		for i := len(conns) - 1; i >= 0; i-- {
			conns[i].Close()
		}
	}
	buses := make([]*bus.Bus, 4)
	for i, name := range []string{"actor", "verifier", "learner", "replay"} {
		nc, b, err := benchBus(ctx, srv, run, name)
		if err != nil {
			closeAll()
			return nil, nil, nil, nil, nil, err
		}
		conns, buses[i] = append(conns, nc), b
	}
	return buses[0], buses[1], buses[2], buses[3], closeAll, nil
}

// scoredReaders creates the learner's and the replay service's readers of
// SCORED.
func scoredReaders(ctx context.Context, lb, rb *bus.Bus) (learner, replay jetstream.Consumer, err error) {
	if learner, err = lb.Reader(ctx, bus.Scored, "learner", bus.ReaderOptions{}); err != nil {
		return nil, nil, err
	}
	if replay, err = rb.Reader(ctx, bus.Scored, "replay", bus.ReaderOptions{}); err != nil {
		return nil, nil, err
	}
	return learner, replay, nil
}

// publishRollouts publishes payload(i) for every trajectory i to ROLLOUTS
// under the trajectory's id, waiting for the acks after every 64 (an actor
// waits per task; keep its pace).
func publishRollouts(ctx context.Context, pub *bus.Publisher, b *bus.Bus, trajs []wire.Trajectory, payload func(i int) ([]byte, error)) error {
	subj := b.Names.Subject(bus.Rollouts)
	batch := pub.Batch()
	for i := range trajs {
		data, err := payload(i)
		if err != nil {
			return err
		}
		if err := batch.Add(ctx, subj, trajs[i].ID, data); err != nil {
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
