#!/usr/bin/env bash
# Training tokens/s of wgtrain builds and of the Burn peer, alternated in one session so that a host's
# drift between runs shows up in every column alike. Issue 11's lavapipe shape: vocab 2048, 4 layers,
# 4 heads, 128 channels, B 8, T 128 (models/bench-cpu.toml).
#
#   peers/burn/compare.sh ROUNDS BURN_PEER WGTRAIN [OLDER_WGTRAIN ...]
#
# Each wgtrain binary runs `train --steps 12` on the bundled plays and reports the mean (and median)
# step time of steps 3-11 from metrics.jsonl (older builds have no `bench train`); the first also runs `bench train`.
# The peer reports the mean of 10 steps after 3 warm-up steps (run it once before, so that Burn's
# autotune cache is warm).
set -euo pipefail
rounds=$1 peer=$2
shift 2
newest=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
config=$root/models/bench-cpu.toml
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
lscpu | grep 'Model name' || true
step_tps() {
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ms = sorted(r["ms"] for r in rows if "ms" in r and 3 <= r.get("step", -1) <= 11)
mean, median = sum(ms) / len(ms), ms[len(ms) // 2]
print(f"{8 * 128 / (mean / 1e3):.0f} tokens/s, {mean:.1f} ms per step (mean; median {median:.1f} ms)")
PY
}
for round in $(seq "$rounds"); do
  for bin in "$@"; do
    out=$(mktemp -d)
    "$bin" train --config "$config" --batch-size 8 --seq-len 128 --steps 12 --eval-every 0 --val-batches 1 \
      --sample-tokens 0 --out "$out/run" > "$out/log" 2>&1
    echo "round $round $bin train: $(step_tps "$out/run/metrics.jsonl")"
    rm -rf "$out"
  done
  "$newest" bench train --config "$config" --batch-size 8 --seq-len 128 --steps 10 2>&1 \
    | grep 'tokens/s' | sed "s|^|round $round $1 bench train: |"
  "$peer" --warmup 3 --steps 10 | tail -1 | sed "s|^|round $round |"
done
