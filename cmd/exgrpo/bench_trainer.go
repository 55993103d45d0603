package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/exgrpo/exgrpo/trainer/trainerbench"
)

func benchTrainer(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("bench trainer", flag.ContinueOnError)
	var c trainerbench.Config
	fs.StringVar(&c.Size, "size", "medium", "model size: small (2 layers, width 64) or medium (4 layers, width 128)")
	fs.IntVar(&c.Seqs, "seqs", 32, "sequences per step")
	fs.IntVar(&c.Prompt, "prompt", 16, "prompt tokens per sequence")
	fs.IntVar(&c.Response, "response", 48, "response tokens per sequence")
	fs.IntVar(&c.Rounds, "rounds", 10, "interleaved measurement rounds (medians are reported)")
	fs.StringVar(&c.Python, "python", "", "worker interpreter (default $EXGRPO_PYTHON, then /usr/bin/python3)")
	fs.IntVar(&c.Threads, "torch-threads", 1, "torch and BLAS threads of the worker")
	fs.BoolVar(&c.SkipTorch, "go-only", false, "measure the Go trainer only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	r, err := trainerbench.Run(ctx, c, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Fprint(w, r.Report())
	return nil
}
