package actor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// ErrProbe: after a reload the engine's log-probs of the probe sequences
// disagree with the learner's beyond the tolerance; the engine is left
// paused and the actor serves nothing until a version passes.
var ErrProbe = errors.New("actor: weight probe failed")

// Prefix-cache handling across versions (EngineConfig.Cache).
const (
	CacheResetAndSalt = "reset+salt" // reset after every reload and salt requests with the version
	CacheReset        = "reset"      // reset only (SGLang has no salt)
	CacheSalt         = "salt"       // salt only (vLLM's cache_salt; prime-rl's choice)
	CacheNone         = "none"       // neither: stale KV may be served; for tests of the probe
)

// EngineConfig configures the Engine backend.
type EngineConfig struct {
	Client engine.Config
	// MaxTasks is how many tasks the actor keeps in hand at once (their
	// requests share the engine's batches); default 8. With the engine's
	// MaxInFlight this sets how busy the engine is kept.
	MaxTasks int
	// StopTokenIDs are every EOS id of the model; default [2], the built-in
	// tokenizer's EOS.
	StopTokenIDs []int32
	// TopLogProbs asks for k top log-probs per token (0: none). They turn
	// into EntropyKind's estimate.
	TopLogProbs int
	// EntropyKind is what trajectories' Entropies hold: wire.EntropySample
	// (default), wire.EntropyTopKLower or wire.EntropyTopKUpper (these need
	// TopLogProbs > 0).
	EntropyKind string
	// WeightsDir is where single-object versions (the learner's default
	// blob transport) are written for the engine to load
	// (v<N>/model.safetensors); it must be a path the engine can read.
	// Versions that come through weights/transfer are not copied here: the
	// engine reloads them from their own directory (LoadDir). Default: a
	// directory under os.TempDir().
	WeightsDir string
	// Cache: CacheResetAndSalt (default for vLLM), CacheReset (default for
	// SGLang), CacheSalt or CacheNone.
	Cache string
	// ProbeTolerance is the largest |engine - learner| log-prob accepted on
	// any probe token; default 1e-3 (the built-in model through the built-in
	// server agrees to float rounding; real engines in bf16 need about 0.1).
	ProbeTolerance float64
	// RequireProbe refuses a version for which the learner published no
	// probe; default true.
	RequireProbe bool
	// AnswerAttempts is how many times a task's request is sent when the
	// engine's answer fails validation, before the task fails; default 2.
	AnswerAttempts int
	// HealthWait bounds the wait for an engine that fails its health check
	// before the task is handed back (ErrNotServing); default 30s.
	HealthWait time.Duration
	// IgnoreEOS makes every response MaxNew tokens long (benchmarks only:
	// the trajectories are not what the policy would write).
	IgnoreEOS bool
}

// DefaultEngineConfig returns the defaults above for an engine.
func DefaultEngineConfig(api, url string) EngineConfig {
	cache := CacheResetAndSalt
	if api == engine.APISGLang {
		cache = CacheReset
	}
	return EngineConfig{Client: engine.DefaultConfig(api, url), MaxTasks: 8, StopTokenIDs: []int32{2},
		EntropyKind: wire.EntropySample, WeightsDir: filepath.Join(os.TempDir(), "exgrpo-engine-"+strconv.Itoa(os.Getpid())),
		Cache: cache, ProbeTolerance: 1e-3, RequireProbe: true, AnswerAttempts: 2, HealthWait: 30 * time.Second}
}

