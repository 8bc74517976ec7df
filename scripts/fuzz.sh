#!/usr/bin/env bash
# Runs wgtrain's libFuzzer targets (fuzz/) with cargo-fuzz on stable Rust: --sanitizer none,
# so coverage-guided fuzzing without AddressSanitizer (which needs nightly). Each target
# starts from its committed seeds (fuzz/seeds/TARGET) and grows a working corpus in
# fuzz/corpus/TARGET (not committed).
#   scripts/fuzz.sh [SECONDS [RUNS [TARGET...]]]   default: 30 s each, no run limit, every target
# A crash leaves its input in fuzz/artifacts/TARGET and fails the script. Each run builds its
# target first (coverage-instrumented, in fuzz/target), optimized; WGTRAIN_FUZZ_DEV=1 builds
# unoptimized instead, in less than half the time, for a short smoke run (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-30}
runs=${2:--1}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tokens config checkpoint optimizer_state tokenizer gguf)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
profile=-O
[ "${WGTRAIN_FUZZ_DEV:-0}" = 1 ] && profile=--dev
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds} s (runs limit $runs)"
  cargo fuzz run --sanitizer none "$profile" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 -max_len=65536 2>&1 \
    > "fuzz/corpus/$t.log" || { tail -40 "fuzz/corpus/$t.log"; echo "fuzz: $t failed (a crash leaves its input in fuzz/artifacts/$t)"; exit 1; }
  grep -E 'DONE|^Done|stat::number_of_executed_units|stat::peak_rss|INFO: seed corpus' "fuzz/corpus/$t.log" || true
done
