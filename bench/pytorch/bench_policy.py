#!/usr/bin/env python3
"""PyTorch CPU reference for `exgrpo bench policy`.

The same decoder-only transformer as package policy (token + position
embeddings, pre-LayerNorm blocks, causal multi-head attention, tanh-GELU MLP
of width 4C, final LayerNorm, tied output projection), the same batch shapes
and the same work per step:

  train:  forward on B sequences of P prompt + R response tokens, per
          response token the log-prob of the target and the entropy of the
          next-token distribution, backward of sum(a*logp + b*entropy),
          global-norm clip 1.0 and an AdamW step.
  sample: B prompts of P tokens, R new tokens each with a KV cache, T=1
          multinomial sampling, recording log-prob and entropy per token.

Prints one JSON object per (size, threads) with tokens/s for both. Install
with bench/pytorch/install.sh (Debian python3-torch + libopenblas0-pthread).
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {"small": dict(layers=2, width=64, heads=4), "medium": dict(layers=4, width=128, heads=4)}


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def attend(self, x, cache=None, pos=0):
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        if cache is not None:
            kc, vc = cache
            kc[:, :, pos:pos + T] = k
            vc[:, :, pos:pos + T] = v
            k, v = kc[:, :, :pos + T], vc[:, :, :pos + T]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        if T > 1:
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attend(x, cache, pos)
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, C, NH):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)

    def forward(self, idx, caches=None, pos=0):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
        for i, b in enumerate(self.blocks):
            x = b(x, None if caches is None else caches[i], pos)
        return self.lnf(x)

    def logits(self, h):
        return h @ self.wte.weight.t()


def stats(logits, targets):
    logp_all = F.log_softmax(logits, dim=-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, ent


def bench_train(model, opt, V, B, P, R, steps):
    idx = torch.randint(3, V, (B, P + R))
    a, b = -1e-3, 1e-4
    def step():
        h = model(idx)
        logits = model.logits(h[:, P - 1:-1])
        logp, ent = stats(logits, idx[:, P:])
        loss = (a * logp + b * ent).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    return B * (P + R) / dt, dt, cpu


@torch.no_grad()
def bench_sample(model, V, L, C, NH, B, P, R, reps):
    prompts = torch.randint(3, V, (B, P))
    hs = C // NH
    def run():
        caches = [(torch.empty(B, NH, P + R, hs), torch.empty(B, NH, P + R, hs)) for _ in range(L)]
        h = model(prompts, caches, 0)[:, -1]
        for i in range(R):
            logits = model.logits(h)
            tok = torch.multinomial(F.softmax(logits, dim=-1), 1)
            logp, ent = stats(logits, tok.squeeze(-1))
            if i == R - 1:
                break
            h = model(tok, caches, P + i)[:, -1]
    run()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        run()
    dt = (time.perf_counter() - t0) / reps
    cpu = (time.process_time() - c0) / reps
    return B * R / dt, dt, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,medium")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--train-prompt", type=int, default=16)
    ap.add_argument("--train-response", type=int, default=48)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--sample-prompt", type=int, default=20)
    ap.add_argument("--sample-new", type=int, default=48)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(1)
    for size in args.sizes.split(","):
        s = SIZES[size]
        for th in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(th)
            model = GPT(args.vocab, args.context, s["layers"], s["width"], s["heads"])
            opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
            tr, trdt, trcpu = bench_train(model, opt, args.vocab, args.train_batch, args.train_prompt, args.train_response, args.steps)
            sa, sadt, sacpu = bench_sample(model, args.vocab, s["layers"], s["width"], s["heads"], args.sample_batch,
                                    args.sample_prompt, args.sample_new, max(2, args.steps // 3))
            print(json.dumps(dict(size=size, threads=th, params=sum(p.numel() for p in model.parameters()),
                                  train_tokens_per_s=tr, train_step_s=trdt, train_cpu_s=trcpu,
                                  sample_tokens_per_s=sa, sample_call_s=sadt, sample_cpu_s=sacpu,
                                  torch=torch.__version__)), flush=True)


if __name__ == "__main__":
    main()