// Validate reports impossible values.
func (c EngineConfig) Validate() error {
	if err := c.Client.Validate(); err != nil {
		return err
	}
	switch {
	case c.MaxTasks < 1 || c.AnswerAttempts < 1:
		return fmt.Errorf("actor: MaxTasks and AnswerAttempts must be >= 1")
	case len(c.StopTokenIDs) == 0:
		return fmt.Errorf("actor: no stop token ids (give every EOS id of the model)")
	case c.TopLogProbs < 0:
		return fmt.Errorf("actor: TopLogProbs %d < 0", c.TopLogProbs)
	case c.WeightsDir == "":
		return fmt.Errorf("actor: empty WeightsDir")
	case !(c.ProbeTolerance > 0):
		return fmt.Errorf("actor: ProbeTolerance %v must be > 0", c.ProbeTolerance)
	case c.HealthWait <= 0:
		return fmt.Errorf("actor: HealthWait must be positive")
	}
	switch c.EntropyKind {
	case wire.EntropySample:
	case wire.EntropyTopKLower, wire.EntropyTopKUpper:
		if c.TopLogProbs == 0 {
			return fmt.Errorf("actor: entropy kind %q needs TopLogProbs > 0", c.EntropyKind)
		}
	default:
		return fmt.Errorf("actor: entropy kind %q (want %q, %q or %q)", c.EntropyKind, wire.EntropySample, wire.EntropyTopKLower, wire.EntropyTopKUpper)
	}
	switch c.Cache {
	case CacheResetAndSalt, CacheReset, CacheSalt, CacheNone:
	default:
		return fmt.Errorf("actor: cache mode %q", c.Cache)
	}
	if c.Client.API == engine.APISGLang && (c.Cache == CacheSalt || c.Cache == CacheResetAndSalt) {
		return fmt.Errorf("actor: SGLang requests take no cache salt: use cache mode %q", CacheReset)
	}
	return nil
}

// Engine is the Policy backed by an inference engine over HTTP: prompts
// are the tasks' token ids (the actor never tokenizes), completions come
// back as ids, log-probs of the sampling distribution and the engine's
// text. It implements BatchPolicy, ConcurrentPolicy, ReadyPolicy,
// ProbeLoader and DirPolicy and is safe for concurrent use.
type Engine struct {
	cfg    EngineConfig
	client engine.Client
	info   engine.Info
	log    *zap.Logger

	mu      sync.Mutex
	version int64
	refused error // why the engine must not serve (a failed probe); nil when serving
}

// NewEngine connects to the engine and checks it (engine.Client.Start:
// context length, vocabulary, log-probs mode). The engine's weights are not
// trusted: Version is -1 until the learner's first version is loaded.
func NewEngine(ctx context.Context, cfg EngineConfig, log *zap.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c, err := engine.New(cfg.Client)
	if err != nil {
		return nil, err
	}
	info, err := c.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("actor: engine at %s: %w", cfg.Client.URL, err)
	}
	if info.LogprobsMode == "" && cfg.Client.API == engine.APIVLLM {
		log.Warn("cannot tell vLLM's --logprobs-mode (GET /server_info needs VLLM_SERVER_DEV_MODE=1); it must be processed_logprobs")
	}
	if err := os.MkdirAll(cfg.WeightsDir, 0o755); err != nil {
		return nil, fmt.Errorf("actor: weights dir: %w", err)
	}
	return &Engine{cfg: cfg, client: c, info: info, log: log, version: -1}, nil
}

// Info is what the engine said about itself.
func (e *Engine) Info() engine.Info { return e.info }

// MaxTasks implements ConcurrentPolicy.
func (e *Engine) MaxTasks() int { return e.cfg.MaxTasks }

// Version implements Policy.
func (e *Engine) Version() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.version
}

// Refused is why the engine does not serve now (nil when it does).
func (e *Engine) Refused() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refused
}

// Ready implements ReadyPolicy: an error while no version is loaded and
// probed, or while the engine is refused.
func (e *Engine) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.refused != nil:
		return fmt.Errorf("%w: %w", ErrNotServing, e.refused)
	case e.version < 0:
		return fmt.Errorf("%w: no version loaded", ErrNotServing)
	}
	return nil
}

// Load implements Policy without a probe (refused when RequireProbe).
func (e *Engine) Load(version int64, checkpoint []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return e.LoadProbe(ctx, version, checkpoint, nil)
}

// LoadProbe implements ProbeLoader for a version published as one
// built-in checkpoint: write it as WeightsDir/v<N>/model.safetensors, then
// reload the engine from there (reload).
func (e *Engine) LoadProbe(ctx context.Context, version int64, checkpoint []byte, probe *wire.Probe) error {
	if probe == nil && e.cfg.RequireProbe {
		return e.refuse(ctx, fmt.Errorf("%w: no probe published for v%d (RequireProbe)", ErrProbe, version))
	}
	dir := filepath.Join(e.cfg.WeightsDir, "v"+strconv.FormatInt(version, 10))
	if err := writeVersion(dir, checkpoint); err != nil {
		return err
	}
	if err := e.reload(ctx, version, dir, probe); err != nil {
		return err
	}
	e.pruneVersions(version)
	return nil
}

