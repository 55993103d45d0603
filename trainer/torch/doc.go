// Package torch is the Go client of the PyTorch trainer worker
// (trainer/torch/torchworker, a Python package embedded in the binary): it
// implements trainer.Trainer by sending each call as one length-prefixed
// msgpack frame over a Unix socket and reading the reply.
//
// Start launches the worker itself (a Python interpreter that has torch,
// numpy and msgpack: Options.Python, then $EXGRPO_PYTHON, then
// /usr/bin/python3) with the model to load; Connect attaches to a worker
// that torchrun started (rank 0 listens on a socket path). The first frame is
// a hello carrying the protocol version; a mismatch is an error at start-up.
//
// Faults never hang the learner: every call runs under a deadline (its
// context's or Options.CallTimeout, whichever is first), a started worker is
// watched and its exit closes the connection at once, and the error names
// the call, the exit status and the tail of the worker's stderr. After a
// transport failure the client is broken: every later call fails with
// trainer.ErrBackend.
package torch
