#!/usr/bin/env python3
"""Writes tests/fixtures/llama_tiny_{untied,tied}/: two tiny Llamas (transformers'
LlamaForCausalLM) at awkward sizes, and llama_tiny_{untied,tied}.json with their logits, loss,
every parameter gradient and the losses of 10 AdamW steps on one batch, as the GPT-2 fixture.

Sizes: vocab 67 (not a multiple of 64), T 11 (not a power of two), head size 6 (even, as RoPE
needs, not a multiple of 4), 3 query heads sharing 1 KV head (n_head = 3·n_kv_head), hidden
18, MLP 29, 2 layers, RoPE θ 1000. One model has its own lm_head, the other reads
embed_tokens. Run from the repo root: python3 scripts/make_llama_fixture.py (needs torch and
transformers; the tests don't).
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from make_gpt2_fixture import golden  # the same batch shape, steps and AdamW settings
from fixture_common import perturb_vectors


def make(tied, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=67, hidden_size=18, intermediate_size=29, num_hidden_layers=2,
                         num_attention_heads=3, num_key_value_heads=1, head_dim=6,
                         max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=1000.0,
                         tie_word_embeddings=tied, attention_bias=False, mlp_bias=False,
                         bos_token_id=0, eos_token_id=0, pad_token_id=None)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    model.train()
    perturb_vectors(model)
    name = "llama_tiny_" + ("tied" if tied else "untied")
    out_dir = os.path.join("tests/fixtures", name)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if os.path.exists(os.path.join(out_dir, "generation_config.json")):
        os.remove(os.path.join(out_dir, "generation_config.json"))

    out = {"generator": "scripts/make_llama_fixture.py", **golden(model, config.vocab_size)}
    with open(out_dir + ".json", "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    make(tied=False, seed=1)
    make(tied=True, seed=2)
