"""AdamW with policy.AdamW's semantics (policy/adamw.go, EXGRPO.md E14):

  norm = sqrt(sum g^2) over every parameter (float64), before clipping;
  skip (zero the gradients, move nothing, do not count the step) when the
  norm is non-finite or above skip_norm (> 0);
  otherwise g *= clip_norm / norm when clip_norm > 0 and norm > clip_norm,
  t += 1, m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
  p = p (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),
  with decoupled weight decay on matrices (rank >= 2) only;
  the gradients are zeroed after every step.

The update is torch.optim.AdamW's (the same formula), fused on CUDA; the norm,
the clip and the skip are done here because torch's clip_grad_norm_ divides by
norm + 1e-6 and never skips.
"""

import math

import torch


class ClipSkipAdamW:
    def __init__(self, named_params, cfg, fused=False):
        """named_params: [(name, Parameter)] in a fixed order; cfg: dict with
        lr, beta1, beta2, eps, weight_decay, clip_norm, skip_norm."""
        self.cfg = dict(cfg)
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        kw = dict(lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        if fused:
            kw["fused"] = True
        else:
            kw["foreach"] = False
        groups = [g for g in ({"params": decay, "weight_decay": cfg["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        self.opt = torch.optim.AdamW(groups, **kw)
        self.fused = fused
        self.t = 0

    def grad_norm(self, local_sq=None):
        """Global L2 norm in float64. local_sq overrides the local sum of
        squares (distributed callers all-reduce it first)."""
        if local_sq is None:
            local_sq = self.local_sq()
        return math.sqrt(local_sq) if local_sq >= 0 else float("nan")

    def local_sq(self):
        ss = 0.0
        for p in self.params:
            if p.grad is not None:
                ss += float(p.grad.detach().double().pow(2).sum())
        return ss

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self, norm=None):
        """Returns {"grad_norm", "skipped", "lr"}; always zeroes the grads."""
        c = self.cfg
        if norm is None:
            norm = self.grad_norm()
        lr = c["lr"]
        info = {"grad_norm": norm, "skipped": False, "lr": lr}
        if math.isnan(norm) or math.isinf(norm) or (c["skip_norm"] > 0 and norm > c["skip_norm"]):
            info["skipped"] = True
            self.zero_grad()
            return info
        if c["clip_norm"] > 0 and norm > c["clip_norm"]:
            scale = c["clip_norm"] / norm
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # policy.AdamW moves every parameter (decay, moments)
        self.opt.step()
        self.t += 1
        self.zero_grad()
        return info

    # State in the layout of names: moments as float32 tensors, and t.
    def state(self):
        m, v = {}, {}
        for n, p in zip(self.names, self.params):
            st = self.opt.state.get(p, {})
            m[n] = st["exp_avg"].detach().float().cpu() if "exp_avg" in st else torch.zeros(p.shape)
            v[n] = st["exp_avg_sq"].detach().float().cpu() if "exp_avg_sq" in st else torch.zeros(p.shape)
        return m, v, self.t

    def load_state(self, m, v, t):
        for n, p in zip(self.names, self.params):
            if n not in m or n not in v:
                raise ValueError("optimiser state has no moments for %s" % n)
            mm = torch.as_tensor(m[n], dtype=torch.float32).reshape(p.shape)
            vv = torch.as_tensor(v[n], dtype=torch.float32).reshape(p.shape)
            st = self.opt.state[p]
            st["exp_avg"] = mm.to(device=p.device, dtype=p.dtype).clone()
            st["exp_avg_sq"] = vv.to(device=p.device, dtype=p.dtype).clone()
            dev = p.device if self.fused else "cpu"
            st["step"] = torch.tensor(float(t), dtype=torch.float32, device=dev)
        self.t = int(t)

    def reset(self):
        self.opt.state.clear()
        self.t = 0
