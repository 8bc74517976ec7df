"""Benchmark: data-parallel step time, 1 rank against 2 ranks (plain and ZeRO-1) at the same
global batch, and the share of a step spent communicating. One run, same machine.

Each configuration trains models/default.toml for --steps steps on the bundled corpus; the
step time is the median of metrics.jsonl's `ms` after the first 3 steps (pipeline compiles
and MPI connection setup). With 2 ranks, `comm_ms` is the time the MPI thread spent in
collectives during the step, and `comm_wait_ms` the part the training thread waited for
(the rest overlapped the backward).

    cargo build --release --features mpi
    python scripts/bench_mpi.py [--steps 30] [--global-batch 8] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(bin_, ranks, batch, out, steps, extra):
    cmd = [bin_, "train", "--steps", str(steps), "--batch-size", str(batch), "--eval-every", "0",
           "--val-batches", "1", "--sample-tokens", "0", "--out", out] + extra
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe"] + cmd
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    steps_ = [l for l in lines if "loss" in l and l["step"] >= 3]
    med = lambda k: statistics.median(l[k] for l in steps_) if k in steps_[0] else None
    return {"ms": med("ms"), "comm_ms": med("comm_ms"), "comm_wait_ms": med("comm_wait_ms"),
            "last_loss": lines[-1].get("val_loss")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/wgtrain"))
    args = ap.parse_args()
    g = args.global_batch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ranks, extra in [("1_rank", 1, []), ("2_ranks", 2, []), ("2_ranks_zero1", 2, ["--zero", "1"])]:
            r = run(args.bin, ranks, g // ranks, os.path.join(tmp, name), args.steps, extra)
            r.update(name=name, ranks=ranks, batch_per_rank=g // ranks, global_batch=g)
            rows.append(r)
    base = rows[0]["ms"]
    for r in rows:
        r["x_one_rank"] = r["ms"] / base
        r["comm_share"] = (r["comm_ms"] or 0) / r["ms"]
        r["comm_wait_share"] = (r["comm_wait_ms"] or 0) / r["ms"]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{'run':<15} {'B/rank':>6} {'step ms':>9} {'x 1 rank':>9} {'comm ms':>8} {'share':>6} {'waited':>7} {'share':>6} {'val loss':>9}")
    for r in rows:
        print(f"{r['name']:<15} {r['batch_per_rank']:>6} {r['ms']:>9.1f} {r['x_one_rank']:>9.2f} "
              f"{(r['comm_ms'] or 0):>8.1f} {r['comm_share']:>6.1%} {(r['comm_wait_ms'] or 0):>7.1f} "
              f"{r['comm_wait_share']:>6.1%} {r['last_loss']:>9.4f}")


if __name__ == "__main__":
    main()
