#!/usr/bin/env bash
# The kernel reference tests alone (every kernel and variant against the plain-loop reference,
# f32 and f16, NaN-prefilled, in the checked and trusted builds), for running them under another
# driver setting, e.g. `LP_NATIVE_VECTOR_WIDTH=128 bash scripts/reference-tests.sh` (lavapipe's
# subgroups of 4). Extra arguments go to the test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -q $(bash scripts/features.sh) -- \
  matmul:: layers:: half:: llama:: lora:: optim:: compress::dequant shaders:: \
  tune::lane_parallel_variants_follow_the_subgroup_size "$@"
