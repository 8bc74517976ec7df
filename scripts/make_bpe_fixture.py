"""Writes tests/fixtures/gpt2_bpe.json: GPT-2 token ids computed by OpenAI's Python tiktoken.

The ranks come from openai-whisper's sdist (whisper/assets/gpt2.tiktoken, GPT-2's byte-level
BPE), because tiktoken itself fetches its files over the network. The split pattern is
tiktoken's own r50k pattern. Needs: pip install tiktoken (0.14 was used).

    python scripts/make_bpe_fixture.py
"""

import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def whisper_ranks(tmp):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp,
         "openai-whisper==20250625"],
        check=True,
    )
    (sdist,) = glob.glob(os.path.join(tmp, "openai_whisper-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
        tar.extract(member, tmp, filter="data")
        return os.path.join(tmp, member.name)


CASES = [
    "Hello, world!",
    "",
    " ",
    "   leading and trailing spaces   ",
    "don't won't they're I'm we've you'll he'd",
    "DON'T 'S 'll",
    "tabs\tand\nnewlines\r\n\n\nthree",
    "numbers 1234567890 3.14159 1e-5 0x1F",
    "Ünïcödé: naïve café, Straße, façade",
    "日本語のテキストと中文字符",
    "emoji 👩‍👩‍👧‍👦 and 🚀🔥",
    "combining e\u0301 vs \u00e9",
    "<|endoftext|> is ordinary text here",
    "code: fn main() { println!(\"{}\", x[0] >> 2); }",
    "    indented\n        more\n",
    "a" * 300,
    "ab" * 150 + " " + "z z " * 40,
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ranks = load_tiktoken_bpe(whisper_ranks(tmp))
    enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})
    cases = list(CASES)
    # A slice of the bundled corpus, with its blank lines and stage directions.
    with open(os.path.join(ROOT, "data/shakespeare/hamlet_gut.txt"), encoding="utf-8") as f:
        cases.append(f.read()[20000:26000])
    out = {
        "generator": f"tiktoken {tiktoken.__version__}, ranks from openai-whisper 20250625 assets/gpt2.tiktoken",
        "eot": enc.eot_token,
        "n_vocab": enc.n_vocab,
        "cases": [{"text": t, "ids": enc.encode_ordinary(t)} for t in cases],
    }
    path = os.path.join(ROOT, "tests/fixtures/gpt2_bpe.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path}: {len(cases)} cases, {sum(len(c['ids']) for c in out['cases'])} ids")


if __name__ == "__main__":
    main()
