// Package endurance runs the system as separate role processes on one
// server for a set time, kills a random role or the server with SIGKILL
// every few minutes and restarts it, and then checks what a multi-day run
// relies on: the ledger by trajectory id (nothing lost, nothing counted
// twice), the replay pool equal to an independent fold of the final
// lineage, the memory of every long-lived process flat after warm-up,
// stream sizes within their limits, and the step rate before and after
// each fault. `exgrpo bench endurance` runs it; TestEndurance is the short
// variant CI runs.
package endurance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	lcore "github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// ErrConfig marks a configuration that cannot run.
var ErrConfig = errors.New("endurance: bad configuration")

// Config is one endurance run.
type Config struct {
	Bin        string        // the exgrpo binary; default this executable
	Dir        string        // logs, JetStream store, checkpoints (required)
	Duration   time.Duration // how long faults are injected; default 30m
	FaultEvery time.Duration // mean time between faults; default 3m
	Actors     int           // default 8
	Verifiers  int           // default 2
	Seed       uint64        // fault schedule
	// Train are the training flags given to the learner and the replay
	// service (group size, batch, ...); default a small built-in task.
	Train []string
	// Roles are the roles faults pick from (default every role and the
	// server): "server", "replay", "learner", "actor", "verifier".
	Roles []string
	// MaxGrowth is the memory growth after warm-up a long-lived actor,
	// verifier or learner may show (default 0.10; a run of a few minutes
	// is still warming up and needs more).
	MaxGrowth float64
	Log       io.Writer // progress lines; nil = none
}

// DefaultConfig is the 30-minute run of the report.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, Duration: 30 * time.Minute, FaultEvery: 3 * time.Minute, Actors: 8, Verifiers: 2, Seed: 1,
		Train: []string{"--k", "8", "--batch", "16", "--minibatches", "2", "--train-questions", "100000", "--heldout", "16",
			"--eval-samples", "1"},
		Roles: []string{"server", "replay", "learner", "actor", "verifier"}, MaxGrowth: 0.10}
}

func (c Config) validate() error {
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is required", ErrConfig)
	case c.Duration <= 0 || c.FaultEvery <= 0:
		return fmt.Errorf("%w: Duration %v and FaultEvery %v must be positive", ErrConfig, c.Duration, c.FaultEvery)
	case c.Actors < 1 || c.Verifiers < 1:
		return fmt.Errorf("%w: need at least one actor and one verifier", ErrConfig)
	}
	return nil
}

// Fault is one injected kill.
type Fault struct {
	At   time.Duration `json:"at"` // since the start
	Role string        `json:"role"`
	// Recovery is the time from the kill to the first step report after
	// it, minus the median step time (the step that would have happened
	// anyway); -1 when no step followed.
	Recovery   time.Duration `json:"recovery"`
	RateBefore float64       `json:"rate_before"` // steps/min in the window before the fault
	RateAfter  float64       `json:"rate_after"`  // steps/min in the window after recovery
}

// Sample is one memory reading of one process incarnation.
type Sample struct {
	At  time.Duration `json:"at"`
	RSS int64         `json:"rss"` // bytes
}

// Memory is one process incarnation's resident memory over its life.
type Memory struct {
	Name    string   `json:"name"` // role name#incarnation
	Samples []Sample `json:"samples"`
	// Growth is its memory growth after warm-up and LongLife says it lived
	// long enough to judge (see growth).
	Growth   float64 `json:"growth"`
	LongLife bool    `json:"long_lived"`
}

// StreamSize is a stream's size at the end against its limit.
type StreamSize struct {
	Stream   string `json:"stream"`
	Bytes    uint64 `json:"bytes"`
	Msgs     uint64 `json:"msgs"`
	MaxBytes int64  `json:"max_bytes"`
}

// Report is what an endurance run found.
type Report struct {
	Duration    time.Duration   `json:"duration"`
	Actors      int             `json:"actors"`
	Verifiers   int             `json:"verifiers"`
	Faults      []Fault         `json:"faults"`
	Steps       int             `json:"steps"`
	Rollouts    int             `json:"rollouts"` // fresh trajectories named by the final lineage
	Audit       Audit           `json:"audit"`
	PoolEqual   bool            `json:"pool_equal"`
	Epochs      int             `json:"epochs"`
	Rewinds     int             `json:"rewinds"`
	Memory      []Memory        `json:"memory"`
	Streams     []StreamSize    `json:"streams"`
	MedianStep  time.Duration   `json:"median_step"`
	StepTimes   []time.Duration `json:"-"` // when each step report arrived, since the start
	MaxGrowth   float64         `json:"max_growth"`
	GrowthLimit float64         `json:"growth_limit"`
}

