#!/usr/bin/env bash
# `wgtrain check` on wgpu's GL back end over Mesa's llvmpipe (EGL, headless): the GLSL path's
# kernels against the CPU reference. Installs the EGL and GL parts of the same Mesa as the
# Vulkan driver where they are missing. Extra arguments go to `wgtrain check`.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! ldconfig -p | grep -q 'libEGL_mesa.so.0' || ! compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null; then
  mesa=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  pkgs="libegl1 libegl-mesa0${mesa:+=$mesa} libgl1-mesa-dri${mesa:+=$mesa}"
  echo "gl-check: installing $pkgs (EGL and llvmpipe's GL)"
  $SUDO apt-get install -y -qq $pkgs >/dev/null || {
    echo "gl-check: could not install $pkgs: no GL back end to check" >&2
    exit 1
  }
fi
cargo run --release -q $(bash scripts/features.sh) -- --backend gl check "$@"