// LoadDir implements DirPolicy for a version that came through
// weights/transfer: the engine reloads straight from the version's
// directory (the shared directory's DIR/v<N> the learner announced, or the
// actor's own rebuilt copy of an Object Store version), so the engine must
// see that path: it runs on the actor's node, or mounts the same shared
// filesystem at the same path. Nothing is copied. The actor holds the
// directory until this returns, which is after the engine answered the
// reload. A directory that is gone (pruned: a lapsed lease) is an error
// wrapping transfer.ErrVersionGone; when it vanished during the reload, the
// engine may hold part of it, so the backend forgets its version (serves
// nothing) until a version loads and passes its probe.
func (e *Engine) LoadDir(ctx context.Context, version int64, dir string, m weights.Manifest, probe *wire.Probe) error {
	if probe == nil && e.cfg.RequireProbe {
		return e.refuse(ctx, fmt.Errorf("%w: no probe published for v%d (RequireProbe)", ErrProbe, version))
	}
	if m.Version != version {
		return fmt.Errorf("actor: v%d: the directory %s holds the manifest of v%d", version, dir, m.Version)
	}
	if err := dirPresent(dir, m); err != nil {
		return fmt.Errorf("%w: v%d before the engine reload: %w", transfer.ErrVersionGone, version, err)
	}
	e.log.Debug("engine reloads from a version directory", zap.Int64("version", version), zap.String("dir", dir),
		zap.String("format", m.Format), zap.Int64("bytes", m.Bytes()))
	err := e.reload(ctx, version, dir, probe)
	if err == nil || !errors.Is(err, errReload) {
		return err
	}
	if gerr := dirPresent(dir, m); gerr != nil {
		e.mu.Lock()
		e.version = -1 // the engine may hold part of the vanished version
		e.mu.Unlock()
		if perr := e.client.Pause(ctx); perr != nil {
			e.log.Warn("pause an engine with unknown weights", zap.Error(perr))
		}
		return fmt.Errorf("%w: v%d vanished during the engine reload (%v): %w", transfer.ErrVersionGone, version, gerr, err)
	}
	return err
}

// dirPresent checks that every file of m is in dir (sizes only: the
// fetcher checked the contents).
func dirPresent(dir string, m weights.Manifest) error {
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Name)))
		if err != nil {
			return err
		}
		if st.Size() != f.Size {
			return fmt.Errorf("%s has %d bytes, the manifest says %d", f.Name, st.Size(), f.Size)
		}
	}
	return nil
}

// errReload marks a reload the engine refused or failed (the old weights
// stay, as far as the engine says).
var errReload = errors.New("engine reload failed")

// reload makes the engine load version from dir: pause the engine,
// reload, reset the prefix cache, resume, then score the probe through the
// engine; on a mismatch the engine is paused again and the backend refuses
// to serve (ErrProbe) until a later version passes. An HTTP 200 from the
// reload proves nothing by itself.
func (e *Engine) reload(ctx context.Context, version int64, dir string, probe *wire.Probe) error {
	c := e.client
	if err := c.Pause(ctx); err != nil {
		return fmt.Errorf("actor: pause engine for v%d: %w", version, err)
	}
	if err := c.Reload(ctx, dir, version); err != nil {
		_ = c.Resume(ctx) // the old weights stay; keep serving them
		return fmt.Errorf("actor: reload v%d from %s: %w: %w", version, dir, errReload, err)
	}
	if e.cfg.Cache == CacheReset || e.cfg.Cache == CacheResetAndSalt {
		if err := c.ResetCache(ctx); err != nil {
			return e.refuse(ctx, fmt.Errorf("actor: reset the prefix cache after v%d: %w", version, err))
		}
	}
	if err := c.Resume(ctx); err != nil {
		return fmt.Errorf("actor: resume engine after v%d: %w", version, err)
	}
	if wv, err := c.WeightVersion(ctx); err == nil && wv != "" && wv != strconv.FormatInt(version, 10) {
		return e.refuse(ctx, fmt.Errorf("%w: engine reports weight version %q after loading v%d", ErrProbe, wv, version))
	}
	if probe != nil {
		if err := e.checkProbe(ctx, version, probe); err != nil {
			return e.refuse(ctx, err)
		}
	}
	e.mu.Lock()
	e.version, e.refused = version, nil
	e.mu.Unlock()
	e.log.Info("engine loaded version", zap.Int64("version", version), zap.String("dir", dir), zap.Bool("probed", probe != nil))
	return nil
}

