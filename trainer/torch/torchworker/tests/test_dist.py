import os
import pickle
import socket
import tempfile
import threading
import unittest

import numpy as np
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from torchworker import PROTOCOL_VERSION, builtin, dist
from torchworker.__main__ import serve
from torchworker.protocol import f32, read_frame, write_frame
from torchworker.worker import Worker

from .helpers import ADAM, make_checkpoint, random_seqs
from .test_worker import seq_msg


def script(toks, lens, plens, dlp, dent):
    """The requests both runs answer, and what is kept of each reply."""
    m = seq_msg(toks, lens, plens, 0.5)
    return [
        dict(op="hello", version=PROTOCOL_VERSION, adam=ADAM),
        dict(op="score", **m),
        dict(op="forward", **m),
        dict(op="backward", dlogps=dlp.tobytes(), dents=dent.tobytes()),
        dict(op="step"),
        dict(op="export"),
    ]


def run_rank(rank, world, init, path, reqs, out):
    tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    comm = dist.DistComm()
    w = Worker(path, comm=comm)
    if rank != 0:
        dist.follow(comm, w)
        tdist.destroy_process_group()
        return
    a, b = socket.socketpair()
    t = threading.Thread(target=dist.lead, args=(comm, w, b, serve), daemon=True)
    t.start()
    replies = []
    for r in reqs:
        write_frame(a, r)
        replies.append(read_frame(a))
    write_frame(a, {"op": "shutdown"})
    read_frame(a)
    t.join(30)
    with open(out, "wb") as f:
        pickle.dump(replies, f)
    tdist.destroy_process_group()


class TwoRankTest(unittest.TestCase):
    """Rank 0 serves the learner and scatters each request's sequences to two
    gloo CPU processes (replicated model, gradients all-reduced at the step):
    scores, the step's norm and the weights after it equal one process's
    (1e-6; the two halves are summed in another order)."""

    def test_scatter_gather_equals_one_process(self):
        d = tempfile.mkdtemp()
        path = make_checkpoint(d, tied=True, seed=9)
        rng = np.random.default_rng(4)
        toks, lens, plens = random_seqs(rng, 19, 24, 7)
        n = int((lens - plens).sum())
        dlp = (rng.normal(size=n) * 0.05).astype(np.float32)
        dent = (rng.normal(size=n) * 0.01).astype(np.float32)
        reqs = script(toks, lens, plens, dlp, dent)

        single = Worker(path)
        want = [single.handle(r) for r in reqs]

        out = os.path.join(d, "replies.pkl")
        init = "file://" + os.path.join(d, "rendezvous")
        mp.spawn(run_rank, args=(2, init, path, reqs, out), nprocs=2, join=True)
        with open(out, "rb") as f:
            got = pickle.load(f)
        for g, w, r in zip(got, want, reqs):
            self.assertTrue(g["ok"] and w["ok"], (r["op"], g, w))
        self.assertEqual(got[0]["world"], 2)
        for i in (1, 2):
            for k in ("logps", "ents"):
                self.assertLess(np.abs(f32(got[i][k], n) - f32(w_ := want[i][k], n)).max(), 1e-6)
        self.assertAlmostEqual(got[4]["grad_norm"], want[4]["grad_norm"], delta=1e-6 * want[4]["grad_norm"])
        pa, pb = os.path.join(d, "a.safetensors"), os.path.join(d, "b.safetensors")
        for p, r in ((pa, got[5]), (pb, want[5])):
            with open(p, "wb") as f:
                f.write(r["checkpoint"])
        ma, _ = builtin.load(pa)
        mb, _ = builtin.load(pb)
        for (n1, x), (_, y) in zip(ma.named_layout_params(), mb.named_layout_params()):
            self.assertLess((x - y).abs().max().item(), 1e-6, n1)


if __name__ == "__main__":
    unittest.main()
