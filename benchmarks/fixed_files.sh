#!/usr/bin/env bash
# Does the registered file table pay behind uring? Measures uring with its sockets in the
# ring's registered file table (every operation submitted with IOSQE_FIXED_FILE) against
# plain fds, with read_some and with receive(): server CPU and syscalls per message.
#
#   [DEPTH=1] benchmarks/fixed_files.sh [CONNECTIONS] [SECONDS] [REPETITIONS]   (defaults 64 4 5)
#
# Method: see compare.sh.
set -euo pipefail
exec "$(dirname "$0")/compare.sh" "${1:-64}" "${2:-4}" "${3:-5}" \
    read_some_fixed='--backend uring --api read_some --fixed-files on' \
    read_some_plain='--backend uring --api read_some --fixed-files off' \
    receive_fixed='--backend uring --api receive --fixed-files on' \
    receive_plain='--backend uring --api receive --fixed-files off'
