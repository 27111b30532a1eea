#!/usr/bin/env python3
"""Drives examples/file_server on one backend, as CI's smoke test.

usage: file_server_check.py FILE_SERVER BACKEND

Builds a temporary root (small files of several types, a 3 MiB file of patterned
bytes, directories with and without index.html, a symlink that stays inside the root
and two that lead out of it, a FIFO, a file next to the root), starts the server on
127.0.0.1:0 and reads its "listening on HOST:PORT" line, then checks with plain
sockets: GET and HEAD (bodies byte-exact, headers), keep-alive, pipelining and a
header split over several writes, Connection handling for HTTP/1.1 and 1.0, ranges
(206, 416, ignored), 405, the paths that try to leave the root (404), 400, 431, 413,
505, a slowloris client closed after --header-timeout, a large file read slowly and
by several clients at once, and the drain: SIGTERM during a download lets it finish,
closes an idle connection, and the server exits 0 within 5 s.

It runs twice: with send_file, and with --naive (blocking pread on the loop's thread).
Every wait is bounded; each failed check is printed; the exit status is nonzero if any
failed.
"""
import array
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

server_bin, backend = sys.argv[1], sys.argv[2]
failures = []
mode = ""


def check(cond, what):
    if not cond:
        failures.append(f"[{mode}] {what}")
        print(f"FAIL [{mode}]:", what, flush=True)
    return cond


# ---- The root ---------------------------------------------------------------------

top = tempfile.mkdtemp(prefix="file_server_check.")
root = os.path.join(top, "root")
files = {
    "hello.txt": b"Hello, weft!\n",
    "index.html": b"<!doctype html><title>root</title>\n",
    "sub/index.html": b"<h1>sub</h1>\n",
    "sub/deeper/x.txt": b"deep\n",
    "empty/.keep": b"",  # a directory without index.html
    "style.css": b"body { color: red }\n",
    "app.js": b"console.log(1);\n",
    "data.json": b"{\"a\": 1}\n",
    "IMAGE.PNG": b"\x89PNG\r\n\x1a\nfake",
    "photo.jpeg": b"\xff\xd8\xff fake jpeg",
    "module.wasm": b"\x00asm\x01\x00\x00\x00",
    "noext": b"no extension\n",
    "with space.txt": b"spaced\n",
    "zero.txt": b"",
    # 3 MiB: every 4-byte word holds its own index, so a misplaced chunk shows
    "big.bin": array.array("I", range(3 * 1024 * 1024 // 4)).tobytes(),
}
for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
secret = b"secret outside the root\n"
with open(os.path.join(top, "secret.txt"), "wb") as f:
    f.write(secret)
os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "link_out"))  # leads out
os.symlink("../secret.txt", os.path.join(root, "link_out_rel"))              # leads out, relative
os.symlink("hello.txt", os.path.join(root, "link_in"))                       # stays inside
os.mkdir(os.path.join(root, "empty_dir"))
os.mkfifo(os.path.join(root, "fifo"))  # opening it without O_NONBLOCK would wait for a writer
big = files["big.bin"]


# ---- A minimal HTTP client ----------------------------------------------------------

class Client:
    def __init__(self, port, rcvbuf=None, timeout=10):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.buf = bytearray()

    def send(self, data):
        self.s.sendall(data)

    def get(self, path, head=False, extra=b"", version=b"HTTP/1.1"):
        self.send(b"%s %s %s\r\nHost: localhost\r\n%s\r\n" % (b"HEAD" if head else b"GET", path, version, extra))
        return self.response(head)

    def _fill(self, n=65536):
        d = self.s.recv(n)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def response(self, head=False):
        """(status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            assert k.lower() not in headers, f"duplicate {k}"
            headers[k.lower()] = v.strip()
        n = int(headers["content-length"])
        if head:
            return int(status), headers, b""
        while len(self.buf) < n:
            self._fill()
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return int(status), headers, body

    def closed_within(self, seconds):
        """True if the server closes (EOF or reset) within `seconds`, discarding data."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.s.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(10)
        return False

    def close(self):
        self.s.close()


