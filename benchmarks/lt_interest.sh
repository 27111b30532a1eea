#!/usr/bin/env bash
# Measures epoll's level-triggered interest policies against each other (and epoll_et
# for reference): server CPU per message and syscalls per message on a loopback
# ping-pong, server pinned to CPU 0 and load to CPU 1.
#
#   benchmarks/lt_interest.sh [CONNECTIONS] [SECONDS] [REPETITIONS]   (defaults 8 3 3)
#
# Syscalls are counted with perf's tracepoint counters (needs root or
# kernel.perf_event_paranoid <= -1 for tracepoints).
# Policies: epoll_lt (lazy: interest kept while operations keep parking, dropped when
# the fd reports ready with nobody waiting) and epoll_lt_eager (added on every park,
# removed on every completion). Reports medians over the repetitions; server order
# rotates between repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}" linux-perf util-linux
conns="${1:-8}" secs="${2:-3}" reps="${3:-3}"
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target echo_server pingpong_load >/dev/null
bin=build/default/benchmarks
backends=(epoll_lt epoll_lt_eager epoll_et)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tck=$(getconf CLK_TCK)

start_server() {  # $1 backend -> sets $pid and $port
    taskset -c 0 "$bin/echo_server" --backend "$1" >"$tmp/out" &
    pid=$!
    for _ in $(seq 50); do grep -q port "$tmp/out" && break; sleep 0.05; done
    port=$(awk '/port/ {print $2}' "$tmp/out")
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for ((r = 0; r < reps; r++)); do
    for ((i = 0; i < ${#backends[@]}; i++)); do
        b=${backends[$(((i + r) % ${#backends[@]}))]}
        start_server "$b"
        # Syscalls are counted in the kernel (tracepoint counters): unlike strace, this
        # does not slow the server enough to change how often its reads must wait.
        perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_ctl -p "$pid" -o "$tmp/perf" &
        ppid=$!
        before=$(cpu_ticks "$pid")
        line=$(taskset -c 1 "$bin/pingpong_load" --port "$port" --connections "$conns" --seconds "$secs")
        after=$(cpu_ticks "$pid")
        kill -INT "$ppid"; wait "$ppid" || true
        kill -TERM "$pid"; wait "$pid" || true
        msgs=$(sed 's/.*msgs=\([0-9]*\).*/\1/' <<<"$line")
        rate=$(sed 's/.*msgs_per_s=\([0-9]*\).*/\1/' <<<"$line")
        sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$tmp/perf")
        ctl=$(awk -F, '/sys_enter_epoll_ctl/ {print $1}' "$tmp/perf")
        awk -v b="$b" -v rate="$rate" -v t=$((after - before)) -v hz="$tck" -v m="$msgs" -v s="$sys" -v c="$ctl" \
            'BEGIN {printf "%s %s %.3f %.3f %.4f\n", b, rate, t / hz * 1e6 / m, s / m, c / m}' >>"$tmp/runs"
    done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "epoll interest policies: $conns connections x 64 B ping-pong, ${secs}s x $reps runs, medians"
printf '%-16s %12s %16s %14s %18s\n' backend msgs/s "server µs/msg" syscalls/msg epoll_ctl/msg
for b in "${backends[@]}"; do
    col() { awk -v b="$b" -v c="$1" '$1 == b {print $c}' "$tmp/runs" | median; }
    printf '%-16s %12s %16s %14s %18s\n' "$b" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)"
done
