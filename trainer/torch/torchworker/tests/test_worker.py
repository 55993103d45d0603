import os
import socket
import tempfile
import threading
import unittest

import numpy as np
import torch

from torchworker import PROTOCOL_VERSION, builtin, stfile
from torchworker.__main__ import serve
from torchworker.optim import ClipSkipAdamW
from torchworker.protocol import f32, i32, i32_bytes, read_frame, write_frame
from torchworker.worker import Worker

from .helpers import ADAM, make_checkpoint, random_seqs


class Client:
    """The worker served on one end of a socketpair, as the Go client sees it."""

    def __init__(self, worker):
        self.a, b = socket.socketpair()
        self.t = threading.Thread(target=serve, args=(b, worker), daemon=True)
        self.t.start()

    def call(self, **msg):
        write_frame(self.a, msg)
        return read_frame(self.a)

    def close(self):
        write_frame(self.a, {"op": "shutdown"})
        read_frame(self.a)
        self.a.close()
        self.t.join(5)


def seq_msg(toks, lens, plens, temp=1.0):
    return {"tokens": i32_bytes(toks), "lens": i32_bytes(lens), "prompt_lens": i32_bytes(plens), "temp": temp}


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = make_checkpoint(self.dir, tied=False, seed=3)
        self.rng = np.random.default_rng(0)

    def client(self, mb=0):
        c = Client(Worker(self.path, micro_batch_tokens=mb))
        self.addCleanup(c.close)
        r = c.call(op="hello", version=PROTOCOL_VERSION, adam=ADAM)
        self.assertTrue(r["ok"], r)
        return c

    def test_hello_version_mismatch_is_a_clear_error(self):
        c = Client(Worker(self.path))
        r = c.call(op="hello", version=PROTOCOL_VERSION + 1)
        self.assertFalse(r["ok"])
        self.assertTrue(r.get("fatal"))
        self.assertIn("protocol version mismatch", r["error"])
        c.t.join(5)
        self.assertFalse(c.t.is_alive(), "the worker must close the connection after a version mismatch")

    def test_hello_reports_the_model(self):
        c = self.client(mb=64)
        r = c.call(op="hello", version=PROTOCOL_VERSION, adam=ADAM)
        self.assertEqual((r["arch"], r["vocab"], r["context"], r["micro_batch_tokens"]), ("builtin", 19, 24, 64))
        # The resolved path it loaded, so a learner can check what a worker
        # it did not start holds.
        self.assertEqual(r["model"], os.path.realpath(self.path))

    def test_score_equals_forward_and_split_batches(self):
        """Score at T=0.5 equals Forward's values, and scoring in micro-batches
        of 30 tokens equals one batch (1e-6)."""
        toks, lens, plens = random_seqs(self.rng, 19, 24, 9)
        a, b = self.client(), self.client(mb=30)
        n = int((lens - plens).sum())
        s1 = a.call(op="score", **seq_msg(toks, lens, plens, 0.5))
        s2 = b.call(op="score", **seq_msg(toks, lens, plens, 0.5))
        f = a.call(op="forward", **seq_msg(toks, lens, plens, 0.5))
        for r in (s1, s2, f):
            self.assertTrue(r["ok"], r)
        for k in ("logps", "ents"):
            x, y, z = f32(s1[k], n), f32(s2[k], n), f32(f[k], n)
            self.assertLess(np.abs(x - y).max(), 1e-6)
            self.assertLess(np.abs(x - z).max(), 1e-6)
        self.assertTrue(np.all(f32(s1["logps"]) <= 0))

    def test_micro_batched_step_equals_single_batch(self):
        """Two forward/backward pairs then one step equal one pair over the
        whole batch, then one step (weights within 1e-6)."""
        toks, lens, plens = random_seqs(self.rng, 19, 24, 6)
        k = lens - plens
        dlp = self.rng.normal(size=int(k.sum())).astype(np.float32) * 0.05
        dent = self.rng.normal(size=int(k.sum())).astype(np.float32) * 0.01

        def run(split):
            c = self.client()
            cut = [0, split, 6]
            for i in range(len(cut) - 1):
                lo, hi = cut[i], cut[i + 1]
                if lo == hi:
                    continue
                t0, t1 = int(lens[:lo].sum()), int(lens[:hi].sum())
                r0, r1 = int(k[:lo].sum()), int(k[:hi].sum())
                r = c.call(op="forward", **seq_msg(toks[t0:t1], lens[lo:hi], plens[lo:hi]))
                self.assertTrue(r["ok"], r)
                r = c.call(op="backward", dlogps=dlp[r0:r1].tobytes(), dents=dent[r0:r1].tobytes())
                self.assertTrue(r["ok"], r)
            st = c.call(op="step")
            self.assertTrue(st["ok"], st)
            ck = c.call(op="export")["checkpoint"]
            p = os.path.join(self.dir, "out-%d.safetensors" % split)
            with open(p, "wb") as fh:
                fh.write(ck)
            m, _ = builtin.load(p)
            return st, torch.cat([q.detach().reshape(-1) for _, q in m.named_layout_params()])

        st1, w1 = run(6)
        st2, w2 = run(2)
        self.assertAlmostEqual(st1["grad_norm"], st2["grad_norm"], delta=1e-5 * st1["grad_norm"])
        self.assertLess((w1 - w2).abs().max().item(), 1e-6)

    def test_bad_requests_leave_the_worker_usable(self):
        c = self.client()
        toks, lens, plens = random_seqs(self.rng, 19, 24, 2)
        for msg in (
            dict(op="backward", dlogps=b""),
            dict(op="score", **seq_msg(np.array([1, 99], np.int32), np.array([2], np.int32), np.array([1], np.int32))),
            dict(op="score", **seq_msg(toks, lens, plens, 0.0)),
            dict(op="score", tokens=i32_bytes([1, 5]), lens=i32_bytes([3]), prompt_lens=i32_bytes([1]), temp=1.0),
            dict(op="load_optimizer", path=os.path.join(self.dir, "missing")),
            dict(op="no-such-op"),
            dict(op="tokenize", texts=["\u2603"]),
        ):
            r = c.call(**msg)
            self.assertFalse(r["ok"], msg["op"])
            self.assertTrue(r["error"])
        r = c.call(op="score", **seq_msg(toks, lens, plens))
        self.assertTrue(r["ok"], r)

    def test_tokenize(self):
        c = self.client()
        r = c.call(op="tokenize", texts=["1+2", "3"])
        self.assertTrue(r["ok"], r)
        self.assertEqual(list(i32(r["lens"])), [4, 2])
        self.assertEqual(list(i32(r["tokens"])), [1, 4, 13, 5, 1, 6])
        # The built-in format has no system prompt: given ones are ignored.
        r2 = c.call(op="tokenize", texts=["1+2", "3"], systems=["think", ""])
        self.assertTrue(r2["ok"], r2)
        self.assertEqual((r2["tokens"], r2["lens"]), (r["tokens"], r["lens"]))
        r3 = c.call(op="tokenize", texts=["1+2", "3"], systems=["think"])
        self.assertFalse(r3["ok"])
        self.assertIn("1 system prompts for 2 texts", r3["error"])

    def test_save_weights_round_trip(self):
        c = self.client()
        d = os.path.join(self.dir, "v1")
        self.assertTrue(c.call(op="save_weights", dir=d)["ok"])
        a, _ = stfile.read(os.path.join(d, builtin.FORMAT_FILE))
        b, _ = stfile.read(self.path)
        self.assertEqual(sorted(a), sorted(b))
        for n in a:
            np.testing.assert_array_equal(a[n][2], b[n][2])


