#!/usr/bin/env python3
"""Writes tests/fixtures/gpt2_tiny/: a tiny GPT-2 (transformers' GPT2LMHeadModel) at awkward
sizes, and gpt2_tiny.json with its logits, loss, every parameter gradient and the losses of
10 AdamW steps on one batch, like llm.c's test_gpt2.

Sizes: vocab 67 (not a multiple of 64), T 11 (not a power of two), head size 5 (not a
multiple of 4), 2 layers. Run from the repo root: python3 scripts/make_gpt2_fixture.py
(needs torch and transformers; the tests don't).
"""
import json
import os

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel
from fixture_common import perturb_vectors, step_losses

OUT = "tests/fixtures/gpt2_tiny"
B, T, STEPS, LR, WD = 2, 11, 10, 1e-2, 0.1


def golden(model, vocab_size, hf_name=lambda name: name):
    """The fixture's numbers for `model` (in train mode) on one random batch of B x T: its logits,
    loss and every gradient (keyed by `hf_name` of the parameter's name), and the losses of STEPS
    AdamW steps (decay on matrices only), each before its update."""
    tokens = torch.randint(0, vocab_size, (B, T + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = model(x).logits
    loss = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
    loss.backward()
    grads = {hf_name(name): p.grad.flatten().tolist() for name, p in model.named_parameters()}

    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    losses = step_losses(model, opt, x, y, vocab_size, STEPS)
    return {
        "torch": torch.__version__,
        "B": B, "T": T, "lr": LR, "weight_decay": WD,
        "inputs": x.flatten().tolist(), "targets": y.flatten().tolist(),
        "logits": logits.detach().flatten().tolist(),
        "loss": loss.item(),
        "grads": grads,
        "losses": losses,
    }


def main():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=67, n_positions=16, n_embd=15, n_layer=2, n_head=3,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    model.train()
    perturb_vectors(model)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(OUT, extra)):
            os.remove(os.path.join(OUT, extra))

    out = {"generator": "scripts/make_gpt2_fixture.py",
           **golden(model, config.vocab_size, lambda name: name.removeprefix("transformer."))}
    with open(OUT + ".json", "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
