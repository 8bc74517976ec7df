#!/usr/bin/env python3
"""Print the graph of src/'s top-level modules: who names whom through `crate::MODULE`.

Counts references outside comments and #[cfg(test)] modules, as the house check does.
Usage: python3 scripts/modules.py [--why] [--check]
  --why    list each edge's files and reference counts
  --check  exit 1 when a circle exists, gpu names another module, or a runtime module uses reference
"""
import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Not runtime: the test oracle itself, the benches, `wgtrain check` and the demo (which compare
# against it).
NOT_RUNTIME = {"reference", "bench", "check", "demo"}


def modules():
    out = set()
    for e in os.listdir(SRC):
        if e.endswith(".rs") and e not in ("main.rs", "lib.rs"):
            out.add(e[:-3])
        elif os.path.isdir(os.path.join(SRC, e)):
            out.add(e)
    return out


def edges(mods):
    g = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, SRC).split(os.sep)
            top = rel[0][:-3] if len(rel) == 1 else rel[0]
            if top in ("main", "lib"):
                continue
            text = re.split(r"#\[cfg\(test\)\]", open(path, errors="replace").read())[0]
            for line in text.splitlines():
                if line.strip().startswith("//"):
                    continue
                for m in re.findall(r"crate::([a-z_][a-z0-9_]*)", line.split("//")[0]):
                    if m in mods and m != top:
                        g[top][m]["/".join(rel)] += 1
    return g


def circle(g, mods):
    def reach(a):
        seen, todo = set(), [a]
        while todo:
            for b in g[todo.pop()]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    return sorted(m for m in mods if m in reach(m))


def main():
    mods = modules()
    g = edges(mods)
    why = "--why" in sys.argv
    for m in sorted(mods):
        deps = sorted(g[m])
        print(f"{m:10} -> {', '.join(deps) if deps else '(nothing)'}")
        if why:
            for d in deps:
                refs = ", ".join(f"{f} {n}" for f, n in sorted(g[m][d].items()))
                print(f"{'':14}{d}: {refs}")
    cyc = circle(g, mods)
    print(f"circle: {', '.join(cyc) if cyc else 'none'}")
    bad = []
    if cyc:
        bad.append("a circle")
    if g["gpu"]:
        bad.append(f"gpu names {', '.join(sorted(g['gpu']))}")
    users = sorted(m for m in mods - NOT_RUNTIME if "reference" in g[m])
    if users:
        bad.append(f"runtime modules using reference: {', '.join(users)}")
    for b in bad:
        print(f"problem: {b}")
    if "--check" in sys.argv and bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
