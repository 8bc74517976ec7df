#!/usr/bin/env bash
# The browser test, after a release build and scripts/web-build.sh: the page in headless
# Chromium (Debian's, installed here when missing; WebGPU on its SwiftShader) first hands every
# shader to the browser's compiler (Tint), then trains models/web-test.toml for its 8 steps on
# the bundled plays and saves the model. The same run natively (`wgtrain train`, this machine's
# adapter) gives the losses the page's must match within 1e-3 relative, and `wgtrain eval`
# loads the downloaded model and must give the native model's loss.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! [ -x /usr/bin/chromium ]; then
  echo "web-test: installing Debian's chromium"
  $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }
fi
command -v node >/dev/null || { echo "web-test: needs Node.js (node) to drive the browser" >&2; exit 1; }
echo "web-test: $(/usr/bin/chromium --version 2>/dev/null | head -1), node $(node --version)"
bin=target/release/wgtrain
tmp=$(mktemp -d)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null; [ -n "${WEB_TEST_KEEP:-}" ] || rm -rf "$tmp"' EXIT
"$bin" --no-tune train --config models/web-test.toml --sample-tokens 0 --out "$tmp/native" > "$tmp/native.log"
"$bin" serve-web --addr 127.0.0.1:0 > "$tmp/serve.log" &
server=$!
for _ in $(seq 100); do grep -q '^serving' "$tmp/serve.log" && break; sleep 0.1; done
url=$(sed -n 's/^serving the page at \(http[^ ]*\) .*/\1/p' "$tmp/serve.log")
[ -n "$url" ] || { echo "web-test: serve-web did not start: $(cat "$tmp/serve.log")" >&2; exit 1; }
node scripts/web-test.mjs "${url}?check=1" "$tmp/dl" "$tmp/check.json" 120
node scripts/web-test.mjs "${url}?auto=1&config=web-test.toml" "$tmp/dl" "$tmp/page.json" 600
# Validation text for eval: the plays, byte tokens (prepare's own split of documents).
"$bin" prepare --input data/shakespeare --tokenizer byte --no-near-dup --out "$tmp/prep" > /dev/null
for m in dl native; do
  "$bin" --no-tune eval --model "$tmp/$m" --data "$tmp/prep" --batch-size 4 --seq-len 32 --batches 8 > "$tmp/eval-$m.txt"
done
python3 scripts/web-compare.py "$tmp"
