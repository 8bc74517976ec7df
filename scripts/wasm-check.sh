#!/usr/bin/env bash
# Compiles the engine's library for the browser (wasm32-unknown-unknown, wgpu's WebGPU back end)
# with Debian's own toolchain, since rustup here has only the x86_64 standard library:
# rustc-web and cargo-web 1.96 (their LLVM has the wasm32 back end), rust-web-src (the standard
# library's sources, built with -Zbuild-std) and lld-19's wasm-ld, all pinned. Installs them
# when missing. Output under target/web.
set -euo pipefail
cd "$(dirname "$0")/.."
v=1.96.0+dfsg1-1~deb12u2
pkgs="rustc-web=$v cargo-web=$v rust-web-src=$v lld-19=1:19.1.7-3~deb12u1"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if [ "$(dpkg-query -W -f='${Version}' rustc-web 2>/dev/null)" != "$v" ] || ! [ -x /usr/lib/llvm-19/bin/wasm-ld ] \
  || ! [ -d /usr/lib/rustlib/src/rust/library ]; then
  echo "wasm-check: installing $pkgs"
  # bookworm-security moves on: with stale package lists, fetch them once and try again.
  $SUDO apt-get install -y -qq $pkgs >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $pkgs >/dev/null; } \
    || { echo "wasm-check: could not install $pkgs: no browser build to check" >&2; exit 1; }
fi
# Debian's rustc and cargo live in /usr/bin; rustup's stay first everywhere else.
PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/web \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-19/bin/wasm-ld \
  /usr/bin/cargo build --release --lib -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown "$@"
