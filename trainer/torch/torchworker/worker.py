"""The worker's request handlers, independent of the transport.

Worker.handle(msg) -> reply dict. The Go client (trainer/torch) is the only
caller; see protocol.py for the framing and README.md ("The PyTorch trainer
worker") for the operations. Sequences arrive packed: "tokens" (int32, all
sequences end to end), "lens" and "prompt_lens" (int32, one per sequence);
per-response-token results go back packed the same way ("logps", "ents",
float32, sequence after sequence).
"""

import contextlib
import json
import os

import numpy as np
import torch

from . import PROTOCOL_VERSION, builtin, hf, logprobs, stfile
from .optim import ClipSkipAdamW
from .protocol import ProtocolError, f32, f32_bytes, i32, i32_bytes


class RequestError(Exception):
    """A request the worker refuses; the worker stays usable."""


class Comm:
    """Single process: every rank-aware hook is the identity."""

    rank, world = 0, 1

    def shard(self, n):
        return 0, n

    def gather_rows(self, parts):
        return parts

    def reduce_grads(self, params):
        pass

    def sum_scalar(self, x):
        return x


def unpack_seqs(msg, vocab, context):
    lens = i32(msg.get("lens"))
    plens = i32(msg.get("prompt_lens"), lens.size)
    toks = i32(msg.get("tokens"), int(lens.sum()))
    seqs, off = [], 0
    for i, (n, p) in enumerate(zip(lens.tolist(), plens.tolist())):
        s = toks[off : off + n]
        off += n
        if p < 1 or p > n:
            raise RequestError("sequence %d: prompt length %d outside [1, %d]" % (i, p, n))
        if n > context:
            raise RequestError("sequence %d: %d tokens exceed the context %d" % (i, n, context))
        if s.size and (s.min() < 0 or s.max() >= vocab):
            raise RequestError("sequence %d: token outside [0, %d)" % (i, vocab))
        seqs.append((s, p))
    return seqs


def pack_rows(rows):
    return np.concatenate([r for r in rows]) if rows else np.zeros(0, dtype=np.float32)