class AdamWTest(unittest.TestCase):
    """ClipSkipAdamW against policy/adamw.go's update written out in numpy
    (float64 reference; tolerance 1e-6 on weights)."""

    def reference(self, params, grads, cfg, steps):
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        t = 0
        for g in grads:
            norm = np.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in g))
            if not np.isfinite(norm) or (cfg["skip_norm"] > 0 and norm > cfg["skip_norm"]):
                continue
            sc = cfg["clip_norm"] / norm if cfg["clip_norm"] > 0 and norm > cfg["clip_norm"] else 1.0
            t += 1
            bc1, bc2 = 1 - cfg["beta1"] ** t, 1 - cfg["beta2"] ** t
            for i, p in enumerate(params):
                wd = cfg["weight_decay"] if p.ndim >= 2 else 0.0
                gi = g[i] * sc
                m[i] = cfg["beta1"] * m[i] + (1 - cfg["beta1"]) * gi
                v[i] = cfg["beta2"] * v[i] + (1 - cfg["beta2"]) * gi * gi
                params[i] = p * (1 - cfg["lr"] * wd) - (cfg["lr"] / bc1) * m[i] / (np.sqrt(v[i]) / np.sqrt(bc2) + cfg["eps"])
        return params, t

    def test_matches_policy_adamw(self):
        rng = np.random.default_rng(1)
        shapes = [(4, 3), (3,), (2, 2, 2)]
        init = [rng.normal(size=s).astype(np.float32) for s in shapes]
        cfg = dict(ADAM, clip_norm=0.5, skip_norm=50.0)
        grads = [[rng.normal(size=s).astype(np.float32) * sc for s in shapes] for sc in (0.1, 1.0, 100.0, 0.3)]
        grads.append([np.full(s, np.inf, np.float32) for s in shapes])  # non-finite: skipped
        ps = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
        opt = ClipSkipAdamW([("p%d" % i, p) for i, p in enumerate(ps)], cfg)
        skipped = []
        for g in grads:
            for p, x in zip(ps, g):
                p.grad = torch.from_numpy(x.copy())
            info = opt.step()
            skipped.append(info["skipped"])
            self.assertTrue(all(p.grad is None for p in ps), "gradients must be zero after every step")
        ref, t = self.reference([x.astype(np.float64) for x in init], grads, cfg, len(grads))
        self.assertEqual(skipped, [False, False, True, False, True])
        self.assertEqual(opt.t, t)
        for p, r in zip(ps, ref):
            self.assertLess(np.abs(p.detach().numpy() - r).max(), 1e-6)

    def test_state_round_trip(self):
        rng = np.random.default_rng(2)
        p = torch.nn.Parameter(torch.from_numpy(rng.normal(size=(3, 2)).astype(np.float32)))
        opt = ClipSkipAdamW([("w", p)], ADAM)
        p.grad = torch.ones(3, 2)
        opt.step()
        m, v, t = opt.state()
        q = torch.nn.Parameter(p.detach().clone())
        opt2 = ClipSkipAdamW([("w", q)], ADAM)
        opt2.load_state(m, v, t)
        p.grad, q.grad = torch.full((3, 2), 0.5), torch.full((3, 2), 0.5)
        opt.step()
        opt2.step()
        self.assertLess((p - q).abs().max().item(), 1e-7)


