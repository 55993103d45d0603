// Package actor is the actor role: it pulls rollout tasks from the TASKS
// work queue (shared durable consumer "actors"), makes sure its policy is at
// least the task's MinVersion (materialising announced versions through
// weights/transfer, a shared directory or the Object Store, and
// hot-swapping them between tasks), samples the task's completions
// and publishes each as a wire.Trajectory to ROLLOUTS with id
// "<taskID>/<i>". The task is acked only after every trajectory's publish is
// acked, so a crash mid-task leaves it to be redelivered; samples are drawn
// from seeds derived from the task's Seed, so the redelivered task reproduces the same trajectories
// and the ones already stored are deduplicated by id.
//
// The policy backend is an interface (Policy), so that an inference engine
// can stand in for the built-in Go transformer (Builtin).
package actor

import (
	"context"
	"errors"
	"fmt"
	"github.com/exgrpo/exgrpo/internal/faultpoint"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/metrics"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Role is the role name in dead letters and metrics.
const Role = "actor"

// Completion is one sampled response of a task.
type Completion struct {
	PromptTokens []int32
	Tokens       []int32   // response tokens, EOS included when emitted
	LogProbs     []float32 // per response token, behaviour log-prob under softmax(z/T) at the task's temperature
	Entropies    []float32 // per response token, entropy of that distribution (or an engine's estimate, see EntropyKind)
	Text         string    // the response text the verifier grades
	Finish       string    // "eos" or "length"
	// EntropyKind says what Entropies hold (wire.Trajectory.EntropyKind):
	// wire.EntropyExact for the built-in model, an estimate from an engine.
	EntropyKind string
}

// Policy is what the actor needs from a policy backend. The actor calls it
// from one goroutine at a time.
type Policy interface {
	// Version is the loaded policy version; negative when none is loaded.
	Version() int64
	// Load replaces the weights with a checkpoint (the bytes the learner
	// published for version). On error the previous weights stay.
	Load(version int64, checkpoint []byte) error
	// Sample draws completion i of task t; it must depend only on the
	// weights, t and i (seed t.Seed+i), so a redelivered task reproduces it.
	Sample(ctx context.Context, t wire.Task, i int) (Completion, error)
}

// DirPolicy is an optional extension of Policy for backends that load a
// version from a directory of files (an inference engine reloading an HF
// model directory from a path). The actor uses it when the backend has it;
// otherwise it reads a built-in version's one checkpoint file and calls
// Load. The directory is readable only during the call: the actor holds
// the version (a shared-filesystem lease, or its own rebuilt copy) until
// LoadDir returns, so the backend must have finished reading it by then.
// probe is the learner's probe of the version (nil when none was found),
// for a backend that checks what it loaded. A directory that vanished
// before or while it was read is an error wrapping transfer.ErrVersionGone,
// on which the actor loads the newest version instead.
type DirPolicy interface {
	LoadDir(ctx context.Context, version int64, dir string, m weights.Manifest, probe *wire.Probe) error
}

// BatchPolicy is an optional extension of Policy: all of a task's
// completions in one call, which a batched forward pass makes several times
// faster than one completion at a time. Like Sample, the result must depend
// only on the weights and t (so a redelivered task reproduces it). The actor
// uses it when the backend has it.
type BatchPolicy interface {
	SampleTask(ctx context.Context, t wire.Task) ([]Completion, error)
}

// ErrBadTask marks a task the policy can never serve (a prompt it cannot
// encode, say); such a task goes to DEAD instead of being retried.
var ErrBadTask = errors.New("actor: task cannot be served")

// ErrNotServing marks a failure of the backend, not of the task (an engine
// that is down, or that failed its weight probe and refuses to serve): the
// task goes back to the queue for any actor and does not count towards
// Config.DeadAfter.
var ErrNotServing = errors.New("actor: backend not serving")

// ConcurrentPolicy is an optional extension of Policy for a backend that is
// safe for concurrent use (an inference engine): the actor keeps up to
// MaxTasks tasks in hand at once, so that the engine batches their
// requests. Load is never called while a task is sampling.
type ConcurrentPolicy interface {
	MaxTasks() int
}

// ReadyPolicy is an optional extension of Policy for a backend that can be
// unable to serve for a while (an engine that is down, or refused its
// weights): while Ready returns an error the actor takes no task, so that
// an outage does not burn the tasks' deliveries, and retries loading the
// newest version every NakDelay.
type ReadyPolicy interface {
	Ready() error
}

// ProbeLoader is an optional extension of Policy: Load with the probe the
// learner published for the version (nil when none was found), which the
// backend checks the loaded weights against before serving.
type ProbeLoader interface {
	LoadProbe(ctx context.Context, version int64, checkpoint []byte, probe *wire.Probe) error
}

// Config tunes one actor.
type Config struct {
	ID string // actor id in trajectories and logs; default "<host>-<pid>"
	// WeightsWait is how long a task waits for its MinVersion to be
	// announced before it is NAKed back to the queue; default 10s.
	WeightsWait time.Duration
	// NakDelay is the redelivery delay of a NAKed task; default 1s.
	NakDelay time.Duration
	// Heartbeat: while sampling, the task is marked in progress this often
	// so that its AckWait does not expire; default 5s (must be < the bus
	// TaskAckWait).
	Heartbeat time.Duration
	// FetchWait is how long one pull waits for a task; default 1s.
	FetchWait time.Duration
	// LagEvery is how often the backlog gauges refresh; default 5s.
	LagEvery time.Duration
	// Publisher bounds the trajectories in flight; default
	// bus.DefaultPublisherConfig.
	Publisher bus.PublisherConfig
	// DeadAfter: a task whose sampling fails on its DeadAfter-th delivery
	// goes to DEAD with the error as its reason instead of back to the queue
	// (an engine that keeps answering it badly, say); 0 never. Failures
	// wrapping ErrNotServing never count. Default 3 (below the bus's
	// TaskMaxDeliver, so that the reason is ours).
	DeadAfter int
	// WeightsDir is where versions that come through the Object Store are
	// rebuilt (weights/transfer); default a per-actor directory under the
	// system's temporary directory.
	WeightsDir string
	// WeightsCheckSizes checks shared-filesystem versions by file sizes
	// only, not digests (hashing a 15 GB version takes seconds).
	WeightsCheckSizes bool
}

// DefaultConfig returns the defaults above.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{ID: host + "-" + strconv.Itoa(os.Getpid()), WeightsWait: 10 * time.Second, NakDelay: time.Second,
		Heartbeat: 5 * time.Second, FetchWait: time.Second, LagEvery: 5 * time.Second,
		Publisher: bus.DefaultPublisherConfig(), DeadAfter: 3}
}

