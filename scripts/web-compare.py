#!/usr/bin/env python3
"""The browser test's verdict (scripts/web-test.sh): the page's shader check, its losses against
the native run's (1e-3 relative), and `wgtrain eval` of the downloaded model against the native
model's. Prints a table; exits 1 on any failure. Usage: web-compare.py DIR"""
import json
import sys

d = sys.argv[1]
bad = []
check = json.load(open(f"{d}/check.json"))
print(f"web-test: the browser's compiler took {check['shaders']} shaders, rejected {len(check['shaderErrors'])}")
bad += check["shaderErrors"]
if not check["shaders"] > 0:
    bad.append("the page offered no shaders to check")
page = json.load(open(f"{d}/page.json"))
native = [json.loads(l) for l in open(f"{d}/native/metrics.jsonl")]
native = [r["loss"] for r in native if "loss" in r]
print(f"web-test: adapter in the page: {page['adapter']}")
print(f"{'step':>4} {'page':>10} {'native':>10} {'rel':>9}")
if len(page["losses"]) != len(native):
    bad.append(f"the page ran {len(page['losses'])} steps, native {len(native)}")
for i, (p, n) in enumerate(zip(page["losses"], native)):
    rel = abs(p - n) / abs(n)
    print(f"{i:>4} {p:>10.6f} {n:>10.6f} {rel:>9.2e}")
    if not rel <= 1e-3:
        bad.append(f"step {i}: the page's loss {p} is not within 1e-3 of the native {n}")
evals = {m: open(f"{d}/eval-{m}.txt").read().split() for m in ("dl", "native")}
loss = {m: float(w[w.index("loss") + 1]) for m, w in evals.items()}
print(f"web-test: wgtrain eval of the downloaded model {loss['dl']:.4f}, of the native one {loss['native']:.4f}")
if not abs(loss["dl"] - loss["native"]) <= 1e-3 * loss["native"]:
    bad.append("the downloaded model does not evaluate as the native one")
r = page["resumed"]
print(f"web-test: resumed from the download on a picked text: losses {r['losses']} (the fresh model's first: {page['losses'][0]:.4f})")
if not (len(r["losses"]) == 2 and r["losses"][0] < page["losses"][0] - 0.3):
    bad.append("the resumed run did not start from the trained weights")
tps = page.get("tokensPerSecond")
print(f"web-test: {tps:.0f} tokens/s in the page" if tps else "web-test: no tokens/s")
for b in bad:
    print(f"web-test: FAIL {b}")
sys.exit(1 if bad else 0)
