#!/usr/bin/env python3
"""Drives examples/upper_echo_server with plain Python sockets, as IO-model tutorials do.

usage: upper_echo_check.py SERVER_BINARY BACKEND [CLIENTS [SERVER_ARGS...]]

Starts the server on a free loopback port, then checks: b"Hello" -> b"HELLO";
CLIENTS concurrent clients (default 200) each get their own upper-cased reply;
a client that resets mid-stream, one that half-closes, and one that sends binary
garbage do not disturb the server, which still answers afterwards; SIGTERM stops it
cleanly. SERVER_ARGS (e.g. --threads 2 --spread hand_off) are passed to the server;
with --threads N the check also asks the server's loops to have served the clients
between them (its listening line names the loop count). Exits non-zero with a message
on the first failure. Talks to 127.0.0.1 only.
"""
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

TIMEOUT = 10.0


def upper(data: bytes) -> bytes:
    return bytes(b - 32 if 97 <= b <= 122 else b for b in data)


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)


def main() -> int:
    binary, backend = sys.argv[1], sys.argv[2]
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    extra = sys.argv[4:]
    server = subprocess.Popen([binary, "--port", "0", "--backend", backend] + extra,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        m = re.search(r":(\d+) ", line)
        if not m and server.wait(timeout=TIMEOUT) == 3:
            # Like WEFT_REQUIRE_BACKEND: a backend this process cannot use is not run.
            print(f"not run: backend {backend} is not available here: {server.stderr.read().strip()}")
            return 0
        if not m:
            print(f"FAIL: server did not print its address: {line!r} {server.stderr.read()}")
            return 1
        port = int(m.group(1))
        if "--threads" in extra:
            loops = extra[extra.index("--threads") + 1]
            if f"{loops} loops" not in line:
                print(f"FAIL: the server does not say it runs {loops} loops: {line!r}")
                return 1

        # The tutorial client, unchanged: send b"Hello", expect b"HELLO".
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"Hello")
            data = s.recv(1024)
            if data != b"HELLO":
                print(f"FAIL: expected b'HELLO', got {data!r}")
                return 1

        # Many clients at once, each with its own payload.
        errors = []

        def one(i: int) -> None:
            payload = (f"client {i}: " + "abcxyz" * (i % 50 + 1)).encode()
            try:
                got = roundtrip(port, payload)
                if got != upper(payload):
                    errors.append(f"client {i}: wrong reply {got[:40]!r}")
            except OSError as e:
                errors.append(f"client {i}: {e}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            print(f"FAIL: {len(errors)} of {clients} clients failed, first: {errors[0]}")
            return 1

        # A client that resets mid-stream (SO_LINGER 0 => RST on close).
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.sendall(b"partial data then reset" * 1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        # A client that half-closes and reads the rest.
        big = os.urandom(1 << 20)
        if roundtrip(port, big) != upper(big):
            print("FAIL: half-closed 1 MiB binary payload was not answered exactly")
            return 1
        # A client that sends garbage and vanishes without reading.
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.sendall(os.urandom(4096))
        s.close()
        time.sleep(0.1)
        # Still serving.
        if roundtrip(port, b"still here?") != b"STILL HERE?":
            print("FAIL: server stopped answering after reset/garbage clients")
            return 1

        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=TIMEOUT)
        if rc != 0:
            print(f"FAIL: server exited with {rc} on SIGTERM: {server.stderr.read()}")
            return 1
        print(f"ok: {backend} {' '.join(extra)}: Hello->HELLO, {clients} concurrent clients, reset, half-close, garbage, SIGTERM")
        return 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