// refuse marks the engine as not serving, pauses it so that nothing else
// uses the suspect weights, and returns why.
func (e *Engine) refuse(ctx context.Context, why error) error {
	e.mu.Lock()
	e.refused = why
	e.mu.Unlock()
	if err := e.client.Pause(ctx); err != nil {
		e.log.Warn("pause a refused engine", zap.Error(err))
	}
	e.log.Error("engine refuses to serve", zap.Error(why))
	return why
}

// salt is the cache salt of requests under version v ("" when not salting).
func (e *Engine) salt(v int64) string {
	if e.cfg.Cache == CacheSalt || e.cfg.Cache == CacheResetAndSalt {
		return "exgrpo-v" + strconv.FormatInt(v, 10)
	}
	return ""
}

// checkProbe scores the probe sequences through the engine and compares
// (wire.Probe; tolerance ProbeTolerance on every token).
func (e *Engine) checkProbe(ctx context.Context, version int64, p *wire.Probe) error {
	if p.Version != version {
		return fmt.Errorf("%w: probe of v%d for v%d", ErrProbe, p.Version, version)
	}
	if p.Temp != 1 || len(p.Seqs) == 0 {
		return fmt.Errorf("%w: probe v%d has temperature %v and %d sequences (want 1 and some)", ErrProbe, version, p.Temp, len(p.Seqs))
	}
	var worst float64
	for i, s := range p.Seqs {
		got, err := e.client.Score(ctx, s.Tokens, s.PromptLen, e.salt(version))
		if err != nil {
			return fmt.Errorf("%w: score probe %d of v%d: %w", ErrProbe, i, version, err)
		}
		if len(got) != len(s.LogProbs) {
			return fmt.Errorf("%w: probe %d: %d log-probs for %d", ErrProbe, i, len(got), len(s.LogProbs))
		}
		for j := range got {
			worst = max(worst, math.Abs(float64(got[j]-s.LogProbs[j])))
		}
	}
	if worst > e.cfg.ProbeTolerance {
		return fmt.Errorf("%w: engine log-probs of the v%d probe differ from the learner's by up to %.4g (tolerance %g): the engine does not hold v%d's weights",
			ErrProbe, version, worst, e.cfg.ProbeTolerance, version)
	}
	return nil
}

// writeVersion writes the checkpoint as dir/model.safetensors (through a
// temporary file, so the engine never reads half a file).
func writeVersion(dir string, checkpoint []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("actor: weights dir: %w", err)
	}
	tmp := filepath.Join(dir, ".model.safetensors.tmp")
	if err := os.WriteFile(tmp, checkpoint, 0o644); err != nil {
		return fmt.Errorf("actor: write weights: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "model.safetensors")); err != nil {
		return fmt.Errorf("actor: write weights: %w", err)
	}
	return nil
}

// pruneVersions keeps the directories of the last two versions.
func (e *Engine) pruneVersions(latest int64) {
	entries, err := os.ReadDir(e.cfg.WeightsDir)
	if err != nil {
		return
	}
	for _, d := range entries {
		v, err := strconv.ParseInt(d.Name()[min(1, len(d.Name())):], 10, 64)
		if err == nil && d.IsDir() && d.Name()[0] == 'v' && v < latest-1 {
			_ = os.RemoveAll(filepath.Join(e.cfg.WeightsDir, d.Name()))
		}
	}
}

// SampleTask implements BatchPolicy: one request for the task's Samples
// completions with the task's seed (so a redelivered task reproduces them
// on the same weights).
func (e *Engine) SampleTask(ctx context.Context, t wire.Task) ([]Completion, error) {
	return e.sample(ctx, t, t.Samples, t.Seed)
}

