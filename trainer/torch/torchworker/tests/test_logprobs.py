import unittest

import torch

from torchworker.logprobs import logprobs_entropies


def naive(h, w, y, temp):
    s = (h @ w.t()) / temp
    logp_all = torch.log_softmax(s, -1)
    p = logp_all.exp()
    return logp_all.gather(1, y[:, None])[:, 0], -(p * logp_all).sum(-1)


class ChunkedLogProbsTest(unittest.TestCase):
    """Chunked fp32 log-probs/entropies of softmax(z/T) against the naive
    full-matrix computation: values within 1e-5, gradients of a weighted sum
    within 1e-5 relative to the largest (float32), and float64 gradcheck of the custom backward."""

    def test_values_and_grads(self):
        g = torch.Generator().manual_seed(1)
        for temp in (1.0, 0.5, 1.7):
            for chunk in (1, 3, 7, 1000):
                h = (torch.randn(11, 8, generator=g) * 0.5).requires_grad_()
                w = (torch.randn(13, 8, generator=g) * 0.5).requires_grad_()
                y = torch.randint(0, 13, (11,), generator=g)
                a, b = torch.randn(11, generator=g), torch.randn(11, generator=g)
                lp, en = logprobs_entropies(h, w, y, temp, chunk)
                (lp * a + en * b).sum().backward()
                dh, dw = h.grad.clone(), w.grad.clone()
                h.grad = w.grad = None
                rlp, ren = naive(h, w, y, temp)
                (rlp * a + ren * b).sum().backward()
                self.assertLess((lp - rlp).abs().max().item(), 1e-5, (temp, chunk))
                self.assertLess((en - ren).abs().max().item(), 1e-5, (temp, chunk))
                self.assertLess((dh - h.grad).abs().max().item(), 1e-5 * h.grad.abs().max().item(), (temp, chunk))
                self.assertLess((dw - w.grad).abs().max().item(), 1e-5 * w.grad.abs().max().item(), (temp, chunk))

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(2)
        h = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 6, (5,), generator=g)

        def f(h, w):
            # the Function computes in fp32 by design; gradcheck needs float64
            # maths, so compare against finite differences loosely
            lp, en = logprobs_entropies(h, w, y, 0.6, 2)
            return lp, en

        torch.autograd.gradcheck(lambda h, w: tuple(t.double() for t in f(h.float(), w.float())), (h, w), eps=1e-2, atol=5e-3, rtol=5e-2)

    def test_refuses_bad_temperature(self):
        with self.assertRaises(ValueError):
            logprobs_entropies(torch.zeros(1, 2), torch.zeros(3, 2), torch.zeros(1, dtype=torch.long), 0.0)


if __name__ == "__main__":
    unittest.main()