// Failures lists the promises the run broke (empty: all kept).
func (r *Report) Failures() []string {
	var out []string
	if !r.Audit.OK() {
		out = append(out, fmt.Sprintf("ledger: %d step gaps, %d steps twice, %d trajectories lost, %d named twice, %d ids with two contents",
			len(r.Audit.StepGaps), len(r.Audit.StepRepeats), len(r.Audit.Missing), len(r.Audit.NamedTwice), len(r.Audit.Conflicts)))
	}
	if !r.PoolEqual {
		out = append(out, "the replay service's pool differs from the fold of the final lineage")
	}
	for _, m := range r.Memory {
		// The replay service holds the pool and the server the streams,
		// which grow with the run by design (bounded by their limits,
		// checked below); every other role's state is bounded.
		if m.LongLife && m.Growth > r.GrowthLimit && !strings.HasPrefix(m.Name, "replay#") && !strings.HasPrefix(m.Name, "server#") {
			out = append(out, fmt.Sprintf("%s grew %.0f%% after warm-up", m.Name, 100*m.Growth))
		}
	}
	for _, s := range r.Streams {
		if s.MaxBytes > 0 && int64(s.Bytes) > s.MaxBytes {
			out = append(out, fmt.Sprintf("stream %s holds %d bytes over its limit %d", s.Stream, s.Bytes, s.MaxBytes))
		}
	}
	if r.Steps == 0 {
		out = append(out, "no step was trained")
	}
	return out
}

// proc is one role process, restarted as new incarnations.
type proc struct {
	name  string
	args  []string
	mu    sync.Mutex
	cmd   *exec.Cmd
	inc   int
	done  chan struct{}
	exits []time.Time // when it exited by itself
}

type runner struct {
	cfg   Config
	start time.Time
	mu    sync.Mutex
	procs map[string]*proc
	mem   map[string]*Memory
	steps []time.Duration // arrival of step reports
}

func (r *runner) logf(format string, a ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, "%6.0fs  %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, a...))
	}
}

func (r *runner) launch(p *proc) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(r.cfg.Dir, p.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.cfg.Bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("endurance: start %s: %w", p.name, err)
	}
	p.inc++
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	r.mu.Lock()
	r.mem[fmt.Sprintf("%s#%d", p.name, p.inc)] = &Memory{Name: fmt.Sprintf("%s#%d", p.name, p.inc)}
	r.mu.Unlock()
	return nil
}

// kill sends sig and waits for the process to end.
func (p *proc) kill(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *proc) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// sampleMemory reads every live process's resident set every 2 s.
func (r *runner) sampleMemory(ctx context.Context) {
	tk := time.NewTicker(2 * time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		r.mu.Lock()
		procs := make([]*proc, 0, len(r.procs))
		for _, p := range r.procs {
			procs = append(procs, p)
		}
		r.mu.Unlock()
		for _, p := range procs {
			p.mu.Lock()
			cmd, inc := p.cmd, p.inc
			p.mu.Unlock()
			if cmd == nil || !p.alive() {
				continue
			}
			rss, err := residentBytes(cmd.Process.Pid)
			if err != nil {
				continue
			}
			r.mu.Lock()
			m := r.mem[fmt.Sprintf("%s#%d", p.name, inc)]
			m.Samples = append(m.Samples, Sample{At: time.Since(r.start), RSS: rss})
			r.mu.Unlock()
		}
	}
}

