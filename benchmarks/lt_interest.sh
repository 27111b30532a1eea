#!/usr/bin/env bash
# Measures epoll's level-triggered interest policies against each other (and epoll_et
# for reference): server CPU and syscalls per message on a loopback ping-pong.
#
#   benchmarks/lt_interest.sh [CONNECTIONS] [SECONDS] [REPETITIONS]   (defaults 8 3 3)
#
# Policies: epoll_lt (lazy: interest kept while operations keep parking, dropped when
# the fd reports ready with nobody waiting) and epoll_lt_eager (added on every park,
# removed on every completion). Method: see compare.sh.
set -euo pipefail
exec "$(dirname "$0")/compare.sh" "${1:-8}" "${2:-3}" "${3:-3}" \
    epoll_lt='--backend epoll_lt' epoll_lt_eager='--backend epoll_lt_eager' epoll_et='--backend epoll_et'
