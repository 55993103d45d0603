"""See trainer_cuda.sh. Every figure is measured here; nothing is assumed.

1. bf16 matmul peak: the best of a few 8192^3 bf16 matmuls (TFLOP/s).
2. Qwen2 at the Qwen2.5-0.5B shapes (24 layers, hidden 896, MLP 4864,
   14 heads, 2 KV heads, vocab 151936, tied embeddings), random weights,
   saved to a temporary HF directory and loaded by the worker as any HF
   model (fp32 master weights, bf16 autocast, fused AdamW). Training steps
   of --tokens packed tokens (sequences of --seq-len, a quarter prompt) in
   micro-batches of --micro-batch-tokens: forward, backward with upstream
   gradients, one step. Reports tokens/s, peak memory, and achieved model
   TFLOP/s = (6 * N_params + 6 * layers * hidden * seq_len) * tokens / time
   (the attention term is the causal half of 12 * L * H * S; recomputation
   under --gradient-checkpointing is not counted).
3. The built-in architecture (the project's own model) on CUDA in fp32 (no
   TF32) and with bf16 autocast, against CPU fp32: max |log-prob| and
   |entropy| differences on the same batch.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

from torchworker import PROTOCOL_VERSION, builtin
from torchworker.protocol import f32, i32_bytes
from torchworker.worker import Worker

ADAM = {"lr": 1e-6, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "clip_norm": 1.0, "skip_norm": 500.0}


def say(*a):
    print(*a, flush=True)


def matmul_peak():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    del a, b
    torch.cuda.empty_cache()
    return best


def qwen2_dir(tmp):
    import transformers

    cfg = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        tie_word_embeddings=True, hidden_act="silu")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    d = os.path.join(tmp, "qwen2-0.5b-shapes")
    model.save_pretrained(d)
    n = sum(p.numel() for p in model.parameters())
    del model
    return d, cfg, n


def seq_request(rng, n_seqs, seq_len, vocab, prompt):
    toks = rng.integers(0, vocab, size=(n_seqs, seq_len)).astype(np.int32)
    toks[:, 0] = 1
    return {"tokens": i32_bytes(toks.reshape(-1)), "lens": i32_bytes([seq_len] * n_seqs),
            "prompt_lens": i32_bytes([prompt] * n_seqs), "temp": 0.6}


def train_bench(args, tmp):
    d, cfg, n_params = qwen2_dir(tmp)
    w = Worker(d, device="cuda", micro_batch_tokens=args.micro_batch_tokens, logit_chunk=args.logit_chunk,
               checkpointing=args.gradient_checkpointing)
    r = w.handle({"op": "hello", "version": PROTOCOL_VERSION, "adam": ADAM})
    assert r["ok"], r
    rng = np.random.default_rng(0)
    per_mb = max(1, args.micro_batch_tokens // args.seq_len)
    n_mb = max(1, args.tokens // (per_mb * args.seq_len))
    prompt = args.seq_len // 4
    reqs = [seq_request(rng, per_mb, args.seq_len, cfg.vocab_size, prompt) for _ in range(n_mb)]
    resp = per_mb * (args.seq_len - prompt)
    up = {"dlogps": (rng.normal(size=resp) * 1e-4).astype(np.float32).tobytes(),
          "dents": np.full(resp, -1e-6, np.float32).tobytes()}

    def step():
        for m in reqs:
            r = w.handle(dict(m, op="forward"))
            assert r["ok"], r["error"]
            r = w.handle(dict(up, op="backward"))
            assert r["ok"], r["error"]
        r = w.handle({"op": "step"})
        assert r["ok"], r
        torch.cuda.synchronize()
        return r

    step()  # warm-up (allocations, kernels)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        info = step()
        times.append(time.perf_counter() - t0)
    tokens = n_mb * per_mb * args.seq_len
    t = float(np.median(times))
    # Tied embeddings: n_params counts the (V, C) matrix once; its lookup is
    # free and its lm_head matmul costs like a dense layer, so every
    # parameter takes part in one matmul per token.
    dense = n_params
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq_len / 2
    flops = (6 * dense + attn) * tokens
    return {"params": n_params, "tokens_per_step": tokens, "micro_batches": n_mb, "step_s": t,
            "tokens_per_s": tokens / t, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "tflops": flops / t / 1e12, "grad_norm": info["grad_norm"]}


def agreement(tmp):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "trainer", "torch"))
    from torchworker.tests.helpers import make_checkpoint, random_seqs

    path = make_checkpoint(tmp, tied=True, seed=1, layers=2, width=64, heads=4, context=128)
    rng = np.random.default_rng(1)
    toks, lens, plens = random_seqs(rng, 19, 128, 64)
    msg = {"op": "score", "tokens": i32_bytes(toks), "lens": i32_bytes(lens), "prompt_lens": i32_bytes(plens), "temp": 0.6}
    n = int((lens - plens).sum())
    out = {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = Worker(path, device="cpu").handle(msg)
    for name, autocast in (("cuda_fp32", False), ("cuda_bf16_autocast", True)):
        r = Worker(path, device="cuda", autocast=autocast).handle(msg)
        assert r["ok"], r
        out[name] = {"max_abs_logp": float(np.abs(f32(r["logps"], n) - f32(ref["logps"], n)).max()),
                     "max_abs_entropy": float(np.abs(f32(r["ents"], n) - f32(ref["ents"], n)).max()), "tokens": n}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384, help="packed tokens per training step")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--micro-batch-tokens", type=int, default=4096)
    ap.add_argument("--logit-chunk", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("trainer_cuda: no CUDA device")
    import transformers

    say("torch %s, transformers %s, %s" % (torch.__version__, transformers.__version__, torch.cuda.get_device_name()))
    t0 = time.time()
    peak = matmul_peak()
    say("bf16 matmul 8192^3: %.1f TFLOP/s" % peak)
    with tempfile.TemporaryDirectory() as tmp:
        tr = train_bench(args, tmp)
        say("Qwen2 0.5B shapes (%d params): %d tokens/step in %d micro-batches, %.3f s/step, %.0f tokens/s, "
            "peak memory %.1f GiB, %.1f TFLOP/s achieved (%.0f%% of the bf16 matmul)"
            % (tr["params"], tr["tokens_per_step"], tr["micro_batches"], tr["step_s"], tr["tokens_per_s"],
               tr["peak_mem_gib"], tr["tflops"], 100 * tr["tflops"] / peak))
        torch.cuda.empty_cache()
        ag = agreement(tmp)
        for k, v in ag.items():
            say("built-in architecture, %s vs CPU fp32 (%d tokens, T=0.6): max |dlogp| %.2e, max |dH| %.2e"
                % (k, v["tokens"], v["max_abs_logp"], v["max_abs_entropy"]))
    say(json.dumps({"matmul_bf16_tflops": peak, "train": tr, "agreement": ag, "args": vars(args),
                    "wall_s": time.time() - t0}))


if __name__ == "__main__":
    main()
