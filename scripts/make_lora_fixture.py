#!/usr/bin/env python3
"""Writes the LoRA fixtures with peft: tests/fixtures/lora_gpt2/ and lora_llama/ hold peft's
adapter_model.safetensors and adapter_config.json, for the tiny GPT-2 and untied Llama fixtures
as bases, and lora_{gpt2,llama}.json the logits, loss, every adapter gradient and the losses of
5 AdamW steps over the adapters alone, on one batch.

GPT-2: rank 3, alpha 8, targets c_attn and c_proj (the attention's and the MLP's), Conv1D
layers with fan_in_fan_out. Llama: rank 5, alpha 16, all-linear. peft starts B at zero, which
would leave A without a gradient, so both factors get random values before saving.

Run from the repo root: python3 scripts/make_lora_fixture.py (needs torch, transformers, peft).
"""
import json
import os
import sys

import peft
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from make_gpt2_fixture import B, T, LR, WD  # the GPT-2 fixture's batch and AdamW settings
from fixture_common import step_losses

STEPS = 5


def key(name):
    """A parameter's name as peft saves it (no adapter name)."""
    return name.replace(".default", "")


def make(base, name, targets, rank, alpha, seed):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(f"tests/fixtures/{base}", attn_implementation="eager",
                                                 torch_dtype=torch.float32)
    gpt2 = model.config.model_type == "gpt2"
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                     fan_in_fan_out=gpt2)
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn_like(p))
    model.train()
    model.save_pretrained(f"tests/fixtures/{name}")
    os.remove(f"tests/fixtures/{name}/README.md")  # peft's model card

    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (B, T + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = model(x).logits
    loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = {key(n): p.grad.flatten().tolist() for n, p in trainable}
    opt = torch.optim.AdamW([p for _, p in trainable], lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=WD, foreach=False)
    losses = step_losses(model, opt, x, y, vocab, STEPS)
    out = {
        "generator": "scripts/make_lora_fixture.py", "torch": torch.__version__, "peft": peft.__version__,
        "B": B, "T": T, "lr": LR, "weight_decay": WD, "rank": rank, "alpha": alpha,
        "modules": targets if isinstance(targets, list) else [targets],
        "inputs": x.flatten().tolist(), "targets": y.flatten().tolist(),
        "logits": logits.detach().flatten().tolist(), "loss": loss.item(), "grads": grads, "losses": losses,
    }
    with open(f"tests/fixtures/{name}.json", "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    make("gpt2_tiny", "lora_gpt2", ["c_attn", "c_proj"], 3, 8, seed=3)
    make("llama_tiny_untied", "lora_llama", "all-linear", 5, 16, seed=4)