// Sample implements Policy: completion i alone, with seed t.Seed+i.
func (e *Engine) Sample(ctx context.Context, t wire.Task, i int) (Completion, error) {
	cs, err := e.sample(ctx, t, 1, t.Seed+int64(i))
	if err != nil {
		return Completion{}, err
	}
	return cs[0], nil
}

func (e *Engine) sample(ctx context.Context, t wire.Task, n int, seed int64) ([]Completion, error) {
	e.mu.Lock()
	version, refused := e.version, e.refused
	e.mu.Unlock()
	if refused != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotServing, refused)
	}
	if version < 0 {
		return nil, fmt.Errorf("%w: no version loaded", ErrNotServing)
	}
	prompt := t.PromptTokens
	if len(prompt) == 0 {
		return nil, fmt.Errorf("%w: task %s carries no prompt token ids (the engine actor never tokenizes)", ErrBadTask, t.TaskID)
	}
	room := e.info.MaxModelLen - len(prompt)
	if room < 1 {
		return nil, fmt.Errorf("%w: prompt of %d tokens fills the engine's %d-token context", ErrBadTask, len(prompt), e.info.MaxModelLen)
	}
	maxNew := t.MaxNew
	if maxNew <= 0 || maxNew > room {
		maxNew = room
	}
	temp := t.Temp
	if temp == 0 {
		temp = 1
	}
	req := engine.Request{Prompt: prompt, N: n, Temperature: temp, TopP: 1, MaxTokens: maxNew, Seed: seed,
		StopTokenIDs: e.cfg.StopTokenIDs, TopLogProbs: e.cfg.TopLogProbs, CacheSalt: e.salt(version), IgnoreEOS: e.cfg.IgnoreEOS}
	var cs []engine.Completion
	var err error
	for attempt := 1; attempt <= e.cfg.AnswerAttempts; attempt++ {
		cs, err = e.client.Generate(ctx, req)
		if err == nil || !errors.Is(err, engine.ErrBadAnswer) || ctx.Err() != nil {
			break
		}
		e.log.Warn("bad engine answer", zap.String("task", t.TaskID), zap.Int("attempt", attempt), zap.Error(err))
	}
	switch {
	case err == nil:
	case errors.Is(err, engine.ErrRejected):
		return nil, fmt.Errorf("%w: %w", ErrBadTask, err)
	case errors.Is(err, engine.ErrUnavailable):
		down, herr := e.waitHealthy(ctx)
		if !down {
			return nil, err // the engine stayed up: this task's request failed
		}
		// The engine went away (and may come back): a restarted engine
		// holds its launch weights, not ours. Forget the version, so that
		// the actor loads and probes the current one before serving again.
		e.mu.Lock()
		if e.version == version {
			e.version = -1
		}
		e.mu.Unlock()
		e.log.Warn("engine was down; the policy version is reloaded before serving", zap.Int64("version", version), zap.NamedError("health", herr))
		return nil, fmt.Errorf("%w: engine down (%w)", ErrNotServing, err)
	default:
		return nil, err
	}
	out := make([]Completion, len(cs))
	for i, c := range cs {
		if c.WeightVersion != "" && c.WeightVersion != strconv.FormatInt(version, 10) {
			return nil, fmt.Errorf("%w: the engine answered with weight version %q, the actor loaded v%d", ErrNotServing, c.WeightVersion, version)
		}
		ents, err := engine.Entropies(c, e.cfg.EntropyKind, e.info.Vocab)
		if err != nil {
			return nil, err
		}
		out[i] = Completion{PromptTokens: prompt, Tokens: c.Tokens, LogProbs: c.LogProbs, Entropies: ents,
			Text: c.Text, Finish: c.Finish, EntropyKind: e.cfg.EntropyKind}
	}
	return out, nil
}

// waitHealthy polls the engine's health for up to HealthWait; down says
// whether a check failed before it passed.
func (e *Engine) waitHealthy(ctx context.Context) (down bool, err error) {
	hctx, cancel := context.WithTimeout(ctx, e.cfg.HealthWait)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(hctx, 2*time.Second)
		err := e.client.Health(cctx)
		ccancel()
		if err == nil {
			return down, nil
		}
		down = true
		select {
		case <-hctx.Done():
			return true, fmt.Errorf("actor: engine unhealthy for %v: %w", e.cfg.HealthWait, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
