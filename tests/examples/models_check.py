#!/usr/bin/env python3
"""Smoke test of the classic IO-model programs in examples/models/.

usage: models_check.py SERVER SPIN_SEND_CLIENT

Starts SERVER (blocking_upper_server, select_upper_server or uring_upper_server) on a
free port, checks a small exchange with a plain socket (upper-cased, answered to the
end after a half-close), runs spin_send_client against it twice (4 MiB, with its send
buffer small enough that sends go through in pieces, and one byte), then stops the
server with SIGTERM and checks its last line and exit status. A uring server that
exits 3 (io_uring unavailable here, as under WEFT_DISABLE_URING) is reported, not
failed: the other checks cover that case.
"""
import re
import signal
import socket
import subprocess
import sys

server_path, client_path = sys.argv[1], sys.argv[2]
name = server_path.rsplit("/", 1)[-1]
server = subprocess.Popen([server_path, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    first = server.stdout.readline()
    if not first:
        server.wait(timeout=10)
        err = server.stderr.read().strip()
        if server.returncode == 3:
            print(f"{name}: not available here (exit 3: {err})")
            sys.exit(0)
        sys.exit(f"{name} exited with {server.returncode}: {err}")
    m = re.match(rf"{name} listening on 127\.0\.0\.1:(\d+) \(backend (\w+)\)$", first.strip())
    if not m:
        sys.exit(f"unexpected first line: {first!r}")
    port = int(m.group(1))

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello, Models 123")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        if got != b"HELLO, MODELS 123":
            sys.exit(f"the answer was {got!r}")

    for size, partial_expected in ((4 << 20, True), (1, False)):
        r = subprocess.run([client_path, "--port", str(port), "--bytes", str(size)], capture_output=True, text=True,
                           timeout=60)
        out = r.stdout.strip()
        if r.returncode != 0:
            sys.exit(f"spin_send_client --bytes {size}: exit {r.returncode}: {out} {r.stderr.strip()}")
        c = re.match(r"sent (\d+) bytes in (\d+) sends \((\d+) partial\), received (\d+) upper-cased; \d+ ms, CPU \d+ ms$",
                     out)
        if not c or int(c.group(1)) != size or int(c.group(4)) != size:
            sys.exit(f"spin_send_client --bytes {size} printed {out!r}")
        if partial_expected and int(c.group(3)) == 0:
            sys.exit(f"spin_send_client: no partial send with a 32 KiB send buffer and 4 MiB to send: {out!r}")
        print(f"spin_send_client --bytes {size}: {out}")

    server.send_signal(signal.SIGTERM)
    rest, err = server.communicate(timeout=20)
    last = rest.strip().splitlines()[-1] if rest.strip() else ""
    if server.returncode != 0 or last != f"{name}: stopped, 3 connections served":
        sys.exit(f"{name} after SIGTERM: exit {server.returncode}, last line {last!r}, stderr {err.strip()!r}")
    print(f"{name}: {last}")
finally:
    if server.poll() is None:
        server.kill()
        server.wait()
