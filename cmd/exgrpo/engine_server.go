package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/exgrpo/exgrpo/engine/server"
)

func init() {
	register("engine-server", "serve a built-in policy checkpoint over vLLM's or SGLang's HTTP API (for engine actors without a GPU)", runEngineServer)
}

func runEngineServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("engine-server", flag.ContinueOnError)
	cfg := server.DefaultConfig("", "")
	fs.StringVar(&cfg.API, "api", "vllm", "request/response shapes to serve: vllm or sglang")
	fs.StringVar(&cfg.Checkpoint, "checkpoint", "", "policy checkpoint file (or a directory holding model.safetensors)")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.StringVar(&cfg.Model, "model", cfg.Model, "model name reported by /v1/models")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "generations running at once (one model copy each)")
	fs.StringVar(&cfg.LogprobsMode, "logprobs-mode", cfg.LogprobsMode, "what /server_info reports as vLLM's --logprobs-mode")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx, func(addr string) {
		fmt.Fprintf(os.Stderr, "engine-server: serving %s (%s API) on http://%s\n", cfg.Checkpoint, cfg.API, addr)
	})
}