// Validate reports impossible values.
func (c Config) Validate() error {
	if c.ID == "" {
		return fmt.Errorf("actor: empty ID (start from DefaultConfig)")
	}
	if c.WeightsWait <= 0 || c.NakDelay <= 0 || c.Heartbeat <= 0 || c.FetchWait <= 0 || c.LagEvery <= 0 {
		return fmt.Errorf("actor: durations must be positive (start from DefaultConfig)")
	}
	if c.DeadAfter < 0 {
		return fmt.Errorf("actor: DeadAfter %d < 0 (0 never dead-letters a failing task)", c.DeadAfter)
	}
	return nil
}

// Actor is one actor role instance. Run it once.
type Actor struct {
	b              *bus.Bus
	fetch          *transfer.Fetcher
	cfg            Config
	pol            Policy
	log            *zap.Logger
	m              *metrics.Consumer
	swaps, samples interface{ Inc() }
	version        interface{ Set(float64) }
	// swap is held shared while a task samples and exclusively while the
	// policy loads a version, so a trajectory's PolicyVersion is the one it
	// was sampled with even with several tasks in hand.
	swap     sync.RWMutex
	inflight atomic.Int64
}

// New makes an actor around a policy backend; reg may be nil.
func New(b *bus.Bus, pol Policy, cfg Config, log *zap.Logger, reg *metrics.Registry) (*Actor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, fmt.Errorf("actor: nil policy")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if reg == nil {
		reg = metrics.New(Role, b.Names.Run, false)
	}
	fcfg := transfer.DefaultFetcherConfig(cfg.ID)
	fcfg.Dir = cfg.WeightsDir
	if cfg.WeightsCheckSizes {
		fcfg.Check = weights.CheckSizes
	}
	fetch, err := transfer.NewFetcher(b, fcfg, log)
	if err != nil {
		return nil, fmt.Errorf("actor: %w", err)
	}
	return &Actor{b: b, fetch: fetch, cfg: cfg, pol: pol, log: log.With(zap.String("actor", cfg.ID)), m: reg.NewConsumer(),
		swaps:   reg.Counter("weight_swaps_total", "Policy versions loaded."),
		samples: reg.Counter("samples_total", "Completions sampled."),
		version: reg.Gauge("policy_version", "Loaded policy version.")}, nil
}

