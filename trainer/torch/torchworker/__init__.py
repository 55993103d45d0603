"""The PyTorch trainer worker of exgrpo.

A differentiable policy that knows nothing about ExGRPO: the Go learner keeps
the objective (docs/ALGORITHM.md E10-E13) and sends, one micro-batch at a
time, sequences to score and the upstream gradients of every response token's
log-prob and entropy; the worker runs forward, backward and the AdamW step
(E14) and saves weights. Protocol: see protocol.py.

Modules:
  protocol     length-prefixed msgpack frames, arrays as little-endian bytes
  stfile       safetensors read/write with numpy (the project's built-in
               checkpoint format, HF shards with the index)
  builtin      the built-in GPT architecture of policy/ in torch
  logprobs     chunked fp32 log-probs and entropies of softmax(z/T)
  optim        AdamW with policy.AdamW's clip/skip semantics
  hf           thin loading and saving of transformers models
  dist         torchrun: rank 0 talks to Go, scatters and gathers
  worker       the request handlers
"""

PROTOCOL_VERSION = 1
