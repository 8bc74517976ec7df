#!/usr/bin/env bash
# Builds the page that trains in the browser into target/web/site: the web/ crate (wgtrain's
# library on wgpu's WebGPU back end) for wasm32 with Debian's pinned toolchain
# (scripts/wasm-check.sh), its JavaScript bindings by wasm-bindgen-cli at exactly the version
# of the wasm-bindgen crate in Cargo.lock (installed into ~/.cache/wgtrain/web-tools when
# missing: about 3 minutes), and web/index.html and web/main.js. `wgtrain serve-web` serves it.
set -euo pipefail
cd "$(dirname "$0")/.."
v=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
tools=${WGTRAIN_WEB_TOOLS:-$HOME/.cache/wgtrain/web-tools}
if [ "$("$tools/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $v" ]; then
  echo "web-build: installing wasm-bindgen-cli $v into $tools (about 3 minutes)"
  # Not --locked: its lock names a webpki-roots release the registry no longer has.
  # No TLS (its test runner's downloads): about 20 s less to build.
  cargo install -q wasm-bindgen-cli --version "$v" --no-default-features --root "$tools"
fi
bash scripts/wasm-check.sh -p wgtrain-web "$@"
site=target/web/site
rm -rf "$site"
mkdir -p "$site"
"$tools/bin/wasm-bindgen" --target web --no-typescript --out-dir "$site/pkg" \
  target/web/wasm32-unknown-unknown/release/wgtrain_web.wasm
cp web/index.html web/main.js web/check.js "$site/"
echo "web-build: the page is in $site ($(du -h "$site/pkg/wgtrain_web_bg.wasm" | cut -f1) of WebAssembly); serve it with: cargo run --release -- serve-web"
