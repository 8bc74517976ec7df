#!/usr/bin/env python3
"""Runs a GGUF file written by `wgtrain quantize` in llama.cpp (llama-cpp-python) and prints
its mean next-token loss over the first WINDOWS windows of T tokens of an llm.c token file,
the windows `wgtrain eval --batch-size B --seq-len T --batches N` reads (WINDOWS = B·N), so
the two losses compare directly. Also prints a greedy continuation of the first window.

  python3 scripts/llama_cpp_eval.py MODEL.gguf TOKENS.bin T WINDOWS

Needs `pip install llama-cpp-python numpy` (it builds llama.cpp from source: minutes).
"""
import sys

import numpy as np
from llama_cpp import Llama


def read_tokens(path):
    header = np.fromfile(path, dtype=np.int32, count=256)
    dtype = {20240520: np.uint16, 20240801: np.uint32}[int(header[0])]
    return np.fromfile(path, dtype=dtype, offset=1024)[: int(header[2])].astype(np.int64)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def main():
    path, tokens_path, t, windows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tokens = read_tokens(tokens_path)
    llm = Llama(model_path=path, n_ctx=t, logits_all=True, verbose=False, n_threads=2)
    losses = []
    for w in range(windows):
        x = tokens[w * t : w * t + t]
        y = tokens[w * t + 1 : w * t + t + 1]
        llm.reset()
        llm.eval([int(i) for i in x])
        logits = np.array(llm.scores[:t], dtype=np.float64)
        lp = log_softmax(logits)
        losses.append(-lp[np.arange(t), y].mean())
    print(f"llama.cpp loss {np.mean(losses):.4f} over {windows} windows of {t} tokens")
    llm.reset()
    first = [int(i) for i in tokens[: t // 2]]
    llm.eval(first)
    out = []
    for _ in range(t // 2):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    text = llm.detokenize(out).decode("utf-8", "replace")
    print(f"greedy continuation: {text!r}")


if __name__ == "__main__":
    main()
