package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/engine"
	"github.com/exgrpo/exgrpo/wire"
)

// engineFlags select and tune an inference engine backend (actor, eval).
type engineFlags struct {
	api, url, endpoint, model    string
	inFlight, maxTasks, vocab, k int
	stopIDs, entropy, dir, cache string
	probeTol                     float64
	timeout                      time.Duration
}

func addEngineFlags(fs *flag.FlagSet) *engineFlags {
	d := actor.DefaultEngineConfig(engine.APIVLLM, "http://127.0.0.1:8000")
	f := &engineFlags{}
	fs.StringVar(&f.api, "engine", "", "sample through an inference engine: vllm or sglang (empty: the built-in policy)")
	fs.StringVar(&f.url, "engine-url", "http://127.0.0.1:8000", "the engine's base URL")
	fs.StringVar(&f.endpoint, "engine-endpoint", engine.EndpointGenerate, "vLLM endpoint: generate (/inference/v1/generate, vLLM >= 0.12) or completions (/v1/completions, >= 0.10.2)")
	fs.StringVar(&f.model, "engine-model", "", "model name sent to vLLM (default: the first of /v1/models)")
	fs.IntVar(&f.inFlight, "engine-in-flight", d.Client.MaxInFlight, "requests open at once to the engine")
	fs.IntVar(&f.maxTasks, "engine-tasks", d.MaxTasks, "tasks in hand at once (one request each, n = samples)")
	fs.IntVar(&f.vocab, "engine-vocab", 0, "vocabulary size answers are checked against (0: from the server, when it says)")
	fs.StringVar(&f.stopIDs, "engine-stop-ids", "2", "comma-separated EOS token ids of the model (default: the built-in EOS)")
	fs.IntVar(&f.k, "engine-top-logprobs", 0, "top-k log-probs per token, for an entropy bound (0: none)")
	fs.StringVar(&f.entropy, "engine-entropy", wire.EntropySample, "what trajectories' entropies hold: sample, topk-lower or topk-upper")
	fs.StringVar(&f.dir, "engine-weights-dir", d.WeightsDir, "where blob versions (--weights-transport blob) are written for the engine to load (a path the engine can read); fs and objects versions are reloaded from their own directory")
	fs.StringVar(&f.cache, "engine-cache", "", "prefix cache across versions: reset+salt (vLLM default), reset (SGLang default), salt, none")
	fs.Float64Var(&f.probeTol, "engine-probe-tolerance", d.ProbeTolerance, "largest |engine - learner| log-prob on a probe token before the actor refuses a version (real engines in bf16: about 0.1)")
	fs.DurationVar(&f.timeout, "engine-timeout", d.Client.RequestTimeout, "deadline of one request attempt")
	return f
}

// config builds the actor's engine configuration from the flags.
func (f *engineFlags) config() (actor.EngineConfig, error) {
	c := actor.DefaultEngineConfig(f.api, f.url)
	c.Client.Endpoint, c.Client.Model, c.Client.MaxInFlight, c.Client.Vocab = f.endpoint, f.model, f.inFlight, f.vocab
	c.Client.RequestTimeout = f.timeout
	c.MaxTasks, c.TopLogProbs, c.EntropyKind, c.WeightsDir, c.ProbeTolerance = f.maxTasks, f.k, f.entropy, f.dir, f.probeTol
	if f.cache != "" {
		c.Cache = f.cache
	}
	c.StopTokenIDs = nil
	for _, s := range strings.Split(f.stopIDs, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return c, fmt.Errorf("%w: --engine-stop-ids %q: %v", errUsage, f.stopIDs, err)
		}
		c.StopTokenIDs = append(c.StopTokenIDs, int32(n))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}
