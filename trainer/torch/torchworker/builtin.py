"""The built-in architecture of policy/ (GPT-2 style, after llm.c) in torch.

Same maths as policy/forward.go: token + position embeddings; per block
pre-LayerNorm (eps 1e-5) causal multi-head attention with a fused qkv
projection (rows q, then k, then v, heads contiguous inside each) and a tanh
GELU MLP of width 4C; final LayerNorm; output projection tied to wte or a
separate lm_head.w. Parameters are named as in the project's checkpoints
("wte", "h.0.qkv.w", ...) and kept in that layout order.
"""

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import stfile

FORMAT = "exgrpo-policy-1"
META_CONFIG = "policy.config"
META_ALPHABET = "tokenizer.alphabet"
META_FORMAT = "policy.format"
META_ADAMW = "adamw.config"
META_ADAMW_T = "adamw.t"
FORMAT_FILE = "model.safetensors"  # the file SaveWeights writes into a directory
BOS, EOS, PAD, NUM_SPECIAL = 1, 2, 0, 3
LN_EPS = 1e-5


def layout(cfg):
    """[(name, shape)] in storage order (policy/config.go layout)."""
    C, V = cfg["width"], cfg["vocab"]
    out = [("wte", (V, C)), ("wpe", (cfg["context"], C))]
    for l in range(cfg["layers"]):
        p = "h.%d." % l
        out += [
            (p + "ln1.w", (C,)), (p + "ln1.b", (C,)),
            (p + "qkv.w", (3 * C, C)), (p + "qkv.b", (3 * C,)),
            (p + "attproj.w", (C, C)), (p + "attproj.b", (C,)),
            (p + "ln2.w", (C,)), (p + "ln2.b", (C,)),
            (p + "fc.w", (4 * C, C)), (p + "fc.b", (4 * C,)),
            (p + "fcproj.w", (C, 4 * C)), (p + "fcproj.b", (C,)),
        ]
    out += [("lnf.w", (C,)), ("lnf.b", (C,))]
    if not cfg.get("tied", False):
        out.append(("lm_head.w", (V, C)))
    return out


def _gelu(x):
    # GPT-2's tanh approximation 0.5x(1 + tanh(u)), u = sqrt(2/pi)(x + 0.044715x^3),
    # which policy/kernels.go writes as x * sigmoid(2u): equal up to float
    # rounding, and torch fuses it into one kernel.
    return F.gelu(x, approximate="tanh")


class BuiltinModel(torch.nn.Module):
    """The built-in transformer; forward returns the hidden states after the
    final LayerNorm, (B, T, C), and out_weight() the (V, C) projection."""

    def __init__(self, cfg, alphabet, config_json):
        super().__init__()
        self.cfg = cfg
        self.alphabet = alphabet
        self.config_json = config_json
        self.names = [n for n, _ in layout(cfg)]
        self.params = torch.nn.ParameterDict()
        for n, shape in layout(cfg):
            # ParameterDict keys may not contain dots.
            self.params[n.replace(".", "_")] = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32))
        self.checkpointing = False

    def p(self, name):
        return self.params[name.replace(".", "_")]

    def named_layout_params(self):
        return [(n, self.p(n)) for n in self.names]

    def out_weight(self):
        return self.p("wte") if self.cfg.get("tied", False) else self.p("lm_head.w")

    def _block(self, x, l, mask):
        cfg = self.cfg
        C, NH = cfg["width"], cfg["heads"]
        HS = C // NH
        pre = "h.%d." % l
        B, T, _ = x.shape
        h = F.layer_norm(x, (C,), self.p(pre + "ln1.w"), self.p(pre + "ln1.b"), LN_EPS)
        qkv = F.linear(h, self.p(pre + "qkv.w"), self.p(pre + "qkv.b"))
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NH, HS).transpose(1, 2)
        v = v.view(B, T, NH, HS).transpose(1, 2)
        att = (q * (1.0 / math.sqrt(HS))) @ k.transpose(-2, -1)
        att = att.masked_fill(mask, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, self.p(pre + "attproj.w"), self.p(pre + "attproj.b"))
        h = F.layer_norm(x, (C,), self.p(pre + "ln2.w"), self.p(pre + "ln2.b"), LN_EPS)
        h = _gelu(F.linear(h, self.p(pre + "fc.w"), self.p(pre + "fc.b")))
        return x + F.linear(h, self.p(pre + "fcproj.w"), self.p(pre + "fcproj.b"))

    def forward(self, tokens):
        """tokens: (B, T) int64, right-padded (the causal mask keeps real
        positions from seeing the padding). Returns (B, T, C)."""
        B, T = tokens.shape
        if T > self.cfg["context"]:
            raise ValueError("sequence of %d tokens exceeds the context %d" % (T, self.cfg["context"]))
        pos = torch.arange(T, device=tokens.device)
        x = self.p("wte")[tokens] + self.p("wpe")[pos][None]
        mask = torch.ones(T, T, dtype=torch.bool, device=tokens.device).triu(1)
        for l in range(self.cfg["layers"]):
            if self.checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(self._block, x, l, mask)
            else:
                x = self._block(x, l, mask)
        return F.layer_norm(x, (self.cfg["width"],), self.p("lnf.w"), self.p("lnf.b"), LN_EPS)

    # Tokenizer of the built-in model: PAD, BOS, EOS, then one id per
    # alphabet character (policy/tokenizer.go).
    def tokenize(self, text):
        ids = [BOS]
        index = {c: i + NUM_SPECIAL for i, c in enumerate(self.alphabet)}
        for c in text:
            if c not in index:
                raise ValueError("character %r is not in the model's alphabet" % c)
            ids.append(index[c])
        return ids


