#!/usr/bin/env bash
# Prints the cargo feature flags this machine can build: --features mpi when Open MPI's
# mpicc and libclang (for the bindings) are installed, nothing otherwise.
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
if command -v mpicc >/dev/null 2>&1 && "$LDCONFIG" -p 2>/dev/null | grep 'libclang.*\.so' >/dev/null; then
  echo "--features mpi"
fi
