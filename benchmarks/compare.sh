#!/usr/bin/env bash
# Measures echo_server configurations against each other on a loopback ping-pong:
# server CPU per message and syscalls per message, server pinned to CPU 0 and the load
# (echo_load) to CPU 1. Medians over the repetitions; the order of the configurations
# rotates between repetitions.
#
#   [SIZE=64] [DEPTH=1] benchmarks/compare.sh CONNECTIONS SECONDS REPETITIONS LABEL='ECHO_SERVER ARGS' ...
#
# e.g. benchmarks/compare.sh 8 3 3 lazy='--backend epoll_lt' et='--backend epoll_et'
# Syscalls are counted with perf's tracepoint counters (in the kernel: unlike strace,
# this does not slow the server enough to change how often its reads must wait); needs
# root or kernel.perf_event_paranoid <= -1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}" linux-perf util-linux
if (($# < 4)); then
    echo "usage: $0 CONNECTIONS SECONDS REPETITIONS LABEL='ECHO_SERVER ARGS' ..." >&2
    exit 2
fi
conns="$1" secs="$2" reps="$3" size="${SIZE:-64}" depth="${DEPTH:-1}"
shift 3
labels=() configs=()
for c in "$@"; do
    [[ "$c" == *=* ]] || { echo "error: '$c' is not LABEL='ARGS'" >&2; exit 2; }
    labels+=("${c%%=*}")
    configs+=("${c#*=}")
done
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target echo_server echo_load >/dev/null
bin=build/default/benchmarks
tmp=$(mktemp -d)
pid="" ppid=""
cleanup() {  # only the processes this script started, by PID
    [[ -n "$ppid" ]] && kill -INT "$ppid" 2>/dev/null
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
tck=$(getconf CLK_TCK)

start_server() {  # $@ echo_server args -> sets $pid and $port
    : >"$tmp/out"
    # shellcheck disable=SC2068
    taskset -c 0 "$bin/echo_server" $@ >"$tmp/out" &
    pid=$!
    for _ in $(seq 50); do grep -q port "$tmp/out" && break; sleep 0.05; done
    port=$(awk '/port/ {print $2}' "$tmp/out")
    [[ -n "$port" ]] || { echo "error: echo_server $* did not start" >&2; exit 1; }
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

n=${#labels[@]}
for ((r = 0; r < reps; r++)); do
    for ((i = 0; i < n; i++)); do
        k=$(((i + r) % n))
        start_server "${configs[$k]}"
        perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$tmp/perf" &
        ppid=$!
        before=$(cpu_ticks "$pid")
        line=$(taskset -c 1 "$bin/echo_load" --port "$port" --connections "$conns" --size "$size" --depth "$depth" \
            --seconds "$secs" --warmup 1) || { echo "error: ${labels[$k]}: $line" >&2; exit 1; }
        line=$(grep '^msgs=' <<<"$line")  # the result line (echo_load also says "window")
        after=$(cpu_ticks "$pid")
        kill -INT "$ppid"; wait "$ppid" || true
        kill -TERM "$pid"; wait "$pid" || true
        pid="" ppid=""
        msgs=$(sed 's/.*total_msgs=\([0-9]*\).*/\1/' <<<"$line")
        rate=$(sed 's/.*msgs_per_s=\([0-9]*\).*/\1/' <<<"$line")
        sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$tmp/perf")
        p99=$(sed 's/.*p99_us=\([0-9.]*\).*/\1/' <<<"$line")
        ccpu=$(sed 's/.*client_cpu_pct=\([0-9.]*\).*/\1/' <<<"$line")
        awk -v l="${labels[$k]}" -v rate="$rate" -v t=$((after - before)) -v hz="$tck" -v m="$msgs" -v s="$sys" \
            -v p99="$p99" -v cc="$ccpu" \
            'BEGIN {printf "%s %s %.3f %.3f %s %s\n", l, rate, t / hz * 1e6 / m, s / m, p99, cc}' >>"$tmp/runs"
    done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$conns connections x $size B x depth $depth, ${secs}s (+1s warm-up) x $reps runs, medians"
printf '%-20s %12s %16s %14s %10s %12s\n' configuration msgs/s "server µs/msg" syscalls/msg "p99 µs" "client CPU%"
for l in "${labels[@]}"; do
    col() { awk -v l="$l" -v c="$1" '$1 == l {print $c}' "$tmp/runs" | median; }
    printf '%-20s %12s %16s %14s %10s %12s\n' "$l" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)"
done