def _dedupe(alphabet):
    seen, out = set(), []
    for c in alphabet:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return "".join(out)


def load(path):
    """Reads a project checkpoint; returns (model, adam dict or None) where
    adam = {"m": {name: array}, "v": {...}, "t": int, "config": dict}."""
    tensors, meta = stfile.read(path)
    if meta.get(META_FORMAT) != FORMAT:
        raise ValueError("%s: policy.format %r, want %r (not a built-in checkpoint)" % (path, meta.get(META_FORMAT), FORMAT))
    cfg = json.loads(meta[META_CONFIG])
    alphabet = _dedupe(meta[META_ALPHABET])
    if NUM_SPECIAL + len(alphabet) != cfg["vocab"]:
        raise ValueError("%s: tokenizer size %d differs from vocab %d" % (path, NUM_SPECIAL + len(alphabet), cfg["vocab"]))
    m = BuiltinModel(cfg, alphabet, meta[META_CONFIG])
    with torch.no_grad():
        for n, shape in layout(cfg):
            if n not in tensors:
                raise ValueError("%s: tensor %s missing" % (path, n))
            dt, sh, arr = tensors[n]
            if dt != "F32" or tuple(sh) != tuple(shape):
                raise ValueError("%s: tensor %s is %s%s, want F32%s" % (path, n, dt, sh, list(shape)))
            m.p(n).copy_(torch.from_numpy(np.array(arr)))
    adam = None
    if META_ADAMW in meta:
        adam = {"m": {}, "v": {}, "t": int(meta.get(META_ADAMW_T, "0")), "config": json.loads(meta[META_ADAMW])}
        for n, _ in layout(cfg):
            adam["m"][n] = np.array(tensors["adamw.m." + n][2])
            adam["v"][n] = np.array(tensors["adamw.v." + n][2])
    return m, adam


def encode_checkpoint(m, adam=None):
    """The project checkpoint bytes of m (and the optimiser moments when
    adam = {"m", "v", "t", "config"} is given), readable by policy.ReadCheckpoint."""
    meta = {META_CONFIG: m.config_json, META_ALPHABET: m.alphabet, META_FORMAT: FORMAT}
    ts = []
    for n, shape in layout(m.cfg):
        ts.append((n, "F32", shape, m.p(n).detach().float().cpu().numpy()))
    if adam is not None:
        meta[META_ADAMW] = json.dumps(adam["config"])
        meta[META_ADAMW_T] = str(int(adam["t"]))
        for n, shape in layout(m.cfg):
            ts.append(("adamw.m." + n, "F32", shape, adam["m"][n]))
        for n, shape in layout(m.cfg):
            ts.append(("adamw.v." + n, "F32", shape, adam["v"][n]))
    return stfile.encode(ts, meta)