def start(*extra, expect_listening=True):
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([server_bin, "--root", root, "--listen", "127.0.0.1:0", "--backend", backend, *extra],
                         stdout=subprocess.PIPE, stderr=err, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 20)
    line = p.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        p.kill()
        rc = p.wait()
        err.seek(0)
        text = err.read().decode(errors="replace")
        if rc == 3:
            print(f"{backend} is not available here: check not run ({text.strip()})")
            shutil.rmtree(top, ignore_errors=True)
            sys.exit(0)
        sys.exit(f"unexpected first line {line!r}, exit status {rc}; stderr: {text}")
    host, port = line[len("listening on "):].rsplit(":", 1)
    check(host == "127.0.0.1" and int(port) > 0, f"listening line: {line!r}")
    return p, int(port), err


def stop(p, err):
    if p.poll() is None:
        p.kill()
        p.wait()
    err.seek(0)
    text = err.read().decode(errors="replace")
    # What the server says on stderr: only the drain message (anything else, a sanitizer
    # report for instance, is a failure).
    lines = [l for l in text.splitlines() if l.strip() and "draining" not in l]
    check(not lines, "server stderr: " + "\n".join(lines[:40]))


def expect(client, path, status, body=None, head=False, extra=b"", what=None, version=b"HTTP/1.1"):
    what = what or f"{'HEAD' if head else 'GET'} {path.decode(errors='replace')}"
    try:
        st, h, b = client.get(path, head, extra, version)
    except (OSError, EOFError, AssertionError, KeyError, ValueError) as e:
        check(False, f"{what}: {e!r}")
        return None, {}, b""
    check(st == status, f"{what}: status {st}, expected {status}")
    if body is not None:
        check(b == body, f"{what}: body of {len(b)} bytes differs (expected {len(body)})")
    check(h.get("server") == "weft", f"{what}: Server: {h.get('server')!r}")
    return st, h, b


def raw_exchange(port, data, what, status, expect_close):
    """Sends `data` as is; expects one response with `status`, then EOF if `expect_close`."""
    c = Client(port)
    try:
        c.send(data)
        st, h, _ = c.response()
        check(st == status, f"{what}: status {st}, expected {status}")
        if expect_close:
            check(h.get("connection") == "close", f"{what}: Connection: {h.get('connection')!r}")
            check(c.closed_within(3), f"{what}: connection not closed")
        return h
    except (OSError, EOFError, AssertionError, KeyError, ValueError) as e:
        check(False, f"{what}: {e!r}")
        return {}
    finally:
        c.close()


# ---- The checks ---------------------------------------------------------------------