// residentBytes reads VmRSS of a process (Linux).
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// Run runs the endurance test and returns its report; an error means the
// harness could not run it (a broken promise is in Report.Failures).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Bin = exe
	}
	if len(cfg.Roles) == 0 {
		cfg.Roles = DefaultConfig("").Roles
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	const run = "endurance"
	r := &runner{cfg: cfg, start: time.Now(), procs: map[string]*proc{}, mem: map[string]*Memory{}}
	role := []string{"--nats", url, "--run", run, "--log-level", "info", "--conn-loss", "5m"}
	train := append([]string{"--steps", "100000000", "--cache-dir", filepath.Join(cfg.Dir, "cache")}, cfg.Train...)
	add := func(name string, args ...string) *proc {
		p := &proc{name: name, args: args}
		r.procs[name] = p
		return p
	}
	server := add("server", "server", "--port", strconv.Itoa(port), "--store", filepath.Join(cfg.Dir, "js"), "--log-level", "warn")
	add("replay", append(append([]string{"replay"}, role...), train...)...)
	for i := range cfg.Verifiers {
		add(fmt.Sprintf("verifier-%d", i), append([]string{"verifier"}, role...)...)
	}
	for i := range cfg.Actors {
		add(fmt.Sprintf("actor-%d", i), append([]string{"actor", "--id", fmt.Sprintf("a%d", i)}, role...)...)
	}
	learner := add("learner", append(append(append([]string{"learner"}, role...), train...),
		"--checkpoint-dir", filepath.Join(cfg.Dir, "ckpt"), "--checkpoint-every", "5", "--resume=auto", "--eval=false")...)
	defer func() {
		for _, p := range r.procs {
			if p != server {
				p.kill(syscall.SIGTERM, 15*time.Second)
			}
		}
		server.kill(syscall.SIGTERM, 15*time.Second)
	}()
	if err := r.launch(server); err != nil {
		return nil, err
	}
	nc, b, err := connect(ctx, url, run)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sub, err := nc.Subscribe(b.Names.Subject(bus.Control), func(m *nats.Msg) {
		r.mu.Lock()
		r.steps = append(r.steps, time.Since(r.start))
		r.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	names := make([]string, 0, len(r.procs))
	for n := range r.procs {
		if n != "server" && n != "learner" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range append(names, "learner") {
		if err := r.launch(r.procs[n]); err != nil {
			return nil, err
		}
	}
	mctx, stopMem := context.WithCancel(ctx)
	defer stopMem()
	go r.sampleMemory(mctx)
	r.logf("started: server, replay, %d verifiers, %d actors, learner; %s", cfg.Verifiers, cfg.Actors, url)

	// Faults: exponential gaps with mean FaultEvery (clamped to a third
	// and three times it); the kinds of role take turns in an order shuffled
	// by the seed, so that a short run still hits each; the process of that
	// kind is drawn; the killed process restarts after one second. No fault
	// in the last half interval, so that the last one is seen recovering.
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	var faults []Fault
	deadline := r.start.Add(cfg.Duration)
	var turns []string
	for {
		gap := time.Duration(rng.ExpFloat64() * float64(cfg.FaultEvery))
		gap = min(max(gap, cfg.FaultEvery/3), 3*cfg.FaultEvery)
		next := time.Now().Add(gap)
		if next.Add(cfg.FaultEvery / 2).After(deadline) {
			break
		}
		if err := r.supervise(ctx, next); err != nil {
			return nil, err
		}
		if len(turns) == 0 {
			turns = slices.Clone(cfg.Roles)
			rng.Shuffle(len(turns), func(i, j int) { turns[i], turns[j] = turns[j], turns[i] })
		}
		kind := turns[0]
		turns = turns[1:]
		victim := kind
		switch kind {
		case "actor":
			victim = fmt.Sprintf("actor-%d", rng.IntN(cfg.Actors))
		case "verifier":
			victim = fmt.Sprintf("verifier-%d", rng.IntN(cfg.Verifiers))
		}
		p := r.procs[victim]
		at := time.Since(r.start)
		p.kill(syscall.SIGKILL, 10*time.Second)
		r.logf("kill -9 %s", victim)
		faults = append(faults, Fault{At: at, Role: victim})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
		if err := r.launch(p); err != nil {
			return nil, err
		}
	}
	if err := r.supervise(ctx, deadline); err != nil {
		return nil, err
	}
	// The end: stop the learner cleanly, wait for the replay service to fold
	// the last step, audit.
	learner.kill(syscall.SIGTERM, time.Minute)
	r.logf("learner stopped; auditing")
	stopMem()
	rep := &Report{Duration: cfg.Duration, Actors: cfg.Actors, Verifiers: cfg.Verifiers, GrowthLimit: cfg.MaxGrowth}
	led, err := ReadLedger(ctx, b)
	if err != nil {
		return nil, err
	}
	// The replay role's pool for these flags (local.Config.Normalize's rule:
	// K from --k, mu = K/2, the learner's candidates per question).
	pool := replay.DefaultConfig()
	pool.K = lcore.DefaultConfig().K
	if k, ok := flagValue(cfg.Train, "--k"); ok {
		if pool.K, err = strconv.Atoi(k); err != nil {
			return nil, fmt.Errorf("%w: --k %q", ErrConfig, k)
		}
	}
	pool.Mu, pool.MaxCandidates = float64(pool.K)/2, lcore.DefaultConfig().Candidates
	audit, want, err := led.Check(pool)
	if err != nil {
		return nil, err
	}
	rep.Audit, rep.Steps, rep.Rollouts = audit, audit.Steps, audit.Named
	rep.Epochs, rep.Rewinds = len(led.Epochs), led.Rewinds
	if n := len(led.Reports); n > 0 {
		last := led.Reports[n-1].Step
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		for wctx.Err() == nil {
			p, err := rsvc.ReadSnapshot(wctx, b, pool)
			if err == nil && p != nil {
				if s, ok := p.LastStep(); ok && s >= last {
					rep.PoolEqual = bytes.Equal(p.Snapshot(), want.Snapshot())
					break
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		cancel()
	}
	rep.Streams, err = streamSizes(ctx, b)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	rep.StepTimes = slices.Clone(r.steps)
	for _, m := range r.mem {
		rep.Memory = append(rep.Memory, *m)
	}
	r.mu.Unlock()
	slices.SortFunc(rep.Memory, func(a, b Memory) int { return strings.Compare(a.Name, b.Name) })
	rep.Summarize()
	rep.MedianStep = medianGap(rep.StepTimes)
	rep.Faults = rates(faults, rep.StepTimes, rep.MedianStep, cfg.FaultEvery)
	return rep, nil
}

// supervise waits until t, restarting any role that died by itself (a
// role that lost the server for longer than --conn-loss exits, as it
// should under a supervisor).
func (r *runner) supervise(ctx context.Context, t time.Time) error {
	for time.Now().Before(t) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Until(t), time.Second)):
		}
		for _, p := range r.procs {
			if p.alive() {
				continue
			}
			p.exits = append(p.exits, time.Now())
			if n := len(p.exits); n >= 5 && time.Since(p.exits[n-5]) < time.Minute {
				return fmt.Errorf("endurance: %s exited on its own 5 times within a minute; see %s",
					p.name, filepath.Join(r.cfg.Dir, p.name+".log"))
			}
			r.logf("%s exited on its own; restarting it", p.name)
			if err := r.launch(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func connect(ctx context.Context, url, run string) (*nats.Conn, *bus.Bus, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	nc, err := bus.Connect(cctx, bus.ConnConfig{URL: url, Name: "endurance"}, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	b, err := bus.Open(cctx, nc, bus.DefaultConfig(run), zap.NewNop())
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, b, nil
}

func streamSizes(ctx context.Context, b *bus.Bus) ([]StreamSize, error) {
	var out []StreamSize
	for _, k := range bus.Kinds {
		st, err := b.Stream(ctx, k)
		if err != nil {
			return nil, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("endurance: stream %s: %w", k, err)
		}
		out = append(out, StreamSize{Stream: info.Config.Name, Bytes: info.State.Bytes, Msgs: info.State.Msgs, MaxBytes: info.Config.MaxBytes})
	}
	return out, nil
}

// growth sets m.Growth and m.LongLife (see Memory): warm-up is the first
// quarter of the incarnation's life, at least a minute; the incarnation is
// long-lived when what follows spans at least 30% of the run; growth is the
// mean RSS of the last quarter of that span over the mean of its first
// quarter, minus 1.
func growth(m *Memory, run time.Duration) {
	m.Growth, m.LongLife = 0, false
	n := len(m.Samples)
	if n < 8 {
		return
	}
	start := m.Samples[0].At
	warm := max((m.Samples[n-1].At-start)/4, time.Minute)
	var post []Sample
	for _, s := range m.Samples {
		if s.At-start >= warm {
			post = append(post, s)
		}
	}
	if len(post) < 8 || post[len(post)-1].At-post[0].At < run*3/10 {
		return
	}
	m.LongLife = true
	mean := func(s []Sample) float64 {
		t := 0.0
		for _, x := range s {
			t += float64(x.RSS)
		}
		return t / float64(len(s))
	}
	q := len(post) / 4
	m.Growth = mean(post[len(post)-q:])/mean(post[:q]) - 1
}

// Summarize computes the memory figures of the report from its samples
// (Run calls it; a saved report can be summarized again).
func (r *Report) Summarize() {
	r.MaxGrowth = 0
	for i := range r.Memory {
		growth(&r.Memory[i], r.Duration)
		if r.Memory[i].LongLife {
			r.MaxGrowth = max(r.MaxGrowth, r.Memory[i].Growth)
		}
	}
}

func medianGap(t []time.Duration) time.Duration {
	if len(t) < 2 {
		return 0
	}
	gaps := make([]time.Duration, 0, len(t)-1)
	for i := 1; i < len(t); i++ {
		gaps = append(gaps, t[i]-t[i-1])
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

// rates fills each fault's recovery and the step rates around it.
func rates(faults []Fault, steps []time.Duration, median, window time.Duration) []Fault {
	count := func(from, to time.Duration) float64 {
		n := 0
		for _, s := range steps {
			if s >= from && s < to {
				n++
			}
		}
		return float64(n) / (to - from).Minutes()
	}
	w := window / 2
	for i := range faults {
		f := &faults[i]
		f.Recovery = -1
		for _, s := range steps {
			if s > f.At {
				f.Recovery = max(0, s-f.At-median)
				break
			}
		}
		f.RateBefore = count(max(0, f.At-w), f.At)
		if f.Recovery >= 0 {
			from := f.At + f.Recovery + median
			f.RateAfter = count(from, from+w)
		}
	}
	return faults
}

// flagValue finds "--name value" or "--name=value" in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
