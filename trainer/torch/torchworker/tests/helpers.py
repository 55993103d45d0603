import json
import os
import tempfile

import numpy as np
import torch

from torchworker import builtin

ALPHABET = "0123456789+-*= ?"


def make_checkpoint(dir, tied=True, seed=0, layers=2, width=16, heads=2, context=24):
    """A random built-in checkpoint file in dir; returns its path."""
    cfg = {"vocab": builtin.NUM_SPECIAL + len(ALPHABET), "context": context, "layers": layers, "width": width,
           "heads": heads, "tied": tied}
    m = builtin.BuiltinModel(cfg, ALPHABET, json.dumps(cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_layout_params():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    path = os.path.join(dir, "model-%d-%s.safetensors" % (seed, tied))
    with open(path, "wb") as f:
        f.write(builtin.encode_checkpoint(m))
    return path


def random_seqs(rng, vocab, context, n):
    """Packed request fields for n random sequences."""
    toks, lens, plens = [], [], []
    for _ in range(n):
        p = int(rng.integers(1, 6))
        k = int(rng.integers(1, context - p + 1))
        s = [1] + list(rng.integers(3, vocab, size=p + k - 1))
        toks += s
        lens.append(len(s))
        plens.append(p)
    return np.array(toks, np.int32), np.array(lens, np.int32), np.array(plens, np.int32)


ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.01, "clip_norm": 1.0, "skip_norm": 500.0}