def http_checks(port):
    c = Client(port)
    # GET and HEAD, headers, MIME types.
    st, h, _ = expect(c, b"/hello.txt", 200, files["hello.txt"])
    check(h.get("content-type") == "text/plain; charset=utf-8", f"hello.txt Content-Type {h.get('content-type')!r}")
    check(h.get("content-length") == str(len(files["hello.txt"])), "hello.txt Content-Length")
    check(h.get("accept-ranges") == "bytes", "Accept-Ranges: bytes")
    check("connection" not in h, f"keep-alive 1.1 response has Connection: {h.get('connection')!r}")
    st, h, _ = expect(c, b"/hello.txt", 200, head=True)
    check(h.get("content-length") == str(len(files["hello.txt"])), "HEAD Content-Length")
    check(not c.buf, "HEAD sent a body")
    for path, ctype in [(b"/style.css", "text/css; charset=utf-8"), (b"/app.js", "text/javascript; charset=utf-8"),
                        (b"/data.json", "application/json"), (b"/IMAGE.PNG", "image/png"),
                        (b"/photo.jpeg", "image/jpeg"), (b"/module.wasm", "application/wasm"),
                        (b"/noext", "application/octet-stream"), (b"/", "text/html; charset=utf-8")]:
        name = path.decode()[1:] or "index.html"
        st, h, _ = expect(c, path, 200, files[name])
        check(h.get("content-type") == ctype, f"{path}: Content-Type {h.get('content-type')!r}, expected {ctype}")
    expect(c, b"/zero.txt", 200, b"")
    expect(c, b"/big.bin", 200, big)
    # Directories, decoding, the query, symlinks that stay inside, absolute form.
    expect(c, b"/sub/", 200, files["sub/index.html"])
    expect(c, b"/sub", 200, files["sub/index.html"])
    expect(c, b"//sub//./index.html", 200, files["sub/index.html"])
    expect(c, b"/empty/", 404)
    expect(c, b"/empty_dir", 404)
    expect(c, b"/missing.txt", 404)
    expect(c, b"/hello.txt/", 404)
    expect(c, b"/fifo", 404)
    expect(c, b"/with%20space.txt", 200, files["with space.txt"])
    expect(c, b"/%68ello.txt?x=1&y=/../z", 200, files["hello.txt"])
    expect(c, b"/sub%2Fdeeper%2fx.txt", 200, files["sub/deeper/x.txt"])
    expect(c, b"/link_in", 200, files["hello.txt"])
    expect(c, b"http://localhost/hello.txt", 200, files["hello.txt"])
    # Paths that leave the root: 404, and the connection stays usable.
    for path in [b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt", b"/sub/../../secret.txt",
                 b"/sub/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt", b"/link_out", b"/link_out_rel",
                 b"/hello.txt%00", b"/hello.txt%00.html", b"/" + top.encode() + b"/secret.txt",
                 b"/sub/.."]:
        st, _, b = expect(c, path, 404)
        check(secret not in b, f"{path}: the secret leaked")
    # Methods.
    c.send(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    st, h, _ = c.response()
    check(st == 405 and h.get("allow") == "GET, HEAD", f"POST: {st} Allow {h.get('allow')!r}")
    c.send(b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    check(c.response()[0] == 405, "DELETE: 405")
    c.send(b"get /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    check(c.response()[0] == 405, "lower-case method: 405")
    # Ranges (on GET; HEAD ignores them).
    size = len(big)
    for spec, status, lo, hi in [(b"0-0", 206, 0, 0), (b"-10", 206, size - 10, size - 1), (b"5-", 206, 5, size - 1),
                                 (b"1000-1999", 206, 1000, 1999), (b"10-99999999", 206, 10, size - 1),
                                 (b"-99999999", 206, 0, size - 1), (b"100-50", 200, 0, size - 1),
                                 (b"0-1,5-6", 200, 0, size - 1), (b"abc", 200, 0, size - 1),
                                 (b"5", 200, 0, size - 1)]:
        what = b"Range: bytes=" + spec
        st, h, b = expect(c, b"/big.bin", status, big[lo:hi + 1], extra=what + b"\r\n", what=what.decode())
        if status == 206:
            want = f"bytes {lo}-{hi}/{size}"
            check(h.get("content-range") == want, f"{what}: Content-Range {h.get('content-range')!r}, expected {want}")
        else:
            check("content-range" not in h, f"{what}: unexpected Content-Range")
    expect(c, b"/big.bin", 200, extra=b"Range: items=0-1\r\n", what="Range: items=0-1", body=big)
    for spec in [str(size).encode() + b"-", b"99999999-", b"-0", str(size).encode() + b"-" + str(size + 5).encode()]:
        what = b"Range: bytes=" + spec
        st, h, _ = expect(c, b"/big.bin", 416, extra=what + b"\r\n", what=what.decode())
        check(h.get("content-range") == f"bytes */{size}", f"{what}: Content-Range {h.get('content-range')!r}")
    st, h, _ = expect(c, b"/big.bin", 200, head=True, extra=b"Range: bytes=0-0\r\n", what="HEAD with Range")
    check(h.get("content-length") == str(size), "HEAD with Range: whole length")
    expect(c, b"/zero.txt", 416, extra=b"Range: bytes=0-\r\n", what="Range on an empty file")
    check(not c.buf, f"{len(c.buf)} stray bytes after the responses")
    c.close()

    # Pipelining: many requests in one write, the answers in order.
    c = Client(port)
    reqs = [(b"/hello.txt", False, b""), (b"/big.bin", True, b""), (b"/missing", False, b""),
            (b"/big.bin", False, b"Range: bytes=-100\r\n"), (b"/sub/", False, b""), (b"/style.css", True, b""),
            (b"/../secret.txt", False, b""), (b"/data.json", False, b"")] * 4
    c.send(b"".join(b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (b"HEAD" if hd else b"GET", p, x) for p, hd, x in reqs))
    try:
        got = [c.response(hd) for _, hd, _ in reqs]
        want = [(200, files["hello.txt"]), (200, b""), (404, None), (206, big[-100:]), (200, files["sub/index.html"]),
                (200, b""), (404, None), (200, files["data.json"])] * 4
        for i, ((st, _, b), (wst, wb)) in enumerate(zip(got, want)):
            check(st == wst and (wb is None or b == wb), f"pipelined #{i}: {st}, expected {wst}")
    except (OSError, EOFError, AssertionError, KeyError, ValueError) as e:
        check(False, f"pipelining: {e!r}")
    # A header split over several writes, and a request after that on the same connection.
    try:
        for piece in [b"GET /hel", b"lo.txt HTTP/1.1\r", b"\nHost: x\r\nAccept: */*\r\n", b"\r", b"\n"]:
            c.send(piece)
            time.sleep(0.05)
        st, _, b = c.response()
        check(st == 200 and b == files["hello.txt"], f"split header: {st}")
        expect(c, b"/noext", 200, files["noext"], what="after the split header")
    except (OSError, EOFError, AssertionError, KeyError, ValueError) as e:
        check(False, f"split header: {e!r}")
    c.close()

    # Connection management.
    c = Client(port)
    st, h, _ = expect(c, b"/hello.txt", 200, files["hello.txt"], extra=b"Connection: close\r\n",
                      what="Connection: close")
    check(h.get("connection") == "close" and c.closed_within(3), "Connection: close: closed after the response")
    c.close()
    c = Client(port)
    st, h, _ = expect(c, b"/hello.txt", 200, files["hello.txt"], version=b"HTTP/1.0", what="HTTP/1.0")
    check(h.get("connection") == "close" and c.closed_within(3), "HTTP/1.0: closed after the response")
    c.close()
    c = Client(port)
    for i in range(3):
        st, h, _ = expect(c, b"/hello.txt", 200, files["hello.txt"], version=b"HTTP/1.0",
                          extra=b"Connection: Keep-Alive\r\n", what=f"HTTP/1.0 keep-alive #{i}")
        check(h.get("connection") == "keep-alive", f"HTTP/1.0 keep-alive #{i}: Connection {h.get('connection')!r}")
    c.close()

    # Refused requests: answered, then closed.
    raw_exchange(port, b"GARBAGE\r\n\r\n", "garbage request line", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Host fields", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", "field without colon", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "obsolete line folding", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost : x\r\n\r\n", "space before colon", 400, True)
    raw_exchange(port, b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "bad percent escape", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", "bad Content-Length", 400,
                 True)
    raw_exchange(port, b"GET  /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", "two spaces", 400, True)
    raw_exchange(port, b"GET hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", "relative target", 400, True)
    raw_exchange(port, b"GET /hello.txt HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/2.0", 505, True)
    raw_exchange(port, b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "a body", 413, True)
    raw_exchange(port, b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
                 "a large body", 413, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                 "Transfer-Encoding", 413, True)
    raw_exchange(port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
                 "a 9 KiB header", 431, True)
    raw_exchange(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "a 9 KiB request line", 431, True)
    raw_exchange(port, b"\r\n" * 5000, "8 KiB+ of empty lines", 431, True)
    # Just under the limit, and a Content-Length of 0, are fine.
    head = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Pad: "
    near = head + b"p" * (8192 - len(head) - 4) + b"\r\n\r\n"
    check(len(near) == 8192, "test bug: the near-limit request")
    raw_exchange(port, near, "an 8192-byte request", 200, False)
    raw_exchange(port, near.replace(b"X-Pad: ", b"X-Pad: p"), "an 8193-byte request", 431, True)


def slow_client_checks(port):
    """The header timeout (the server runs with --header-timeout 1)."""
    c = Client(port)
    t0 = time.monotonic()
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost:")  # slowloris: part of a header, then silence
    check(c.closed_within(3), "slowloris: not closed within 3 s")
    took = time.monotonic() - t0
    check(took > 0.8, f"slowloris: closed after {took:.2f} s, before the 1 s timeout")
    c.close()
    # Trickling a byte now and then does not extend the deadline: it runs from the
    # connection's start (or the previous response), not from the last byte.
    c = Client(port)
    t0 = time.monotonic()
    closed = False
    try:
        for b in b"GET /hello.txt HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxx":
            c.send(bytes([b]))
            time.sleep(0.1)
            if time.monotonic() - t0 > 4:
                break
    except OSError:
        closed = True
    closed = closed or c.closed_within(1)
    check(closed and time.monotonic() - t0 < 3.5, f"trickling client: closed={closed} after {time.monotonic() - t0:.2f} s")
    c.close()
    # After a response, an idle keep-alive connection gets the same time for its next request.
    c = Client(port)
    expect(c, b"/hello.txt", 200, files["hello.txt"], what="before idling")
    t0 = time.monotonic()
    check(c.closed_within(3) and time.monotonic() - t0 > 0.8, "idle keep-alive connection: closed after ~1 s")
    c.close()
    # Silence from the start.
    c = Client(port)
    check(c.closed_within(3), "silent connection: not closed within 3 s")
    c.close()


def slow_reader(port, rcvbuf=16384, chunk=16384, pause=0.004, limit=None, results=None):
    """Downloads big.bin reading `chunk` bytes every `pause` s: the body, or an error text."""
    try:
        c = Client(port, rcvbuf=rcvbuf, timeout=20)
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"\r\n\r\n" not in c.buf:
            c._fill(chunk)
        end = c.buf.index(b"\r\n\r\n")
        n = int([l for l in c.buf[:end].split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        del c.buf[:end + 4]
        while len(c.buf) < n:
            c._fill(chunk)
            time.sleep(pause)
        body = bytes(c.buf)
        c.close()
        return body
    except (OSError, EOFError, IndexError, ValueError) as e:
        return f"{e!r}"


def large_file_checks(port):
    body = slow_reader(port)
    check(body == big, f"slow reader: {body if isinstance(body, str) else f'{len(body)} bytes, not byte-exact'}")
    # While a slow download is in flight, other clients are served.
    results = {}
    t = threading.Thread(target=lambda: results.update(slow=slow_reader(port, pause=0.01)))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    c = Client(port)
    expect(c, b"/hello.txt", 200, files["hello.txt"], what="during a slow download")
    check(time.monotonic() - t0 < 1, f"during a slow download: answered after {time.monotonic() - t0:.2f} s")
    c.close()
    t.join(60)
    check(not t.is_alive() and results.get("slow") == big, "slow download alongside another client")
    # Several at once.
    out = [None] * 4
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, slow_reader(port, rcvbuf=65536, chunk=65536,
                                                                                      pause=0)))
               for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    check(all(o == big for o in out), "4 concurrent downloads byte-exact")
    # A file that shrinks during a download: the server stops short and closes (the
    # client sees EOF before Content-Length), and goes on serving others.
    shrink = os.path.join(root, "shrink.bin")
    with open(shrink, "wb") as f:
        f.truncate(32 * 1024 * 1024)  # sparse: more than the socket buffers hold
    c = Client(port, rcvbuf=16384)
    try:
        c.send(b"GET /shrink.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        c._fill(16384)
        time.sleep(0.3)  # the server fills the socket buffers and waits
        os.truncate(shrink, 1024 * 1024)
        got = len(c.buf)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            d = c.s.recv(1 << 20)
            if not d:
                break
            got += len(d)
        check(not d and got < 32 * 1024 * 1024, f"shrinking file: {got} bytes, closed={not d}")
    except OSError as e:
        check(False, f"shrinking file: {e!r}")
    c.close()
    os.unlink(shrink)
    c = Client(port)
    expect(c, b"/hello.txt", 200, files["hello.txt"], what="after the shrinking file")
    c.close()


def drain_checks(p, port):
    """SIGTERM (with the default 10 s header timeout): the idle connection closes at once,
    the download in flight finishes, the server exits 0 within 5 s."""
    idle = Client(port)
    expect(idle, b"/hello.txt", 200, files["hello.txt"], what="idle connection before SIGTERM")
    dl = Client(port, rcvbuf=16384)
    dl.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    dl._fill(16384)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    check(idle.closed_within(2), "drain: the idle connection is not closed within 2 s")
    try:
        while b"\r\n\r\n" not in dl.buf:
            dl._fill()
        del dl.buf[:dl.buf.index(b"\r\n\r\n") + 4]
        while len(dl.buf) < len(big):
            dl._fill()
        check(bytes(dl.buf) == big, "drain: the download in flight is byte-exact")
        check(dl.closed_within(3), "drain: the downloading connection is closed after its response")
    except (OSError, EOFError, ValueError) as e:
        check(False, f"drain: download in flight: {e!r} after {len(dl.buf)} bytes")
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    check(rc == 0, f"drain: exit status {rc}")
    check(took < 5, f"drain: took {took:.2f} s")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        check(False, "drain: still accepting after exit")
    except OSError:
        pass
    idle.close()
    dl.close()


def argument_checks():
    def rc_of(*args):
        try:
            return subprocess.run([server_bin, *args], capture_output=True, timeout=20).returncode
        except subprocess.TimeoutExpired:
            return "timeout"
    check(rc_of("--listen", "127.0.0.1:0", "--backend", backend) == 2, "no --root: exit 2")
    check(rc_of("--root", root, "--backend", backend) == 2, "no --listen: exit 2")
    check(rc_of("--root", os.path.join(top, "nope"), "--listen", "127.0.0.1:0", "--backend", backend) == 2,
          "missing root: exit 2")
    check(rc_of("--root", os.path.join(root, "hello.txt"), "--listen", "127.0.0.1:0", "--backend", backend) == 2,
          "root is a file: exit 2")
    check(rc_of("--root", root, "--listen", "127.0.0.1", "--backend", backend) == 2, "bad --listen: exit 2")
    check(rc_of("--root", root, "--listen", "127.0.0.1:0", "--backend", "nope") == 2, "unknown backend: exit 2")
    check(rc_of("--root", root, "--listen", "127.0.0.1:0", "--backend", backend, "--header-timeout", "0") == 2,
          "--header-timeout 0: exit 2")
    check(rc_of("--root", root, "--listen", "127.0.0.1:0", "--backend", backend, "--bogus", "1") == 2,
          "unknown option: exit 2")


try:
    argument_checks()
    for naive in (False, True):
        mode = "naive" if naive else "send_file"
        extra = ["--naive"] if naive else []
        t0 = time.monotonic()
        p, port, err = start("--header-timeout", "1", *extra)
        try:
            http_checks(port)
            slow_client_checks(port)
            check(p.poll() is None, f"the server died: exit status {p.returncode}")
            p.send_signal(signal.SIGTERM)
            try:
                check(p.wait(timeout=10) == 0, f"SIGTERM: exit status {p.returncode}")
            except subprocess.TimeoutExpired:
                check(False, "SIGTERM: still running after 10 s")
        finally:
            stop(p, err)
        p, port, err = start(*extra)
        try:
            large_file_checks(port)
            check(p.poll() is None, f"the server died: exit status {p.returncode}")
            drain_checks(p, port)
        finally:
            stop(p, err)
        print(f"{mode}: checks done in {time.monotonic() - t0:.1f} s", flush=True)
finally:
    shutil.rmtree(top, ignore_errors=True)

if failures:
    sys.exit(f"{len(failures)} check(s) failed on {backend}")
print(f"file_server on {backend}: all checks passed")
