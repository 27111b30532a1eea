#!/usr/bin/env bash
# Builds everything and runs the whole test suite (the README's test command).
#   scripts/test.sh [PRESET]     PRESET: default (Release, the default), debug, asan, tsan
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}"
preset="${1:-default}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
ctest --preset "$preset" -j "$(nproc)"
