"""Per-token log-probs and entropies of softmax(z/T), z = h W^T, in fp32,
chunked over tokens so that the full fp32 [tokens x vocab] tensor never
exists, not in the forward and not in the backward (which recomputes each
chunk's logits instead of saving them).

For p = softmax(s), s = z/T, target y:
  logp = s_y - lse(s),  H = lse(s) - sum_v p_v s_v
  dlogp/ds = onehot(y) - p,  dH/ds = -p (log p + H),  d/dz = (d/ds) / T
which is policy/forward.go's Backward.
"""

import torch


def _chunk_logits(h, w, temp):
    # fp32 logits of one chunk; with fp32 h and w this is exact fp32, with
    # bf16 weights the product is upcast before the softmax.
    return torch.matmul(h, w.t()).float() / temp


class ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, temp, chunk):
        M = h.shape[0]
        logp = torch.empty(M, dtype=torch.float32, device=h.device)
        ent = torch.empty(M, dtype=torch.float32, device=h.device)
        lse_all = torch.empty(M, dtype=torch.float32, device=h.device)
        for lo in range(0, M, chunk):
            hi = min(M, lo + chunk)
            s = _chunk_logits(h[lo:hi], w, temp)
            lse = torch.logsumexp(s, dim=-1)
            p = torch.exp(s - lse[:, None])
            logp[lo:hi] = s.gather(1, targets[lo:hi, None])[:, 0] - lse
            ent[lo:hi] = lse - (p * s).sum(-1)
            lse_all[lo:hi] = lse
            del s, p
        ctx.save_for_backward(h, w, targets, lse_all, ent)
        ctx.temp, ctx.chunk = temp, chunk
        return logp, ent

    @staticmethod
    def backward(ctx, glogp, gent):
        h, w, targets, lse_all, ent = ctx.saved_tensors
        temp, chunk = ctx.temp, ctx.chunk
        M = h.shape[0]
        # The backward runs outside autocast: under bf16 autocast h is bf16
        # while w (the fp32 master weight) is not; recompute in h's dtype,
        # as the forward's autocast matmul did.
        wc = w if w.dtype == h.dtype else w.to(h.dtype)
        dh = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        if glogp is None:
            glogp = torch.zeros(M, dtype=torch.float32, device=h.device)
        if gent is None:
            gent = torch.zeros(M, dtype=torch.float32, device=h.device)
        for lo in range(0, M, chunk):
            hi = min(M, lo + chunk)
            s = _chunk_logits(h[lo:hi], wc, temp)
            logp_all = s - lse_all[lo:hi, None]
            p = torch.exp(logp_all)
            gl, ge = glogp[lo:hi, None], gent[lo:hi, None]
            ds = -gl * p - ge * p * (logp_all + ent[lo:hi, None])
            ds.scatter_add_(1, targets[lo:hi, None], gl)
            dz = (ds / temp).to(h.dtype)
            if dh is not None:
                dh[lo:hi] = dz @ wc
            if dw is not None:
                dw += dz.float().t() @ h[lo:hi].float()
            del s, logp_all, p, ds, dz
        if dw is not None:
            dw = dw.to(w.dtype)
        return dh, dw, None, None, None


def logprobs_entropies(h, w, targets, temp, chunk=1024):
    """h (M, C) hidden states of the predicting rows, w (V, C) the output
    projection, targets (M) int64; returns fp32 (logp (M), ent (M))."""
    if not temp > 0:
        raise ValueError("temperature %r must be > 0" % (temp,))
    return ChunkedLogProbs.apply(h, w, targets, float(temp), int(chunk))
