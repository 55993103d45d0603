"""Several processes under torchrun: rank 0 talks to the learner, every rank
runs its share of each request.

Rank 0 broadcasts each request to the other ranks; a request over sequences
(score, forward) is split into contiguous shards by sequence (Comm.shard),
each rank runs its shard, and rank 0 gathers the per-token results in rank
order, which is sequence order. Backward: every rank receives the whole
upstream gradient and takes its shard's part. Step: the gradients are summed
across ranks (replicated mode: an all-reduce of every gradient; FSDP2 mode:
the reduce-scatter happened in the backward and the squared norms of the
local shards are summed), so the clip uses the global norm.

FSDP2 (fully_shard, torch >= 2.4) is thin here: shard_model applies it per
transformer block and to the root. CI (torch 1.13, CPU) tests the replicated
mode with two gloo processes.
"""

import os

import numpy as np
import torch
import torch.distributed as tdist


def under_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class DistComm:
    def __init__(self, fsdp=False):
        self.rank, self.world = tdist.get_rank(), tdist.get_world_size()
        self.fsdp = fsdp

    def shard(self, n):
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def gather_rows(self, parts):
        objs = [None] * self.world if self.rank == 0 else None
        tdist.gather_object(parts, objs, dst=0)
        if self.rank != 0:
            return parts
        return tuple(np.concatenate([o[i] for o in objs]).astype(np.float32) for i in range(len(parts)))

    def reduce_grads(self, params):
        if self.fsdp:
            return  # FSDP2 reduce-scattered the gradients in the backward
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)

    def sum_scalar(self, x):
        if not self.fsdp:
            return x  # replicated: every rank holds the whole reduced gradient
        t = torch.tensor([x], dtype=torch.float64)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return float(t[0])


def init(fsdp=False):
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistComm(fsdp)


def shard_model(model):
    """FSDP2 over an HF model: each decoder layer, then the root."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError as e:
            raise RuntimeError("--fsdp needs torch >= 2.4 (fully_shard): %s" % e)
    inner = getattr(model, "model", model)
    layers = getattr(getattr(inner, "model", inner), "layers", None)
    if layers is not None:
        for layer in layers:
            fully_shard(layer)
    fully_shard(inner)


def _bcast(obj, rank):
    box = [obj if rank == 0 else None]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def handle_all(comm, worker, msg):
    """Every rank calls this with the same msg (rank 0's); rank 0's reply is
    returned on rank 0."""
    return worker.handle(msg)


def lead(comm, worker, conn, serve):
    """Rank 0: serve the learner, broadcasting each request first."""

    class Broadcasting:
        def handle(self, msg):
            _bcast(msg, 0)
            return handle_all(comm, worker, msg)

    try:
        serve(conn, Broadcasting())
    finally:
        _bcast({"op": "shutdown"}, 0)


def follow(comm, worker):
    """Ranks > 0: run rank 0's requests until it shuts down."""
    while True:
        msg = _bcast(None, comm.rank)
        if msg.get("op") == "shutdown":
            return
        worker.handle(msg)
