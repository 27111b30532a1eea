#!/usr/bin/env bash
# The main job: the backend comparison benchmark on loopback (benchmarks/run.py).
#   scripts/bench.sh            quick: a few cells, every weft backend and every peer that
#                               builds; prints the table (a few minutes)
#   scripts/bench.sh --full     the whole matrix, idle-connection memory, callgrind and
#                               compile time; writes benchmarks/results/ (about an hour)
# Other options go to run.py (python3 benchmarks/run.py --help). Needs 2 CPUs and root
# (or kernel.perf_event_paranoid <= -1) for the syscall counts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# The peers (Asio, libuv, Tokio through cargo and Debian's crates) and the measuring
# tools. A peer whose package is missing is skipped with its reason, never silently.
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}" util-linux linux-perf valgrind python3-matplotlib \
    libasio-dev libuv1-dev cargo librust-tokio-dev
# Debian's python3, which has python3-matplotlib (not a python3 that PATH may prefer).
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" benchmarks/run.py "$@"