// Run serves tasks until ctx ends, then returns nil; the task in hand is
// left unacked and will be redelivered. It returns an error only when the
// bus cannot be used at all.
func (a *Actor) Run(ctx context.Context) error {
	cons, err := a.b.Shared(ctx, bus.Tasks)
	if err != nil {
		return fmt.Errorf("actor: %w", err)
	}
	vw, err := a.b.WatchVersion(ctx)
	if err != nil {
		return fmt.Errorf("actor: %w", err)
	}
	defer vw.Stop()
	pub, err := a.b.NewPublisher(a.cfg.Publisher)
	if err != nil {
		return fmt.Errorf("actor: %w", err)
	}
	defer pub.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, stopLag := context.WithCancel(ctx)
	defer stopLag()
	wg.Go(func() { a.pollLag(lctx) })

	slots := 1
	if cp, ok := a.pol.(ConcurrentPolicy); ok && cp.MaxTasks() > 1 {
		slots = cp.MaxTasks()
	}
	sem := make(chan struct{}, slots) // tasks in hand
	var tasks sync.WaitGroup
	defer tasks.Wait()
	for ctx.Err() == nil {
		// Hot swap between tasks: take the newest announced version (load
		// waits for the tasks sampling to finish).
		if latest := vw.Latest(); latest > a.pol.Version() {
			a.load(ctx, latest)
		}
		if rp, ok := a.pol.(ReadyPolicy); ok {
			if err := rp.Ready(); err != nil {
				a.log.Debug("backend not ready; no task taken", zap.Error(err))
				sleep(ctx, a.cfg.NakDelay)
				continue
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(a.cfg.FetchWait))
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				break
			}
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
				a.log.Warn("fetch task", zap.Error(err))
				a.m.Errors.Inc()
				sleep(ctx, a.cfg.NakDelay)
			}
			continue
		}
		a.m.InFlight.Set(float64(a.inflight.Add(1)))
		serve := func() {
			defer func() { <-sem; a.m.InFlight.Set(float64(a.inflight.Add(-1))) }()
			a.handle(ctx, vw, pub, msg)
		}
		if slots == 1 {
			serve()
			continue
		}
		tasks.Add(1)
		go func() { defer tasks.Done(); serve() }()
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (a *Actor) pollLag(ctx context.Context) {
	t := time.NewTicker(a.cfg.LagEvery)
	defer t.Stop()
	for {
		if lag, err := a.b.ConsumerLag(ctx, bus.Tasks, bus.ActorsConsumer); err == nil {
			a.m.Pending.Set(float64(lag.Pending))
			a.m.AckPending.Set(float64(lag.AckPending))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// load fetches and installs version v (or, when it was pruned meanwhile,
// the latest announced). Failures are logged; the old weights stay.
func (a *Actor) load(ctx context.Context, v int64) bool {
	// One load at a time (an engine backend serves several tasks at once);
	// a task that waited here may find its version already in.
	a.swap.Lock()
	defer a.swap.Unlock()
	if a.pol.Version() >= v {
		return true
	}
	var (
		n   int64
		via string
		err error
	)
	for attempt := 1; ; attempt++ {
		n, via, err = a.loadVersion(ctx, v)
		if err == nil || attempt == 3 || !errors.Is(err, transfer.ErrVersionGone) {
			break
		}
		// Pruned under us (a slow read): the newest version is the one to hold.
		a.log.Warn("weights version gone while loading; retrying with the latest", zap.Int64("version", v), zap.Error(err))
		latest, lerr := a.b.LatestVersion(ctx)
		if lerr != nil || latest < v {
			break
		}
		v = latest
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("load weights", zap.Int64("version", v), zap.Error(err))
			a.m.Errors.Inc()
		}
		return false
	}
	a.swaps.Inc()
	a.version.Set(float64(a.pol.Version()))
	a.log.Info("policy loaded", zap.Int64("version", a.pol.Version()), zap.Int64("fetched_bytes", n), zap.String("via", via))
	return true
}

// loadVersion installs version v: an announced version (weights/transfer)
// from its directory, else the built-in single object of bus.PublishWeights.
// It returns the bytes fetched over the network (0 for a shared-filesystem
// version or one rebuilt already) and how the version came.
func (a *Actor) loadVersion(ctx context.Context, v int64) (int64, string, error) {
	loc, err := a.fetch.Materialise(ctx, v)
	if errors.Is(err, transfer.ErrNotAnnounced) {
		return a.loadObject(ctx, v)
	}
	if err != nil {
		return 0, "", err
	}
	defer loc.Release()
	if dp, ok := a.pol.(DirPolicy); ok {
		// Released (the deferred call above) only after LoadDir returns:
		// the engine has read the files by then.
		return loc.Fetched, loc.Via, dp.LoadDir(ctx, v, loc.Dir, loc.Manifest, a.probe(ctx, v))
	}
	if loc.Manifest.Format != weights.FormatBuiltin {
		return 0, "", fmt.Errorf("actor: v%d is a %q version; this policy backend loads only %q", v, loc.Manifest.Format, weights.FormatBuiltin)
	}
	data, err := os.ReadFile(loc.Path(weights.CheckpointFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", fmt.Errorf("%w: v%d: %w", transfer.ErrVersionGone, v, err)
	}
	if err != nil {
		return 0, "", fmt.Errorf("actor: v%d: %w", v, err)
	}
	if err := a.install(ctx, v, data); err != nil {
		return 0, "", err
	}
	return loc.Fetched, loc.Via, nil
}

// loadObject installs a built-in single-object version (or, when it was
// pruned meanwhile, the latest announced).
func (a *Actor) loadObject(ctx context.Context, v int64) (int64, string, error) {
	data, err := a.b.FetchWeights(ctx, v)
	if errors.Is(err, bus.ErrNoWeights) {
		if latest, lerr := a.b.LatestVersion(ctx); lerr == nil && latest > v {
			return a.loadVersion(ctx, latest)
		}
	}
	if err != nil {
		return 0, "", err
	}
	if err := a.install(ctx, v, data); err != nil {
		return 0, "", err
	}
	return int64(len(data)), "object", nil
}

// install loads a built-in checkpoint into the policy backend; a backend
// that checks its weights (ProbeLoader: an engine) gets the version's probe.
func (a *Actor) install(ctx context.Context, v int64, data []byte) error {
	pl, ok := a.pol.(ProbeLoader)
	if !ok {
		return a.pol.Load(v, data)
	}
	return pl.LoadProbe(ctx, v, data, a.probe(ctx, v))
}

// probe is version v's probe as the learner published it; nil (logged)
// when there is none.
func (a *Actor) probe(ctx context.Context, v int64) *wire.Probe {
	probe, err := a.b.FetchProbe(ctx, v)
	if err != nil {
		a.log.Warn("no weight probe for this version", zap.Int64("version", v), zap.Error(err))
		return nil
	}
	return probe
}

// handle serves one task: ack after every trajectory is stored, NAK with a
// delay when it cannot be served yet, DEAD when it never can.
func (a *Actor) handle(ctx context.Context, vw *bus.VersionWatch, pub *bus.Publisher, msg jetstream.Msg) {
	start := time.Now()
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		a.m.Redelivered.Inc()
	}
	var t wire.Task
	if err := wire.Decode(msg.Data(), &t); err != nil {
		a.dead(ctx, msg, err.Error())
		return
	}
	if t.TaskID == "" || t.Samples < 1 {
		a.dead(ctx, msg, fmt.Sprintf("task %q asks for %d samples", t.TaskID, t.Samples))
		return
	}
	if a.pol.Version() < t.MinVersion {
		wctx, cancel := context.WithTimeout(ctx, a.cfg.WeightsWait)
		v, err := vw.Wait(wctx, t.MinVersion)
		cancel()
		if err != nil || !a.load(ctx, v) || a.pol.Version() < t.MinVersion {
			if ctx.Err() == nil {
				a.log.Debug("task needs a newer policy; NAK", zap.String("task", t.TaskID),
					zap.Int64("have", a.pol.Version()), zap.Int64("need", t.MinVersion))
				_ = msg.NakWithDelay(a.cfg.NakDelay)
			}
			return
		}
	}

	faultpoint.Hit("actor.sample", t.Step) // crash tests: holding a task

	hctx, stopBeat := context.WithCancel(ctx)
	beat := make(chan struct{})
	go func() { // keep the task ours while sampling
		defer close(beat)
		tk := time.NewTicker(a.cfg.Heartbeat)
		defer tk.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tk.C:
				_ = msg.InProgress()
			}
		}
	}()
	defer func() { stopBeat(); <-beat }()

	subj := a.b.Names.Subject(bus.Rollouts)
	batch := pub.Batch()
	a.swap.RLock()
	defer a.swap.RUnlock()
	version := a.pol.Version()
	var all []Completion // the whole task at once, when the backend can
	sample := func(i int) (Completion, error) {
		bp, ok := a.pol.(BatchPolicy)
		if !ok {
			return a.pol.Sample(ctx, t, i)
		}
		if all == nil {
			cs, err := bp.SampleTask(ctx, t)
			if err != nil {
				return Completion{}, err
			}
			if len(cs) != t.Samples {
				return Completion{}, fmt.Errorf("actor: backend returned %d completions for %d samples", len(cs), t.Samples)
			}
			all = cs
		}
		return all[i], nil
	}
	for i := range t.Samples {
		if ctx.Err() != nil {
			return // stopped mid-task: no ack, the task is redelivered
		}
		s0 := time.Now()
		c, err := sample(i)
		if err != nil {
			var dlv uint64
			if md, merr := msg.Metadata(); merr == nil {
				dlv = md.NumDelivered
			}
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, ErrBadTask):
				a.dead(ctx, msg, err.Error())
			case !errors.Is(err, ErrNotServing) && a.cfg.DeadAfter > 0 && dlv >= uint64(a.cfg.DeadAfter):
				a.dead(ctx, msg, fmt.Sprintf("sampling failed on delivery %d: %v", dlv, err))
			default:
				a.log.Warn("sample", zap.String("task", t.TaskID), zap.Uint64("delivery", dlv), zap.Error(err))
				a.m.Errors.Inc()
				_ = msg.NakWithDelay(a.cfg.NakDelay)
			}
			return
		}
		a.samples.Inc()
		tr := wire.Trajectory{RunID: a.b.Names.Run, ID: t.TaskID + "/" + strconv.Itoa(i), TaskID: t.TaskID,
			Step: t.Step, QuestionID: t.QuestionID, Index: i, PolicyVersion: version, ActorID: a.cfg.ID,
			PromptTokens: c.PromptTokens, Tokens: c.Tokens, LogProbs: c.LogProbs, Entropies: c.Entropies,
			Text: c.Text, Finish: c.Finish, Answer: t.Answer, Kind: t.Kind, EntropyKind: c.EntropyKind,
			SampleMicros: time.Since(s0).Microseconds(), CreatedUnixMs: time.Now().UnixMilli()}
		data, err := wire.Encode(&tr)
		if err != nil {
			a.dead(ctx, msg, fmt.Sprintf("trajectory %s does not encode: %v", tr.ID, err))
			return
		}
		if err := batch.Add(ctx, subj, tr.ID, data); err != nil {
			return // ctx ended
		}
	}
	if err := batch.Wait(ctx); err != nil {
		if ctx.Err() == nil {
			a.log.Warn("publish trajectories", zap.String("task", t.TaskID), zap.Error(err))
			a.m.Errors.Inc()
			_ = msg.NakWithDelay(a.cfg.NakDelay)
		}
		return
	}
	a.m.Published.Add(float64(t.Samples))
	if err := msg.Ack(); err != nil {
		// Redelivered later; its trajectories are deduplicated by id.
		a.log.Debug("ack task", zap.String("task", t.TaskID), zap.Error(err))
	}
	a.m.Processed.Inc()
	a.m.Latency.Observe(time.Since(start).Seconds())
}

func (a *Actor) dead(ctx context.Context, msg jetstream.Msg, reason string) {
	if err := a.b.DeadLetter(ctx, Role, msg, reason); err != nil {
		if ctx.Err() == nil {
			a.log.Warn("dead-letter failed; task left for redelivery", zap.String("reason", reason), zap.Error(err))
			a.m.Errors.Inc()
			_ = msg.NakWithDelay(a.cfg.NakDelay)
		}
		return
	}
	a.log.Info("task dead-lettered", zap.String("reason", reason))
	a.m.Dead.Inc()
}
