#!/usr/bin/env bash
# Quick start: builds the upper-echo example server, starts it on a free loopback port,
# talks to it with the example client and with a plain Python socket client, stops it.
#   scripts/demo.sh [BACKEND]    (default epoll_et)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
weft_need_packages "${WEFT_BUILD_PACKAGES[@]}"
backend="${1:-epoll_et}"
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target upper_echo_server echo_client
bin=build/default/examples
out=$(mktemp)
"$bin/upper_echo_server" --port 0 --backend "$backend" >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
cat "$out"
port=$(sed -n 's/.*:\([0-9]*\) (backend.*/\1/p' "$out")
echo "\$ echo_client --port $port 'Hello, weft!'"
"$bin/echo_client" --port "$port" --backend "$backend" 'Hello, weft!'
echo "\$ python3 (send b'Hello', expect b'HELLO')"
python3 - "$port" <<'PY'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
    s.sendall(b"Hello")
    print(s.recv(1024))
PY
kill -TERM "$server"
wait "$server"
tail -n +2 "$out"
