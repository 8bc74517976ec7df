#!/usr/bin/env python3
"""Writes the worked example's data (examples/reverse/): a generated task that SmolLM2-135M
fails at first, reversing the order of 3 to 5 common words.

  train.jsonl  prompt-completion records to fine-tune on (`wgtrain prepare --format
               prompt-completion`)
  task.jsonl   held-out prompt/answer records for `wgtrain eval --task` (exact-match); no
               word list of it appears in train.jsonl

Standard library only; seeded, so the files are the same on every machine.
Run: python3 examples/reverse/make_data.py [N_TRAIN] [N_TASK]
"""
import json
import random
import sys

WORDS = """apple river stone cloud horse candle mirror forest garden window tiger pencil
bridge castle rabbit silver ocean winter summer button carpet dragon feather guitar hammer
island jacket kettle ladder magnet needle orange pepper rocket saddle tomato violin wagon
anchor barrel cactus donkey engine falcon ginger helmet igloo jungle kitten lemon monkey
napkin oyster parrot quartz ribbon spider turtle umbrella velvet walnut yogurt zebra basket
cherry desert eagle fabric glove harbor insect jewel kiwi lantern meadow nickel olive pillow
puzzle rain salmon thunder valley wallet yarn lobster marble candy copper sugar planet
""".split()

PROMPT = "Reverse the order of the words: {}\nAnswer:"


def record(rng):
    words = rng.sample(WORDS, rng.randint(3, 5))
    return " ".join(words), " ".join(reversed(words))


def main():
    n_train = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    n_task = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    rng = random.Random(1234)
    task, seen = [], set()
    while len(task) < n_task:
        q, a = record(rng)
        if q not in seen:
            seen.add(q)
            task.append({"prompt": PROMPT.format(q), "answer": a})
    train = []
    while len(train) < n_train:
        q, a = record(rng)
        if q not in seen:
            train.append({"prompt": PROMPT.format(q), "completion": " " + a})
    for name, rows in [("train.jsonl", train), ("task.jsonl", task)]:
        with open(f"examples/reverse/{name}", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
