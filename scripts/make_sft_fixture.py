#!/usr/bin/env python3
"""Writes tests/fixtures/sft_golden.json, the references of supervised fine-tuning:

- masked: the tiny GPT-2 of tests/fixtures/gpt2_tiny on a batch of 4 x 11 whose labels are
  -100 outside each row's "completion" (one row has none), with PyTorch's loss
  (F.cross_entropy, ignore_index=-100: the mean over the counted labels) and every gradient.
- chat: SmolLM2-135M-Instruct's chat template (from its GGUF, scripts/fetch_smollm2.sh) and
  transformers' apply_chat_template of a few conversations: the text, and its token ids.

Run from the repo root: python3 scripts/make_sft_fixture.py (needs torch, transformers and
gguf; the tests don't).
"""
import json
import os
import subprocess

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GPT2LMHeadModel

B, T = 4, 11
# Per row: the first target position that counts (None: no label counts).
COUNT_FROM = [3, 7, None, 0]
CONVERSATIONS = [
    ([{"role": "user", "content": "Reverse the word: lamp"}, {"role": "assistant", "content": "pmal"}], False),
    ([{"role": "system", "content": "You answer in one word."},
      {"role": "user", "content": "Capital of Italy?"}, {"role": "assistant", "content": "Rome"},
      {"role": "user", "content": "And of Spain?"}, {"role": "assistant", "content": "Madrid\n(It is.)"}], False),
    ([{"role": "user", "content": "What is 12 + 30?"}], True),
]


def masked():
    model = GPT2LMHeadModel.from_pretrained("tests/fixtures/gpt2_tiny", attn_implementation="eager")
    model.train()
    v = model.config.vocab_size
    g = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, v, (B, T + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:].clone()
    for r, c in enumerate(COUNT_FROM):
        if c is None:
            y[r, :] = -100
        else:
            y[r, :c] = -100
    logits = model(x).logits
    loss = F.cross_entropy(logits.reshape(-1, v), y.reshape(-1), ignore_index=-100)
    loss.backward()
    return {
        "B": B, "T": T,
        "inputs": x.flatten().tolist(), "targets": y.flatten().tolist(),
        "loss": loss.item(),
        "grads": {name.removeprefix("transformer."): p.grad.flatten().tolist() for name, p in model.named_parameters()},
    }


def chat():
    path = subprocess.check_output(["bash", "scripts/fetch_smollm2.sh"], text=True).strip()
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    cases = []
    for messages, gen in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        cases.append({"messages": messages, "add_generation_prompt": gen, "text": text, "ids": list(ids)})
    return {"template": tok.chat_template, "eos_token": tok.eos_token, "cases": cases}


def main():
    torch.manual_seed(0)
    import transformers
    out = {"generator": "scripts/make_sft_fixture.py", "torch": torch.__version__,
           "transformers": transformers.__version__, "masked": masked(), "chat": chat()}
    with open("tests/fixtures/sft_golden.json", "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
