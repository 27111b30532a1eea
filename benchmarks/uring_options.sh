#!/usr/bin/env bash
# Does a uring option pay? Measures uring with one of its switches on and off, reading
# with read_some and with receive(): server CPU and syscalls per message.
#
#   [SIZE=64] [DEPTH=1] [SERVER_ARGS=...] benchmarks/uring_options.sh OPTION [CONNECTIONS] [SECONDS] [REPETITIONS]
#
# OPTION is fixed-files (uring::options::fixed_files: sockets in the registered file
# table), incremental-buffers (uring::options::incremental_buffers: provided buffers
# consumed incrementally) or bundles (uring::options::bundles: the multishot recv takes
# several provided buffers per completion); only receive() uses provided buffers.
# SERVER_ARGS go to every echo_server run, e.g. SERVER_ARGS='--buffer-size 4096': bundles
# happen only when more bytes wait than a buffer holds. Defaults: 64 connections, 4 s,
# 5 runs. Method: see compare.sh.
set -euo pipefail
option="${1:-}"
case "$option" in
    fixed-files | incremental-buffers | bundles) ;;
    *) echo "usage: $0 fixed-files|incremental-buffers|bundles [CONNECTIONS] [SECONDS] [REPETITIONS]" >&2; exit 2 ;;
esac
extra="${SERVER_ARGS:-}"
exec "$(dirname "$0")/compare.sh" "${2:-64}" "${3:-4}" "${4:-5}" \
    read_some_on="--backend uring --api read_some --$option on $extra" \
    read_some_off="--backend uring --api read_some --$option off $extra" \
    receive_on="--backend uring --api receive --$option on $extra" \
    receive_off="--backend uring --api receive --$option off $extra"
