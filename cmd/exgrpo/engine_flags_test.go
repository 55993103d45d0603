package main

import (
	"errors"
	"flag"
	"reflect"
	"testing"

	"github.com/exgrpo/exgrpo/actor"
	"github.com/exgrpo/exgrpo/wire"
)

// TestEngineFlags: the actor's engine flags make the engine configuration
// (exact spellings others depend on: --engine, --engine-url), and
// contradictions are usage errors.
func TestEngineFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		ok   bool
		want func(c actor.EngineConfig) bool
	}{
		{"vllm", []string{"--engine", "vllm", "--engine-url", "http://10.0.0.2:8000", "--engine-stop-ids", "151643, 151645",
			"--engine-top-logprobs", "5", "--engine-entropy", "topk-upper", "--engine-tasks", "16", "--engine-in-flight", "128"}, true,
			func(c actor.EngineConfig) bool {
				return c.Client.URL == "http://10.0.0.2:8000" && reflect.DeepEqual(c.StopTokenIDs, []int32{151643, 151645}) &&
					c.TopLogProbs == 5 && c.EntropyKind == wire.EntropyTopKUpper && c.MaxTasks == 16 && c.Client.MaxInFlight == 128 &&
					c.Cache == actor.CacheResetAndSalt
			}},
		{"sglang defaults to reset", []string{"--engine", "sglang", "--engine-url", "http://h:30000"}, true,
			func(c actor.EngineConfig) bool { return c.Cache == actor.CacheReset && c.Client.API == "sglang" }},
		{"sglang cannot salt", []string{"--engine", "sglang", "--engine-cache", "salt"}, false, nil},
		{"bound without top-k", []string{"--engine", "vllm", "--engine-entropy", "topk-lower"}, false, nil},
		{"bad stop ids", []string{"--engine", "vllm", "--engine-stop-ids", "2,x"}, false, nil},
		{"unknown engine", []string{"--engine", "tgi"}, false, nil},
		{"not a URL", []string{"--engine", "vllm", "--engine-url", "localhost"}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("actor", flag.ContinueOnError)
			ef := addEngineFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			c, err := ef.config()
			if !tc.ok {
				if !errors.Is(err, errUsage) {
					t.Fatalf("config: %v, want a usage error", err)
				}
				return
			}
			if err != nil || !tc.want(c) {
				t.Fatalf("config %+v, %v", c, err)
			}
		})
	}
}
