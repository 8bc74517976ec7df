#!/usr/bin/env bash
# Installs what wgtrain's tests need on a Debian 12 machine with no GPU: the software
# Vulkan driver (lavapipe) from bookworm-backports, pinned, and the Vulkan loader; and Open
# MPI with libclang for the `mpi` feature's bindings and its mpirun test.
# Installs nothing that is already there (FORCE=1 reinstalls the Vulkan driver).
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# ldconfig lives in /sbin, off a non-root user's PATH on Debian.
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)

have_mpi() {
  command -v mpicc >/dev/null && command -v mpirun >/dev/null && "$LDCONFIG" -p | grep 'libclang.*\.so' >/dev/null
}

# Open MPI for data-parallel training (cargo feature mpi). It is optional: a failed install
# is fatal only where it is required (WGTRAIN_REQUIRE_MPI=1, as in CI).
setup_mpi() {
  local status=$?
  if have_mpi; then
    echo "setup: Open MPI present ($(mpirun --version 2>/dev/null | head -1))"
  elif command -v apt-get >/dev/null && { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install \
      -y -qq openmpi-bin libopenmpi-dev clang libclang-dev >/dev/null; }; then
    echo "setup: installed $(mpirun --version 2>/dev/null | head -1) and libclang (for the mpi feature and its mpirun test)"
  elif [ "${WGTRAIN_REQUIRE_MPI:-0}" = 1 ]; then
    echo "setup: could not install Open MPI (openmpi-bin libopenmpi-dev clang libclang-dev), and WGTRAIN_REQUIRE_MPI=1" >&2
    exit 1
  else
    echo "setup: no Open MPI (could not install it): multi-GPU training (--features mpi) and its test are left out"
  fi
  exit $status
}
trap setup_mpi EXIT

MESA_PIN="25.0.7-2~bpo12+1"

if [ "$(uname -s)" != Linux ]; then
  echo "setup: not Linux; wgtrain uses the system's Metal or DX12 driver, nothing to install"
  exit 0
fi

have_vulkan_icd() {
  { compgen -G '/usr/share/vulkan/icd.d/*.json' || compgen -G '/etc/vulkan/icd.d/*.json'; } >/dev/null || return 1
  ldconfig -p | grep libvulkan.so.1 >/dev/null
}

installed_mesa() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true
}

# A Vulkan driver counts unless it is Mesa older than 25 (bookworm's 22.3.6 lavapipe is ~10x
# slower on compute than backports' 25).
mesa=$(installed_mesa)
if have_vulkan_icd && [ "${FORCE:-0}" != 1 ] && { [ -z "$mesa" ] || dpkg --compare-versions "$mesa" ge 25; }; then
  echo "setup: a Vulkan driver is present (mesa-vulkan-drivers: ${mesa:-not installed}); nothing to install"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "setup: no Vulkan driver found and no apt-get: install your GPU's Vulkan driver, or Mesa's lavapipe" >&2
  exit 1
fi
echo "setup: no usable Vulkan driver found (mesa-vulkan-drivers: ${mesa:-not installed}); installing the software one, lavapipe, from bookworm-backports"
mirror=$(bash "$(dirname "$0")/debian-mirror.sh")
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
echo "deb $mirror ${codename}-backports main" | $SUDO tee /etc/apt/sources.list.d/wgtrain-backports.list >/dev/null

$SUDO apt-get update -qq
export DEBIAN_FRONTEND=noninteractive
if apt-cache madison mesa-vulkan-drivers | grep -qF "$MESA_PIN"; then
  $SUDO apt-get install -y -qq -t "${codename}-backports" "mesa-vulkan-drivers=$MESA_PIN" libvulkan1
else
  echo "setup: mesa-vulkan-drivers $MESA_PIN is gone from ${codename}-backports; taking its newest"
  $SUDO apt-get install -y -qq -t "${codename}-backports" mesa-vulkan-drivers libvulkan1
fi
echo "setup: installed mesa-vulkan-drivers $(installed_mesa)"
