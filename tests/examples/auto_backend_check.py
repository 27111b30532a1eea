#!/usr/bin/env python3
"""An example started without --backend runs on the first of uring, epoll_et and poll
that works here, says which on stderr, and serves.

usage: auto_backend_check.py UPPER_ECHO_SERVER

With WEFT_DISABLE_URING set (CTest's example_auto_backend_without_uring) the choice must
be epoll_et, with uring's reason given; otherwise uring where this machine has it.
Talks to 127.0.0.1 only; stops the server with SIGTERM.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    server = sys.argv[1]
    disabled = os.environ.get("WEFT_DISABLE_URING", "") not in ("", "0")
    p = subprocess.Popen([server, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(backend (\w+)\)", line)
        if not m:
            fail(f"no listening line: {line!r} (stderr: {p.stderr.read() if p.poll() is not None else ''})")
        port, backend = int(m.group(1)), m.group(2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"auto")
            s.shutdown(socket.SHUT_WR)
            got = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                c = s.recv(64)
                if not c:
                    break
                got += c
        if got != b"AUTO":
            fail(f"echo on {backend}: {got!r}")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    choice = [l for l in err.splitlines() if l.startswith("backend: ")]
    if not choice:
        fail(f"no 'backend: ' line on stderr: {err!r}")
    said = choice[0][len("backend: "):]
    if not said.startswith(backend):
        fail(f"stderr says '{said}', the server runs on {backend}")
    if disabled:
        if backend != "epoll_et" or "uring: WEFT_DISABLE_URING" not in said:
            fail(f"with WEFT_DISABLE_URING the choice is '{said}'")
    elif backend not in ("uring", "epoll_et"):
        fail(f"chose {backend}")
    print(f"auto backend: {said}: OK")


if __name__ == "__main__":
    main()
