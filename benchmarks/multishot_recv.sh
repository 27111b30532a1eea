#!/usr/bin/env bash
# Does multishot recv pay behind uring's receive()? Measures receive() with one multishot
# recv per stream against one single-shot buffer-select recv per call, with read_some
# into the session's own buffer for reference: server CPU and syscalls per message.
#
#   benchmarks/multishot_recv.sh [CONNECTIONS] [SECONDS] [REPETITIONS]   (defaults 8 3 3)
#
# Method: see compare.sh.
set -euo pipefail
exec "$(dirname "$0")/compare.sh" "${1:-8}" "${2:-3}" "${3:-3}" \
    receive_multishot='--backend uring --api receive --multishot on' \
    receive_single='--backend uring --api receive --multishot off' \
    read_some='--backend uring --api read_some'
