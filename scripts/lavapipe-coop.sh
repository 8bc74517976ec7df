#!/usr/bin/env bash
# Runs a command under a second software Vulkan driver, Mesa 26's lavapipe, which has
# cooperative matrices (VK_KHR_cooperative_matrix, 8×8×8 f16): the driver the coop kernels'
# tests run on. The machine's own driver stays the pinned 25.0.7 of scripts/setup.sh.
#
#   bash scripts/lavapipe-coop.sh CMD ARGS...    e.g. ... cargo test --release -- coop
#   bash scripts/lavapipe-coop.sh --install      installs only, and prints the version
#
# Debian 12 has no Mesa 26. Debian 13's trixie-backports does, but the package asks for a newer
# glibc than 2.36 (for its other drivers), so apt cannot install it here. On first use this
# script downloads it (pinned by version and checksum; the newest 26.x if the pin has left the
# archive), unpacks it into a private directory (WGTRAIN_LAVAPIPE26_DIR, by default
# ~/.cache/wgtrain/lavapipe26), and makes its lavapipe load on Debian 12:
#   - libLLVM.so.19.1 from bookworm's libllvm19, libdisplay-info.so.2 from bookworm-backports;
#   - the five glibc 2.38 functions it calls from a small shim (lavapipe26/isoc23.c, preloaded),
#     its need for version GLIBC_2.38 marked weak (lavapipe26/weak_versions.py).
# The command then runs with VK_DRIVER_FILES naming only that driver. FORCE=1 reinstalls.
# Don't set LD_BIND_NOW under it: a few window-system symbols of newer xcb and wayland are
# missing on Debian 12 and are only ever bound lazily (compute never calls them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PIN="26.1.6-1~bpo13+1"
PIN_SHA256="e2d4a843b8c55ed17c1e8856805f67b553b013b6ce5f15faeec4db7d4d38ff90"
DISPLAY_INFO="libdisplay-info2"
LLVM="libllvm19"
DIR=${WGTRAIN_LAVAPIPE26_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wgtrain/lavapipe26}
LIBDIR="$DIR/root/usr/lib/x86_64-linux-gnu"
SHIMMED="__isoc23_strtol __isoc23_strtoul __isoc23_strtoll __isoc23_strtoull __isoc23_sscanf"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

fail() { echo "lavapipe-coop: $*" >&2; exit 1; }

# apt on a private list of suites, state and cache (nothing of the system's apt changes).
papt() {
  local tool=$1; shift
  "$tool" -o Dir::Etc::SourceList="$DIR/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$DIR/apt/lists" -o Dir::Cache="$DIR/apt/cache" -o APT::Sandbox::User="$(id -un)" "$@"
}

# The pinned version if the archive still has it, else the newest 26.x, else nothing.
pick_version() {
  local versions
  versions=$(papt apt-cache madison mesa-vulkan-drivers | awk -F'|' '/trixie-backports/ {gsub(/ /, "", $2); print $2}')
  if grep -qxF "$PIN" <<<"$versions"; then
    echo "$PIN"
  else
    grep '^26\.' <<<"$versions" | sort -V | tail -1 || true
  fi
}

# bookworm's libllvm19 (a system package: it brings its own dependencies).
install_llvm() {
  /sbin/ldconfig -p | grep -q 'libLLVM.so.19.1' && return
  echo "lavapipe-coop: installing $LLVM (libLLVM.so.19.1, which Mesa 26's lavapipe is built against)"
  $SUDO apt-get install -y -qq "$LLVM" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$LLVM" >/dev/null; } \
    || fail "could not install $LLVM from Debian 12 (apt-get install $LLVM)"
}

install_driver() {
  command -v dpkg-deb >/dev/null && command -v apt-get >/dev/null || fail "needs Debian's apt-get and dpkg-deb"
  command -v cc >/dev/null || fail "needs a C compiler (cc) for the glibc shim: apt-get install gcc"
  rm -rf "$DIR/apt" "$DIR/debs" "$DIR/root" "$DIR/installed" && mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs" "$DIR/root"
  local mirror keys=/usr/share/keyrings/debian-archive-keyring.gpg
  mirror=$(bash "$here/debian-mirror.sh")
  printf 'deb [signed-by=%s] %s %s main\n' "$keys" "$mirror" trixie-backports "$keys" "$mirror" bookworm-backports \
    > "$DIR/apt/sources.list"
  papt apt-get update -qq || fail "could not read trixie-backports and bookworm-backports from $mirror"
  local version
  version=$(pick_version)
  [ -n "$version" ] || fail "no mesa-vulkan-drivers 26.x in $mirror trixie-backports: no driver with cooperative matrices to run the coop kernels on"
  [ "$version" = "$PIN" ] || echo "lavapipe-coop: mesa-vulkan-drivers $PIN has left trixie-backports; taking its newest, $version"
  (cd "$DIR/debs" && papt apt-get download -qq "mesa-vulkan-drivers=$version" "$DISPLAY_INFO") \
    || fail "could not download mesa-vulkan-drivers=$version and $DISPLAY_INFO"
  local deb sum
  deb=$(ls "$DIR"/debs/mesa-vulkan-drivers_*.deb)
  sum=$(sha256sum "$deb" | cut -d' ' -f1)
  if [ "$version" = "$PIN" ] && [ "$sum" != "$PIN_SHA256" ]; then
    fail "$(basename "$deb") has sha256 $sum, not the pinned $PIN_SHA256"
  fi
  for d in "$DIR"/debs/*.deb; do dpkg-deb -x "$d" "$DIR/root"; done
  install_llvm
  cc -shared -fPIC -O2 -o "$DIR/libisoc23.so" "$here/lavapipe26/isoc23.c"
  local glibc
  glibc=$(ldd --version | head -1 | grep -o '[0-9]\+\.[0-9]\+$')
  # shellcheck disable=SC2086
  python3 "$here/lavapipe26/weak_versions.py" "$LIBDIR/libvulkan_lvp.so" "$glibc" $SHIMMED >/dev/null
  local missing
  missing=$(LD_LIBRARY_PATH="$LIBDIR" ldd "$LIBDIR/libvulkan_lvp.so" 2>&1 | grep 'not found' | grep -v 'weak version' | sort -u | tr -s ' \t\n' ' ' || true)
  [ -z "$missing" ] || fail "Mesa $version's lavapipe cannot load here: $missing(install scripts/setup.sh's driver first: it brings the X and Wayland libraries)"
  sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$LIBDIR/libvulkan_lvp.so\"|" \
    "$DIR"/root/usr/share/vulkan/icd.d/lvp_icd*.json > "$DIR/lvp_icd.json"
  echo "$version $sum" > "$DIR/installed"
  echo "lavapipe-coop: installed Mesa $version's lavapipe (mesa-vulkan-drivers sha256 $sum) in $DIR"
}

if [ ! -f "$DIR/installed" ] || [ "${FORCE:-0}" = 1 ]; then
  install_driver
fi
if [ "${1:-}" = --install ]; then
  echo "lavapipe-coop: mesa-vulkan-drivers $(cut -d' ' -f1 "$DIR/installed") in $DIR"
  exit 0
fi
[ $# -gt 0 ] || fail "usage: bash scripts/lavapipe-coop.sh CMD ARGS... (or --install)"
export VK_DRIVER_FILES="$DIR/lvp_icd.json" VK_ICD_FILENAMES="$DIR/lvp_icd.json"
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_PRELOAD="$DIR/libisoc23.so${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