class ShardLayoutTest(unittest.TestCase):
    """The HF shard writer, on the built-in architecture's tensors."""

    def test_shards_and_index(self):
        d = tempfile.mkdtemp()
        m, _ = builtin.load(make_checkpoint(d, tied=False, seed=5))
        ts = [(n, "F32", list(p.shape), p.detach().numpy()) for n, p in m.named_layout_params()]
        total = sum(x[3].nbytes for x in ts)
        out = os.path.join(d, "hf")
        index = stfile.write_shards(out, ts, max_shard_bytes=total // 3)
        self.assertEqual(index["metadata"]["total_size"], total)
        files = sorted(set(index["weight_map"].values()))
        self.assertGreaterEqual(len(files), 3)
        for i, f in enumerate(files):
            self.assertEqual(f, "model-%05d-of-%05d.safetensors" % (i + 1, len(files)))
        seen = {}
        for f in files:
            tensors, meta = stfile.read(os.path.join(out, f))
            self.assertEqual(meta.get("format"), "pt")
            size = sum(t[2].nbytes for t in tensors.values())
            self.assertTrue(size <= total // 3 or len(tensors) == 1, (f, size))
            for n, t in tensors.items():
                self.assertNotIn(n, seen)
                self.assertEqual(index["weight_map"][n], f)
                seen[n] = t[2]
        self.assertEqual(sorted(seen), sorted(n for n, *_ in ts))
        for n, _, _, arr in ts:
            np.testing.assert_array_equal(seen[n], arr)
        import json
        with open(os.path.join(out, "model.safetensors.index.json")) as fh:
            self.assertEqual(json.load(fh), index)


class HFSaveTest(unittest.TestCase):
    """hf.HFModel.save without transformers: a stand-in module with a bf16
    config. The engines get bf16 shards; a checkpoint (master=True) keeps
    the fp32 master weights exactly."""

    def model(self):
        from torchworker import hf

        class Config:
            torch_dtype = "bfloat16"
            tie_word_embeddings = False

            def save_pretrained(self, d):
                with open(os.path.join(d, "config.json"), "w") as fh:
                    fh.write("{}")

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(3, 2)
                self.config = Config()
                self.generation_config = None

        m = hf.HFModel.__new__(hf.HFModel)
        m.model, m.tok = Net(), None
        with torch.no_grad():
            m.model.lin.weight.fill_(1 + 2 ** -12)  # not a bf16 number
        return m

    def saved(self, master):
        d = tempfile.mkdtemp()
        self.model().save(d, master=master)
        tensors, _ = stfile.read(os.path.join(d, "model-00001-of-00001.safetensors"))
        self.assertTrue(os.path.isfile(os.path.join(d, "config.json")))
        return tensors["lin.weight"]

    def test_serving_weights_are_bf16(self):
        dt, _, _ = self.saved(False)
        self.assertEqual(dt, "BF16")

    def test_master_weights_are_exact(self):
        dt, shape, arr = self.saved(True)
        self.assertEqual((dt, list(shape)), ("F32", [2, 3]))
        np.testing.assert_array_equal(np.array(arr), np.full((2, 3), 1 + 2 ** -12, dtype=np.float32))


class HFTokenizeTest(unittest.TestCase):
    """hf.HFModel.tokenize without transformers: a stand-in tokenizer that
    records the chat messages. The system prompt is the first message when
    given; none otherwise; add_generation_prompt always."""

    def test_system_prompt_in_the_chat_template(self):
        from torchworker import hf

        seen = []

        class Tok:
            chat_template = "stand-in"

            def apply_chat_template(self, msgs, add_generation_prompt, tokenize):
                seen.append((msgs, add_generation_prompt, tokenize))
                return list(range(len(msgs)))

        m = hf.HFModel.__new__(hf.HFModel)
        m.tok = Tok()
        self.assertEqual(m.tokenize("q", "think first"), [0, 1])
        self.assertEqual(m.tokenize("q"), [0])
        self.assertEqual(seen[0], ([{"role": "system", "content": "think first"}, {"role": "user", "content": "q"}], True, True))
        self.assertEqual(seen[1], ([{"role": "user", "content": "q"}], True, True))


if __name__ == "__main__":
    unittest.main()
