#!/usr/bin/env python3
"""Smoke test of examples/minimal_echo_server (the README's 30-line server).

usage: minimal_echo_check.py MINIMAL_ECHO_SERVER

The example listens on 127.0.0.1:8800, as the README shows, and prints nothing: wait
until it accepts, echo a few messages (one of them bigger than the socket buffers take
at once), then stop it. If 8800 is taken by another program the check says so and
fails.
"""
import socket
import subprocess
import sys
import time

server = subprocess.Popen([sys.argv[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", 8800), timeout=5)
            break
        except OSError as e:
            if server.poll() is not None:
                sys.exit(f"the server exited with {server.returncode}: {server.stderr.read().strip()}")
            if time.monotonic() > deadline:
                sys.exit(f"no connection to 127.0.0.1:8800 within 10 s: {e}")
            time.sleep(0.05)
    for msg in (b"hello weft", b"x" * 1_000_000, b"bye"):
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"connection closed after {len(got)} of {len(msg)} bytes")
            got += chunk
        if got != msg:
            sys.exit("the echo differs from what was sent")
    s.close()
    print("minimal_echo_server: echoed 3 messages (1,000,013 bytes)")
finally:
    server.kill()
    server.wait()
