package main

import (
	"flag"

	"github.com/exgrpo/exgrpo/local"
)

// trainerFlags binds the trainer-backend flags of `run` and `learner`.
func trainerFlags(fs *flag.FlagSet, c *local.Config) {
	fs.StringVar(&c.Trainer, "trainer", c.Trainer, "trainer backend: go (the built-in Go model in process) or torch (a PyTorch worker on the same weights)")
	fs.StringVar(&c.Torch.Python, "python", c.Torch.Python, "with --trainer torch: Python interpreter with torch, numpy and msgpack (default $EXGRPO_PYTHON, then /usr/bin/python3)")
	fs.StringVar(&c.Torch.Device, "torch-device", c.Torch.Device, "with --trainer torch: torch device (default cpu)")
	fs.IntVar(&c.Torch.Threads, "torch-threads", c.Torch.Threads, "with --trainer torch: torch intra-op threads (0 = torch's default)")
	fs.IntVar(&c.Torch.MicroBatchTokens, "micro-batch-tokens", c.Torch.MicroBatchTokens, "with --trainer torch: packed tokens per forward with gradient; mini-batches stream in micro-batches (0 = whole mini-batches)")
	fs.Float64Var(&c.Learner.Learner.TruncCap, "trunc-cap", c.Learner.Learner.TruncCap, "truncate fresh tokens' importance weight at this value (engine/trainer mismatch; 0 = off, right for the built-in actors; 2 for remote engines)")
	fs.BoolVar(&c.Learner.Learner.TrainerBehaviour, "trainer-behaviour", c.Learner.Learner.TrainerBehaviour, "replay trajectories with the trainer's own log-probs of the step that trained them instead of the actor's (for remote engines)")
	fs.StringVar(&c.Torch.Socket, "torch-socket", c.Torch.Socket, "with --trainer torch: connect to a worker listening on this Unix socket (rank 0 under torchrun) instead of starting one")
}
