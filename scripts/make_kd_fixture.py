#!/usr/bin/env python3
"""Writes tests/fixtures/kd_golden.json: PyTorch's knowledge-distillation loss and gradient.

Per row: ce = F.cross_entropy(z, y), kd = T² · F.kl_div(log_softmax(z/T), log_softmax(u/T),
log_target=True) summed over the vocabulary, loss = (1 − W)·ce + W·kd (HF's distillation
recipe); the gradient is of the rows' mean loss with respect to the student's logits z.

Run from the repo root: python3 scripts/make_kd_fixture.py  (needs torch; the tests don't)
"""
import json

import torch
import torch.nn.functional as F

N, V = 7, 37
CASES = [(2.0, 0.5), (1.0, 0.0), (3.5, 0.9), (0.5, 1.0)]


def case(z0, u, y, t, w):
    z = z0.clone().requires_grad_(True)
    ce = F.cross_entropy(z, y, reduction="none")
    kl = F.kl_div(F.log_softmax(z / t, -1), F.log_softmax(u / t, -1), log_target=True, reduction="none").sum(-1)
    kd = t * t * kl
    loss = (1 - w) * ce + w * kd
    loss.mean().backward()
    rows = lambda x: [float(v) for v in x.detach().reshape(-1)]
    return {"temperature": t, "weight": w, "loss": rows(loss), "ce": rows(ce), "kd": rows(kd), "grad": rows(z.grad)}


def main():
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(N, V, generator=g, dtype=torch.float64) * 3).float().double()
    u = (torch.randn(N, V, generator=g, dtype=torch.float64) * 2).float().double()
    y = torch.randint(0, V, (N,), generator=g)
    out = {
        "n": N,
        "v": V,
        "student": [float(v) for v in z.reshape(-1)],
        "teacher": [float(v) for v in u.reshape(-1)],
        "targets": [int(v) for v in y],
        "cases": [case(z, u, y, t, w) for t, w in CASES],
        "torch": torch.__version__,
    }
    with open("tests/fixtures/kd_golden.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