class Worker:
    def __init__(self, model_path, device="cpu", micro_batch_tokens=0, logit_chunk=1024, checkpointing=False,
                 comm=None, fsdp=False, autocast=None):
        """autocast: bf16 autocast of the forward (default: on CUDA). Weights
        and optimiser state stay fp32 (master weights): an update of lr 1e-6
        is below bf16's resolution."""
        self.device = torch.device(device)
        self.comm = comm or Comm()
        self.micro_batch_tokens = int(micro_batch_tokens)
        self.logit_chunk = int(logit_chunk)
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)
        if not os.path.exists(model_path):
            raise FileNotFoundError("model %s does not exist" % model_path)
        # Reported in hello, so a learner can check what a worker it did
        # not start (torchrun) holds.
        self.model_path = os.path.realpath(model_path)
        if os.path.isdir(model_path) and os.path.isfile(os.path.join(model_path, builtin.FORMAT_FILE)):
            model_path = os.path.join(model_path, builtin.FORMAT_FILE)
        if os.path.isfile(model_path):
            self.arch = "builtin"
            self.model, adam = builtin.load(model_path)
            self.model.checkpointing = checkpointing
            self.model.to(self.device)
            self.vocab, self.context = self.model.cfg["vocab"], self.model.cfg["context"]
        else:
            self.arch = "hf"
            self.model = hf.HFModel(model_path, self.device, torch.float32, checkpointing)
            self.vocab, self.context = self.model.vocab, self.model.context
        if fsdp:
            from . import dist
            dist.shard_model(self.model)
        self.opt = None
        self.adam_cfg = None
        self.pass_ = None  # (logp, ent) tensors of the last Forward, awaiting Backward

    # -- model maths --------------------------------------------------------

    def _hidden(self, tokens, mask):
        if self.arch == "builtin":
            return self.model(tokens)
        return self.model.hidden(tokens, mask)

    def _run(self, seqs, temp):
        """Forward of seqs (one padded batch); returns fp32 logp, ent tensors
        (M) over the response tokens, sequence after sequence."""
        T = max(len(s) for s, _ in seqs)
        B = len(seqs)
        tokens = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        bidx, tidx, targets = [], [], []
        for b, (s, p) in enumerate(seqs):
            tokens[b, : len(s)] = torch.from_numpy(s)
            mask[b, : len(s)] = 1
            for t in range(p, len(s)):
                bidx.append(b)
                tidx.append(t - 1)
                targets.append(int(s[t]))
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with amp:
            h = self._hidden(tokens, mask)
            rows = h[torch.tensor(bidx, device=self.device), torch.tensor(tidx, device=self.device)]
            tgt = torch.tensor(targets, dtype=torch.long, device=self.device)
            return logprobs.logprobs_entropies(rows, self.model.out_weight(), tgt, temp, self.logit_chunk)

    def _batches(self, seqs):
        budget = self.micro_batch_tokens or 16384
        out, cur, n = [], [], 0
        for s in seqs:
            if cur and n + len(s[0]) > budget:
                out.append(cur)
                cur, n = [], 0
            cur.append(s)
            n += len(s[0])
        if cur:
            out.append(cur)
        return out

    def _score(self, seqs, temp):
        lo, hi = self.comm.shard(len(seqs))
        lps, ens = [], []
        with torch.no_grad():
            for mb in self._batches(seqs[lo:hi]):
                lp, en = self._run(mb, temp)
                lps.append(lp.cpu().numpy())
                ens.append(en.cpu().numpy())
        parts = self.comm.gather_rows((pack_rows(lps), pack_rows(ens)))
        return parts

    # -- handlers -----------------------------------------------------------

    def info(self):
        n = sum(p.numel() for _, p in self.model.named_layout_params())
        return {"backend": "torch", "arch": self.arch, "device": str(self.device), "params": n, "vocab": self.vocab,
                "context": self.context, "micro_batch_tokens": self.micro_batch_tokens,
                "model": self.model_path, "torch": torch.__version__, "world": self.comm.world}

    def op_hello(self, msg):
        v = msg.get("version")
        if v != PROTOCOL_VERSION:
            raise ProtocolError("protocol version mismatch: the learner speaks %r, this worker speaks %d" % (v, PROTOCOL_VERSION))
        adam = msg.get("adam")
        if adam is not None:
            need = ("lr", "beta1", "beta2", "eps", "weight_decay", "clip_norm", "skip_norm")
            missing = [k for k in need if k not in adam]
            if missing:
                raise RequestError("adam settings lack %s" % ", ".join(missing))
            self.adam_cfg = {k: float(adam[k]) for k in need}
            self.opt = ClipSkipAdamW(self.model.named_layout_params(), self.adam_cfg, fused=self.device.type == "cuda")
        out = {"version": PROTOCOL_VERSION}
        out.update(self.info())
        return out

    def _temp(self, msg):
        t = float(msg.get("temp", 0))
        if not t > 0 or t == float("inf"):
            raise RequestError("temperature %r must be finite and > 0" % t)
        return t

    def op_score(self, msg):
        temp = self._temp(msg)
        seqs = unpack_seqs(msg, self.vocab, self.context)
        lp, en = self._score(seqs, temp)
        return {"logps": f32_bytes(lp), "ents": f32_bytes(en)}

    def op_score_shared(self, msg):
        temp = self._temp(msg)
        prompt = i32(msg.get("prompt"))
        rl = i32(msg.get("resp_lens"))
        rt = i32(msg.get("resp_tokens"), int(rl.sum()))
        if prompt.size == 0:
            raise RequestError("shared prompt is empty (start it with BOS)")
        toks, lens, plens, off = [], [], [], 0
        for n in rl.tolist():
            if n < 1:
                raise RequestError("a response is empty (nothing to score)")
            toks.append(np.concatenate([prompt, rt[off : off + n]]))
            off += n
            lens.append(prompt.size + n)
            plens.append(prompt.size)
        m = {"tokens": i32_bytes(np.concatenate(toks)) if toks else b"", "lens": i32_bytes(lens), "prompt_lens": i32_bytes(plens)}
        seqs = unpack_seqs(m, self.vocab, self.context)
        lp, en = self._score(seqs, temp)
        return {"logps": f32_bytes(lp), "ents": f32_bytes(en)}

    def op_forward(self, msg):
        self.pass_ = None
        if self.opt is None:
            raise RequestError("forward with gradient needs the AdamW settings (send them in hello)")
        temp = self._temp(msg)
        seqs = unpack_seqs(msg, self.vocab, self.context)
        lo, hi = self.comm.shard(len(seqs))
        mine = seqs[lo:hi]
        if mine:
            lp, en = self._run(mine, temp)
            self.pass_ = (lp, en, sum(len(s) - p for s, p in mine), sum(len(s) - p for s, p in seqs[:lo]))
            out = (lp.detach().cpu().numpy(), en.detach().cpu().numpy())
        else:
            self.pass_ = (None, None, 0, 0)
            out = (np.zeros(0, np.float32), np.zeros(0, np.float32))
        self.pass_total = sum(len(s) - p for s, p in seqs)
        lp, en = self.comm.gather_rows(out)
        return {"logps": f32_bytes(lp), "ents": f32_bytes(en)}

    def op_backward(self, msg):
        if self.pass_ is None:
            raise RequestError("backward without a forward")
        lp, en, n, off = self.pass_
        self.pass_ = None
        total = self.pass_total
        dlp = f32(msg.get("dlogps"), total)
        dent = f32(msg.get("dents"), total) if msg.get("dents") is not None else None
        if lp is None:
            return {}
        gl = torch.from_numpy(np.array(dlp[off : off + n])).to(self.device)
        loss = (lp * gl).sum()
        if dent is not None:
            ge = torch.from_numpy(np.array(dent[off : off + n])).to(self.device)
            loss = loss + (en * ge).sum()
        loss.backward()
        return {}

    def op_step(self, msg):
        self.pass_ = None
        if self.opt is None:
            raise RequestError("step needs the AdamW settings (send them in hello)")
        self.comm.reduce_grads(self.opt.params)
        norm = self.opt.grad_norm(self.comm.sum_scalar(self.opt.local_sq()))
        return self.opt.step(norm)

    def _need_builtin(self, what):
        if self.arch != "builtin":
            raise RequestError("%s needs the built-in architecture (this worker holds an HF model)" % what)

    def op_gradients(self, msg):
        self._need_builtin("gradients")
        parts = []
        for _, p in self.model.named_layout_params():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            parts.append(g.detach().float().cpu().reshape(-1).numpy())
        return {"grads": f32_bytes(np.concatenate(parts))}

    def _adam_export(self):
        if self.opt is None:
            return None
        m, v, t = self.opt.state()
        cfg = {"lr": self.adam_cfg["lr"], "beta1": self.adam_cfg["beta1"], "beta2": self.adam_cfg["beta2"],
               "eps": self.adam_cfg["eps"], "weight_decay": self.adam_cfg["weight_decay"],
               "clip_norm": self.adam_cfg["clip_norm"], "skip_norm": self.adam_cfg["skip_norm"]}
        return {"m": {n: x.numpy() for n, x in m.items()}, "v": {n: x.numpy() for n, x in v.items()}, "t": t, "config": cfg}

    def op_export(self, msg):
        """The built-in checkpoint bytes (weights, and the optimiser when
        "opt" is true)."""
        self._need_builtin("export")
        return {"checkpoint": builtin.encode_checkpoint(self.model, self._adam_export() if msg.get("opt") else None)}

    def op_restore(self, msg):
        self._need_builtin("restore")
        path = msg.get("path")
        if not path or not os.path.isfile(path):
            raise RequestError("restore: checkpoint file %r does not exist" % path)
        m, adam = builtin.load(path)
        if m.cfg != self.model.cfg:
            raise RequestError("restore: checkpoint model %s differs from the trained one %s" % (m.cfg, self.model.cfg))
        with torch.no_grad():
            for n, p in self.model.named_layout_params():
                p.copy_(m.p(n).to(p.device))
        self.pass_ = None
        if self.opt is not None:
            self.opt.zero_grad()
            self.opt.reset()
            if adam is not None and msg.get("opt"):
                self.opt.load_state(adam["m"], adam["v"], adam["t"])
        return {}

    def op_save_weights(self, msg):
        """"master": true keeps the fp32 master weights (a checkpoint to
        resume from); otherwise an HF model's shards are in its own dtype
        (bf16: what the engines load)."""
        d = msg.get("dir")
        if not d:
            raise RequestError("save_weights needs a directory")
        os.makedirs(d, exist_ok=True)
        if self.arch == "builtin":
            stfile.write_atomic(os.path.join(d, builtin.FORMAT_FILE), builtin.encode_checkpoint(self.model))
        else:
            self.model.save(d, max_shard_bytes=int(msg.get("max_shard_bytes") or (5 << 30)), master=bool(msg.get("master")))
        return {}

    def op_save_optimizer(self, msg):
        if self.opt is None:
            raise RequestError("no optimiser (send the AdamW settings in hello)")
        path = msg.get("path")
        a = self._adam_export()
        if self.arch == "builtin":
            # The built-in format keeps the weights beside the moments, as
            # trainer.Builtin does.
            stfile.write_atomic(path, builtin.encode_checkpoint(self.model, a))
            return {}
        ts = []
        for n, x in a["m"].items():
            ts.append(("adamw.m." + n, "F32", list(x.shape), x))
        for n, x in a["v"].items():
            ts.append(("adamw.v." + n, "F32", list(x.shape), x))
        stfile.write_atomic(path, stfile.encode(ts, {builtin.META_ADAMW_T: str(a["t"]), builtin.META_ADAMW: json.dumps(a["config"])}))
        return {}

    def op_load_optimizer(self, msg):
        if self.opt is None:
            raise RequestError("no optimiser (send the AdamW settings in hello)")
        path = msg.get("path")
        if not path or not os.path.isfile(path):
            raise RequestError("optimiser state file %r does not exist" % path)
        tensors, meta = stfile.read(path)
        if builtin.META_ADAMW_T not in meta:
            raise RequestError("%s holds no optimiser state" % path)
        m = {n[len("adamw.m."):]: np.array(t[2]) for n, t in tensors.items() if n.startswith("adamw.m.")}
        v = {n[len("adamw.v."):]: np.array(t[2]) for n, t in tensors.items() if n.startswith("adamw.v.")}
        try:
            self.opt.load_state(m, v, int(meta[builtin.META_ADAMW_T]))
        except (ValueError, RuntimeError) as e:
            raise RequestError("%s: %s" % (path, e))
        return {}

    def op_tokenize(self, msg):
        """"systems" (optional, one per text, "" = none): the system prompt
        an HF chat template puts first; the built-in format has none (as
        task.EncodePrompt) and ignores it."""
        texts = msg.get("texts") or []
        systems = msg.get("systems")
        if systems is not None and len(systems) != len(texts):
            raise RequestError("%d system prompts for %d texts" % (len(systems), len(texts)))
        out, lens = [], []
        for i, text in enumerate(texts):
            try:
                if self.arch == "builtin" or not systems:
                    ids = self.model.tokenize(text)
                else:
                    ids = self.model.tokenize(text, systems[i] or "")
            except ValueError as e:
                raise RequestError("prompt %d: %s" % (i, e))
            out.extend(ids)
            lens.append(len(ids))
        return {"tokens": i32_bytes(out), "lens": i32_bytes(lens)}

    def op_bench(self, msg):
        """Times forward (with gradient), backward with the given upstream
        gradients and step, repeats times, inside the worker: the same
        handlers as the socket path without framing, msgpack or transfer.
        Returns the seconds of each repeat."""
        import time

        fwd = {k: msg[k] for k in ("tokens", "lens", "prompt_lens", "temp")}
        bwd = {"dlogps": msg.get("dlogps"), "dents": msg.get("dents")}
        out = []
        for _ in range(int(msg.get("repeats", 1))):
            t0 = time.perf_counter()
            for op, m in (("forward", fwd), ("backward", bwd), ("step", {})):
                r = self.handle(dict(m, op=op))
                if not r["ok"]:
                    raise RequestError("bench %s: %s" % (op, r["error"]))
            out.append(time.perf_counter() - t0)
        return {"seconds": out}

    def op_ping(self, msg):
        return {}

    OPS = ("hello", "ping", "bench", "score", "score_shared", "forward", "backward", "step", "gradients", "export", "restore",
           "save_weights", "save_optimizer", "load_optimizer", "tokenize")

    def handle(self, msg):
        """One request -> one reply. ProtocolError propagates (the caller
        closes the connection); any other failure is an error reply."""
        op = msg.get("op")
        if op not in self.OPS:
            return {"ok": False, "error": "unknown op %r" % (op,)}
        try:
            out = getattr(self, "op_" + op)(msg)
        except ProtocolError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one request is its error reply
            return {"ok": False, "error": "%s: %s" % (op, e)}
        out = dict(out)
        out["ok"] = True
        return out
