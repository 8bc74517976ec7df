#!/usr/bin/env python3
"""Writes tests/fixtures/optim_golden.json: PyTorch's results for a few optimizer steps.

AdamW and SGD are torch.optim's own (two param groups: weight decay on tensors of 2 or more
dimensions only). LAMB has no torch.optim class; it is written here in torch ops, following
optax.lamb (You et al. 2019). Clipping is torch.nn.utils.clip_grad_norm_.

Run from the repo root: python3 scripts/make_optim_fixtures.py  (needs torch; the tests don't)
"""
import json
import math

import torch

SHAPES = [
    ("wte.weight", (11, 4)),
    ("h.0.attn.c_attn.weight", (5, 7)),
    ("h.0.attn.c_attn.bias", (7,)),
    ("ln_f.weight", (3,)),
    ("one", (1,)),
]
LRS = [1e-2, 5e-3, 2e-3, 1e-2]


def groups(params, wd):
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def lamb_step(params, state, step, cfg, lr):
    b1, b2, eps, wd = cfg["beta1"], cfg["beta2"], cfg["eps"], cfg["weight_decay"]
    with torch.no_grad():
        for p in params:
            m, v = state.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p)))
            g = p.grad
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat = m / (1 - b1**step)
            v_hat = v / (1 - b2**step)
            u = m_hat / (v_hat.sqrt() + eps)
            if p.dim() >= 2:
                u = u + wd * p
            pn, un = p.norm(), u.norm()
            r = (pn / un) if (pn > 0 and un > 0) else torch.tensor(1.0)
            p.sub_(lr * r * u)


def run(kind, cfg, seed):
    torch.manual_seed(seed)
    params = [(0.5 * torch.randn(shape)).requires_grad_() for _, shape in SHAPES]
    case = {
        "optimizer": kind,
        "config": cfg,
        "lrs": LRS,
        "tensors": [
            {"name": n, "shape": list(s), "init": p.detach().flatten().tolist()} for (n, s), p in zip(SHAPES, params)
        ],
        "steps": [],
    }
    if kind == "adamw":
        opt = torch.optim.AdamW(groups(params, cfg["weight_decay"]), lr=LRS[0], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["eps"], foreach=False)
    elif kind == "sgd":
        opt = torch.optim.SGD(groups(params, cfg["weight_decay"]), lr=LRS[0], momentum=cfg["momentum"], foreach=False)
    state = {}
    for step, lr in enumerate(LRS, start=1):
        grads = [torch.randn(p.shape) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        clip = cfg["grad_clip"]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        if kind == "lamb":
            lamb_step(params, state, step, cfg, lr)
        else:
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
        case["steps"].append({
            "grads": [g.flatten().tolist() for g in grads],
            "grad_norm": float(norm),
            "params": [p.detach().flatten().tolist() for p in params],
        })
    return case


def main():
    base = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1, "momentum": 0.0, "grad_clip": 0.0}
    cases = []
    for clip in (0.0, 2.0):
        cases.append(run("adamw", dict(base, kind="adamw", grad_clip=clip), 1))
        cases.append(run("lamb", dict(base, kind="lamb", eps=1e-6, weight_decay=0.01, grad_clip=clip), 2))
        cases.append(run("sgd", dict(base, kind="sgd", momentum=0.9, weight_decay=0.01, grad_clip=clip), 3))
    out = {"generator": "scripts/make_optim_fixtures.py", "torch": torch.__version__, "cases": cases}
    with open("tests/fixtures/optim_golden.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
