"""Benchmark: `wgtrain prepare --tokenizer gpt2` on the bundled corpus against HF tokenizers'
Python package encoding the same text with the same GPT-2 tokenizer, in one run.

wgtrain is timed as the whole command (process start, GPT-2 tables, reading, cleaning,
MinHash dedup, tokenizing, writing); tokenizers is timed on `encode_batch` alone, its
tokenizer already loaded and the text already in memory. Both use every core. Each side runs
--repeat times, interleaved, and the median is reported.

    pip install tokenizers      # 0.23.3 was used
    cargo build --release
    python scripts/bench_prepare.py [--repeat 5] [--json]
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/wgtrain"))
    args = ap.parse_args()

    import tokenizers

    corpus = os.path.join(ROOT, "data/shakespeare")
    # What prepare reads from a directory: its .txt files (the 42 plays, not SOURCE.md).
    files = sorted(glob.glob(os.path.join(corpus, "*.txt")))
    texts = [open(f, encoding="utf-8").read() for f in files]
    nbytes = sum(os.path.getsize(f) for f in files)

    ours, theirs, stats = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        tok = None
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([args.bin, "prepare", "--input", corpus, "--out", out, "--tokenizer", "gpt2"],
                           check=True, stdout=subprocess.DEVNULL)
            ours.append(time.perf_counter() - t0)
            with open(os.path.join(out, "stats.json")) as f:
                stats = json.load(f)
            assert stats["bytes_in"] == nbytes, (stats["bytes_in"], nbytes)
            if tok is None:
                # The tokenizer.json that prepare wrote: the same GPT-2 BPE on both sides.
                tok = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
            t0 = time.perf_counter()
            enc = tok.encode_batch(texts, add_special_tokens=False)
            theirs.append(time.perf_counter() - t0)
        hf_tokens = sum(len(e.ids) for e in enc)

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    rows = [
        {"name": "wgtrain_prepare_gpt2", "mb": nbytes / 1e6, "seconds": ours_s, "mb_per_s": nbytes / 1e6 / ours_s,
         "tokens": stats["train_tokens"] + stats["val_tokens"], "documents": stats["documents_out"],
         "internal_seconds": stats["seconds"]},
        {"name": f"hf_tokenizers_{tokenizers.__version__}_encode_batch", "mb": nbytes / 1e6, "seconds": theirs_s,
         "mb_per_s": nbytes / 1e6 / theirs_s, "tokens": hf_tokens},
    ]
    ratio = theirs_s / ours_s
    if args.json:
        for r in rows:
            print(json.dumps(r))
        print(json.dumps({"ratio_wgtrain_over_hf": ratio, "cores": os.cpu_count(), "repeat": args.repeat}))
        return
    print(f"corpus: {len(files)} files, {nbytes / 1e6:.2f} MB; {os.cpu_count()} cores; median of {args.repeat}")
    for r in rows:
        print(f"{r['name']:<40} {r['seconds']:8.3f} s {r['mb_per_s']:8.2f} MB/s {r['tokens']:>10} tokens")
    print(f"ratio (wgtrain MB/s / tokenizers MB/s): {ratio:.2f}")
    print("(wgtrain writes one <|endoftext|> per document, hence its extra tokens)")


if __name__ == "__main__":
    main()
