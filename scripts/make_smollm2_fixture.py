#!/usr/bin/env python3
"""Writes tests/fixtures/smollm2_greedy.json: transformers' greedy continuations (16 tokens, in
float32, on the weights it dequantizes from the Q4_1 GGUF) of fixed prompts for
SmolLM2-135M-Instruct, with the prompt's token ids from its tokenizer. The GGUF comes from
scripts/fetch_smollm2.sh. Needs torch, transformers and gguf; the tests don't.
"""
import json
import os
import subprocess

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["The capital of France is", "Once upon a time, there were 3 little pigs who",
           "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"]
NEW = 16


def main():
    path = subprocess.check_output(["bash", "scripts/fetch_smollm2.sh"], text=True).strip()
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    cases = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=2)
        cases.append({"prompt": p, "prompt_ids": ids[0].tolist(), "greedy": out[0, ids.shape[1]:].tolist(),
                      "text": tok.decode(out[0, ids.shape[1]:])})
    with open("tests/fixtures/smollm2_greedy.json", "w") as fh:
        json.dump({"generator": "scripts/make_smollm2_fixture.py", "torch": torch.__version__, "cases": cases}, fh,
                  indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
