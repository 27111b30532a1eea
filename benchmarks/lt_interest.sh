#!/usr/bin/env bash
# Measures epoll's level-triggered interest policies against each other (and epoll_et
# for reference): server CPU per message and syscalls per message on a loopback
# ping-pong, server pinned to CPU 0 and load to CPU 1.
#
#   benchmarks/lt_interest.sh [CONNECTIONS] [SECONDS] [REPETITIONS]   (defaults 8 3 3)
#
# Policies: epoll_lt (lazy: interest kept while operations keep parking, dropped when
# the fd reports ready with nobody waiting) and epoll_lt_eager (added on every park,
# removed on every completion). Reports medians over the repetitions; server order
# rotates between repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}" strace util-linux
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
        before=$(cpu_ticks "$pid")
        line=$(taskset -c 1 "$bin/pingpong_load" --port "$port" --connections "$conns" --seconds "$secs")
        after=$(cpu_ticks "$pid")
        kill -TERM "$pid"; wait "$pid" || true
        msgs=$(sed 's/.*msgs=\([0-9]*\).*/\1/' <<<"$line")
        rate=$(sed 's/.*msgs_per_s=\([0-9]*\).*/\1/' <<<"$line")
        us=$(awk -v t=$((after - before)) -v hz="$tck" -v m="$msgs" 'BEGIN {printf "%.3f", t / hz * 1e6 / m}')
        echo "$b $rate $us" >>"$tmp/runs"
    done
done

# Syscalls per message: one counted run per backend (strace slows the server, so its
# throughput is not used).
for b in "${backends[@]}"; do
    start_server "$b"
    strace -c -f -q -o "$tmp/strace" -p "$pid" &
    spid=$!
    sleep 0.3
    line=$(taskset -c 1 "$bin/pingpong_load" --port "$port" --connections "$conns" --seconds 2)
    kill -INT "$spid"; wait "$spid" || true
    kill -TERM "$pid"; wait "$pid" || true
    msgs=$(sed 's/.*msgs=\([0-9]*\).*/\1/' <<<"$line")
    total=$(awk '$NF == "total" {print $4}' "$tmp/strace")
    ctl=$(awk '$NF == "epoll_ctl" {print $4}' "$tmp/strace")
    awk -v b="$b" -v t="${total:-0}" -v c="${ctl:-0}" -v m="$msgs" \
        'BEGIN {printf "%s %.2f %.3f\n", b, t / m, c / m}' >>"$tmp/sys"
done

echo "epoll interest policies: $conns connections x 64 B ping-pong, ${secs}s x $reps runs, medians"
printf '%-16s %12s %16s %14s %18s\n' backend msgs/s "server µs/msg" syscalls/msg epoll_ctl/msg
for b in "${backends[@]}"; do
    med_rate=$(awk -v b="$b" '$1 == b {print $2}' "$tmp/runs" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    med_us=$(awk -v b="$b" '$1 == b {print $3}' "$tmp/runs" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    read -r _ sys ctl < <(awk -v b="$b" '$1 == b' "$tmp/sys")
    printf '%-16s %12s %16s %14s %18s\n' "$b" "$med_rate" "$med_us" "$sys" "$ctl"
done
