#!/usr/bin/env python3
"""The static-file case study: examples/file_server on every weft backend, measured two ways.

    python3 benchmarks/file_bench.py                   # both parts, about 5 minutes
    python3 benchmarks/file_bench.py --parts stutter   # only the stutter part (about 3 minutes)
    python3 benchmarks/file_bench.py --quick           # CI smoke run (about 15 s), fails on any error

stutter: does one big download make everyone else wait? The runner writes a root
directory at run time (big.bin, --big-mib MiB, and small.txt, 2 KiB) and, for each
variant, starts file_server on it pinned to CPU 0 and runs benchmarks/file_load pinned
to CPU 1: --streams connections download big.bin over and over (keep-alive, bodies
discarded), while --small-clients connections each GET small.txt, wait for the answer,
and GET it again. It reports the small requests' latency (p50/p99/p99.9/max) and the
streams' throughput. The variants: `naive` (file_server --naive on --naive-backend: a
blocking pread of each chunk on the loop thread, the "before") and weft on each backend
of --backends (weft::file / weft::send_file, the "after").

nginx: Debian's nginx (installed with apt-get if missing) and file_server on uring and
epoll_et (plus any --backends given), each pinned to CPU 0, serving small.4k (4 KiB) and
big.1m (1 MiB) to `wrk -t1 -cCONNS` pinned to CPU 1. Requests per second from wrk, and
server CPU per request: utime + stime of the server process (all threads) from
/proc/PID/stat over the wrk run, divided by the requests. nginx runs with
`master_process off`, so its PID is the one worker. --reps repetitions, the order of the
servers rotating between them; medians.

Outputs in --out (default build/file-bench): REPORT.md (tables and method),
results.json (every run's raw numbers), and plots (PNG and SVG) when python3-matplotlib
is importable. The files served are written into OUT/www at run time and removed at the
end (--keep-files keeps them). Only processes the runner started are stopped, by PID;
every wait has a deadline. Exit status 1 if any run failed: an error, zero requests, or
a server that ended other than with status 0 on SIGTERM (nginx: also by SIGTERM itself).
"""

import argparse
import datetime
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "default"
ALL_BACKENDS = ["select", "poll", "epoll_lt", "epoll_et", "sigio", "spin", "blocking", "uring"]
NGINX_BACKENDS = ["uring", "epoll_et"]
HZ = os.sysconf("SC_CLK_TCK")
CLIENT_BOUND_BELOW = 90.0  # server CPU% under which a run is marked client-bound
SMALL_BYTES = 2048


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ files

def pattern_block_filler():
    return bytes(((i * 131 + 7) & 0xFF) for i in range(4096))


def write_pattern(path, size):
    """The pattern file_load --verify checks: block k of 4096 bytes starts with k*4096 as
    a little-endian u64; byte i >= 8 of a block is (i*131+7) & 0xff."""
    filler = pattern_block_filler()[8:]
    step = 1 << 20
    with open(path, "wb") as f:
        for off in range(0, size, step):
            end = min(off + step, size)
            chunk = b"".join(struct.pack("<Q", o) + filler for o in range(off, end, 4096))
            f.write(chunk[:end - off])
    os.chmod(path, 0o644)


def make_root(root, files):
    """files: {name: size}. Rewrites only what is missing or of another size."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for name, size in files.items():
        p = root / name
        if not p.exists() or p.stat().st_size != size:
            log(f"   writing {p} ({size:,} bytes)")
            write_pattern(p, size)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        sys.exit(f"error: --drop-caches: cannot write /proc/sys/vm/drop_caches ({e.strerror}); it needs root")


# ------------------------------------------------------------------------------ processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Server:
    """A started server (file_server or nginx), pinned to CPU 0 through taskset, which
    execs it: the PID is the server's own."""

    def __init__(self, name, argv, port=None, startup=15.0, cwd=None):
        self.name = name
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=self.out, stderr=self.err,
                                     stdin=subprocess.DEVNULL, cwd=cwd)
        self.pid = self.proc.pid
        self.port = None
        deadline = time.monotonic() + startup
        while time.monotonic() < deadline:
            if port is None:
                m = re.search(r"^listening on (\S+):(\d+)\s*$", self.stdout(), re.M)
                if m:
                    self.port = int(m.group(2))
                    return
            elif port_open(port):
                self.port = port
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        err = self.stderr().strip().splitlines()
        status = self.proc.poll()
        self.stop(5)
        why = err[-1] if err else ("no 'listening on HOST:PORT' line on stdout" if port is None
                                   else f"port {port} never accepted a connection")
        raise RuntimeError(f"{name} did not start within {startup:.0f} s"
                           + (f" (exit status {status})" if status is not None else "") + f": {why}")

    def stdout(self):
        self.out.seek(0)
        return self.out.read()

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def ticks(self):
        """utime + stime of all the process's threads, in clock ticks (None once the
        process is gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(fields[11]) + int(fields[12])

    def stop(self, timeout=15.0):
        """SIGTERM, then waits; returns the exit status, or "killed" (SIGKILL after the
        timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return "killed"
        return self.proc.returncode


def run_with_lines(argv, timeout, on_line):
    """Runs argv, calling on_line(line) for each stdout line as it arrives; returns
    (exit status, stdout, stderr). Killed (by PID) when the deadline passes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    out, err, pending = b"", b"", b""
    deadline = time.monotonic() + timeout
    timed_out = False
    open_pipes = 2
    while open_pipes:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(min(left, 1.0)):
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                continue
            if key.data == "err":
                err += data
                continue
            out += data
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                on_line(line.decode(errors="replace"))
    sel.close()
    if timed_out:
        proc.kill()
        proc.wait(10)
        return "timeout", out.decode(errors="replace"), err.decode(errors="replace")
    try:
        rc = proc.wait(max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        rc = "timeout"
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def last_line(text, default="no output"):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else default


# ------------------------------------------------------------------------------ nginx

def ensure_package(binary, package):
    if shutil.which(binary):
        return None
    log(f"== {binary} is missing: apt-get install {package}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True, env=env,
                       timeout=900)
    if r.returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
        r = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True,
                           env=env, timeout=900)
    if r.returncode != 0 or not shutil.which(binary):
        return f"apt-get install {package} failed: {last_line(r.stderr or r.stdout)}"
    return None


def nginx_binary():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_version():
    r = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True)
    return last_line(r.stderr, "?").replace("nginx version: ", "")


class Nginx(Server):
    """nginx with a generated configuration in a temporary directory: one process
    (master_process off), nothing read or written under /etc or /var."""

    def __init__(self, root, conns):
        self.tmp = tempfile.TemporaryDirectory(prefix="file-bench-nginx-")
        t = Path(self.tmp.name)
        port = free_port()
        built = subprocess.run([nginx_binary(), "-V"], capture_output=True, text=True).stderr
        temps = [f"    client_body_temp_path {t}/client_body;"]
        for module in ("proxy", "fastcgi", "uwsgi", "scgi"):
            if f"--without-http_{module}_module" not in built:
                temps.append(f"    {module}_temp_path {t}/{module};")
        self.conf = t / "nginx.conf"
        self.conf.write_text("\n".join([
            "worker_processes 1;",
            "daemon off;",
            "master_process off;",
            f"pid {t}/nginx.pid;",
            f"error_log {t}/error.log warn;",
            f"events {{ worker_connections {max(1024, 2 * conns + 64)}; }}",
            "http {",
            "    access_log off;",
            *temps,
            "    sendfile on;",
            "    tcp_nopush on;",
            "    tcp_nodelay on;",
            "    keepalive_requests 1000000;",
            "    keepalive_timeout 300s;",
            "    types { text/plain txt; }",
            "    default_type application/octet-stream;",
            "    server {",
            f"        listen 127.0.0.1:{port} backlog=4096;",
            f"        root {root};",
            "    }",
            "}",
            ""]))
        super().__init__("nginx", [nginx_binary(), "-p", f"{t}/", "-c", str(self.conf), "-e", f"{t}/error.log"],
                         port=port, cwd=str(t))

    def stderr(self):
        text = super().stderr()
        log_file = Path(self.tmp.name) / "error.log"
        if log_file.exists():
            text += log_file.read_text(errors="replace")
        return text

    def cleanup(self):
        self.tmp.cleanup()


def start_server(kind, args, root, backend=None, naive=False):
    if kind == "nginx":
        return Nginx(root, args.conns)
    argv = [str(args.server), "--root", str(root), "--listen", "127.0.0.1:0", "--backend", backend]
    if naive:
        argv.append("--naive")
    return Server(f"file_server {backend}{' --naive' if naive else ''}", argv)


def describe_status(status):
    if isinstance(status, int) and status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def stop_server(srv, run):
    died = srv.proc.poll()
    status = srv.stop()
    run["exit_status"] = status
    if isinstance(srv, Nginx):
        srv.cleanup()
        ok = died is None and status in (0, None, -signal.SIGTERM)
    else:
        ok = died is None and status in (0, None)
    if not ok:
        # Kept apart from "error": the run's figures stand, but the run still counts as failed.
        when = "before it was sent SIGTERM" if died is not None else "on SIGTERM"
        run["shutdown_error"] = (f"server ended {when} ({describe_status(status)}): "
                                 f"{last_line(srv.stderr(), 'nothing on stderr')}")


def problem(run):
    """Why a run failed, or None."""
    return run.get("error") or run.get("shutdown_error")


# ------------------------------------------------------------------------------ stutter

def stutter_variants(args):
    out = []
    if args.naive_backend != "none":
        out.append({"name": "naive", "kind": "file_server", "backend": args.naive_backend, "naive": True,
                    "about": f"file_server --naive on {args.naive_backend}: blocking pread of each chunk on the "
                    "loop thread"})
    for b in args.backends:
        out.append({"name": b, "kind": "file_server", "backend": b, "naive": False,
                    "about": "weft::file (io_uring read) + send_file (io_uring splice)" if b == "uring" else
                    "weft::file (blocking call on the task's thread) + send_file (sendfile)" if b == "blocking" else
                    "weft::file (worker pool) + send_file (sendfile)"})
    if args.with_nginx:
        out.append({"name": "nginx", "kind": "nginx", "backend": None, "naive": False,
                    "about": "Debian's nginx, one process, sendfile on"})
    return out


def stutter_run(args, variant, root, big, warmup):
    run = {"variant": variant["name"], "backend": variant["backend"], "naive": variant["naive"]}
    if args.drop_caches:
        drop_caches()
    try:
        srv = start_server(variant["kind"], args, root, variant["backend"], variant["naive"])
    except RuntimeError as e:
        run["error"] = str(e)
        return run
    try:
        cmd = ["taskset", "-c", "1", str(args.load), "--host", "127.0.0.1", "--port", str(srv.port),
               "--stream-path", "/big.bin", "--streams", str(args.streams), "--small-path", "/small.txt",
               "--small-clients", str(args.small_clients), "--seconds", str(args.stutter_seconds),
               "--warmup", str(warmup), "--stream-bytes", str(big), "--small-bytes", str(SMALL_BYTES)]
        if args.verify:
            cmd.append("--verify")
        run["load_cmd"] = " ".join(cmd)
        marks = {}

        def on_line(line):
            if line.startswith("window"):
                marks["t0"], marks["w0"] = srv.ticks(), time.monotonic()
            elif line.startswith("small_requests="):
                marks["t1"], marks["w1"] = srv.ticks(), time.monotonic()
                marks["line"] = line

        rc, _, err = run_with_lines(cmd, args.stutter_seconds + warmup + 60, on_line)
        if rc != 0 or "line" not in marks or "t0" not in marks:
            time.sleep(0.2)
            dead = srv.proc.poll()
            run["error"] = f"file_load exited with {rc}: {last_line(err)}" + (
                f" (the server had ended: {describe_status(dead)})" if dead is not None else "")
            return run
        if marks["t0"] is None or marks["t1"] is None:
            run["error"] = "the server ended during the measured window"
            return run
        run.update({k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", marks["line"])})
        window = max(marks["w1"] - marks["w0"], 1e-9)
        run["server_cpu_pct"] = 100.0 * (marks["t1"] - marks["t0"]) / HZ / window
        if run.get("small_requests", 0) <= 0:
            run["error"] = "no small request completed in the measured window"
        elif run.get("stream_responses", 0) <= 0 and run.get("stream_bytes", 0) <= 0:
            run["error"] = "the streams received nothing in the measured window"
        return run
    finally:
        stop_server(srv, run)


def stutter_part(args, root, big, results):
    variants = stutter_variants(args)
    warmup = 0.0 if args.drop_caches else args.warmup
    runs = []
    for rep in range(args.stutter_reps):
        k = rep % len(variants)
        for v in variants[k:] + variants[:k]:
            log(f"== stutter rep {rep + 1}/{args.stutter_reps}: {v['name']}")
            r = stutter_run(args, v, root, big, warmup)
            r["rep"] = rep
            runs.append(r)
            if r.get("error"):
                log(f"   FAILED: {r['error']}")
            else:
                if r.get("shutdown_error"):
                    log(f"   FAILED at shutdown: {r['shutdown_error']}")
                log(f"   small p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs, p99.9 {r['p999_us']:.0f} µs, "
                    f"max {r['max_us']:.0f} µs; streams {r['stream_MiB_s']:.0f} MiB/s; "
                    f"server CPU {r['server_cpu_pct']:.0f}%")
    summary = []
    keys = ["small_requests", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us", "stream_MiB_s",
            "stream_responses", "server_cpu_pct", "client_cpu_pct"]
    for v in variants:
        mine = [r for r in runs if r["variant"] == v["name"]]
        ok = [r for r in mine if not r.get("error")]
        row = {"variant": v["name"], "about": v["about"], "runs": len(mine), "failed": len(mine) - len(ok),
               "errors": [r["error"] for r in mine if r.get("error")],
               "shutdown_errors": [r["shutdown_error"] for r in mine if r.get("shutdown_error")]}
        for key in keys:
            vals = [r[key] for r in ok if key in r]
            row[key] = statistics.median(vals) if vals else None
        summary.append(row)
    results["stutter"] = {"runs": runs, "summary": summary, "warmup": warmup, "seconds": args.stutter_seconds,
                          "streams": args.streams, "small_clients": args.small_clients, "big_bytes": big,
                          "small_bytes": SMALL_BYTES, "reps": args.stutter_reps, "drop_caches": args.drop_caches}
    return runs


# ------------------------------------------------------------------------------ nginx vs weft

def parse_duration_us(text):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([0-9.]+)(\w+), ([0-9.]+)(\w+) read", out)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = parse_duration_us(m.group(2) + m.group(3)) / 1e6
        r["read_bytes"] = float(m.group(4)) * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3,
                                               "TB": 1024 ** 4}.get(m.group(5), 1)
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if m:
        r["req_per_s"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    for pct, key in (("50", "p50_us"), ("90", "p90_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            r[key] = parse_duration_us(m.group(1))
    return r


def wrk_cmd(args, port, path, seconds):
    return ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.conns}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]


def nginx_servers(args):
    names = list(args.nginx_backends)
    for b in (args.backends if args.backends_given else []):
        if b not in names:
            names.append(b)
    return [{"name": "nginx", "kind": "nginx", "backend": None}] + \
        [{"name": f"weft {b}", "kind": "file_server", "backend": b} for b in names]


NGINX_FILES = {"small.4k": 4096, "big.1m": 1 << 20}


def nginx_part(args, root, results):
    servers = nginx_servers(args)
    runs = []
    for rep in range(args.reps):
        k = rep % len(servers)
        for s in servers[k:] + servers[:k]:
            log(f"== nginx part rep {rep + 1}/{args.reps}: {s['name']}")
            base = {"server": s["name"], "backend": s["backend"], "rep": rep}
            try:
                srv = start_server(s["kind"], args, root, s["backend"])
            except RuntimeError as e:
                for f in NGINX_FILES:
                    runs.append(dict(base, file=f, error=str(e)))
                log(f"   FAILED: {e}")
                continue
            mine = []
            try:
                for f in NGINX_FILES:
                    run = dict(base, file=f)
                    mine.append(run)
                    if args.wrk_warmup > 0:
                        run_with_lines(wrk_cmd(args, srv.port, "/" + f, args.wrk_warmup), args.wrk_warmup + 30,
                                       lambda line: None)
                    if srv.proc.poll() is not None:
                        run["error"] = (f"the server had ended before this run ({describe_status(srv.proc.returncode)})"
                                        f": {last_line(srv.stderr(), 'nothing on stderr')}")
                        break
                    cmd = wrk_cmd(args, srv.port, "/" + f, args.wrk_seconds)
                    run["wrk_cmd"] = " ".join(cmd)
                    t0, w0 = srv.ticks(), time.monotonic()
                    rc, out, err = run_with_lines(cmd, args.wrk_seconds + 60, lambda line: None)
                    t1, w1 = srv.ticks(), time.monotonic()
                    run.update(parse_wrk(out))
                    if rc != 0 or "requests" not in run:
                        time.sleep(0.2)
                        dead = srv.proc.poll()
                        run["error"] = f"wrk exited with {rc}: {last_line(err or out)}" + (
                            f" (the server had ended: {describe_status(dead)})" if dead is not None else "")
                        continue
                    if t0 is None or t1 is None:
                        run["error"] = "the server ended during the run"
                        continue
                    cpu = (t1 - t0) / HZ
                    run["server_cpu_pct"] = 100.0 * cpu / max(w1 - w0, 1e-9)
                    run["cpu_us_per_req"] = cpu * 1e6 / max(run["requests"], 1)
                    if run["requests"] == 0:
                        run["error"] = "zero requests"
                    elif run["socket_errors"] or run["non_2xx"]:
                        run["error"] = (f"wrk saw {run['socket_errors']} socket errors and {run['non_2xx']} "
                                        "non-2xx/3xx responses")
                    log(f"   {f}: {run.get('req_per_s', 0):,.0f} req/s, {run['cpu_us_per_req']:.2f} µs CPU/req, "
                        f"server CPU {run['server_cpu_pct']:.0f}%" + (f"  FAILED: {run['error']}" if run.get("error")
                                                                      else ""))
            finally:
                holder = {}
                stop_server(srv, holder)
                for run in mine:
                    run["exit_status"] = holder.get("exit_status")
                    if holder.get("shutdown_error"):
                        run["shutdown_error"] = holder["shutdown_error"]
                if holder.get("shutdown_error"):
                    log(f"   FAILED at shutdown: {holder['shutdown_error']}")
            runs.extend(mine)
    summary = []
    for s in servers:
        for f in NGINX_FILES:
            mine = [r for r in runs if r["server"] == s["name"] and r["file"] == f]
            ok = [r for r in mine if not r.get("error")]
            row = {"server": s["name"], "file": f, "runs": len(mine), "failed": len(mine) - len(ok),
                   "errors": [r["error"] for r in mine if r.get("error")],
                   "shutdown_errors": [r["shutdown_error"] for r in mine if r.get("shutdown_error")]}
            for key in ("req_per_s", "cpu_us_per_req", "server_cpu_pct", "p50_us", "p99_us"):
                vals = [r[key] for r in ok if r.get(key) is not None]
                row[key] = statistics.median(vals) if vals else None
            summary.append(row)
    for row in summary:
        ref = next((r for r in summary if r["server"] == "nginx" and r["file"] == row["file"]), None)
        ok = ref and ref["req_per_s"] and row["req_per_s"]
        row["rate_vs_nginx"] = row["req_per_s"] / ref["req_per_s"] if ok else None
        ok = ref and ref["cpu_us_per_req"] and row["cpu_us_per_req"]
        row["cpu_vs_nginx"] = row["cpu_us_per_req"] / ref["cpu_us_per_req"] if ok else None
    results["nginx"] = {"runs": runs, "summary": summary, "nginx_version": nginx_version(), "conns": args.conns,
                        "seconds": args.wrk_seconds, "warmup": args.wrk_warmup, "reps": args.reps,
                        "files": NGINX_FILES}
    return runs


# ------------------------------------------------------------------------------ report

def fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def stutter_table(summary):
    lines = ["| variant | file IO | small req | p50 µs | p99 µs | p99.9 µs | max µs | streams MiB/s | "
             "server CPU % | load CPU % |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        if r["failed"] == r["runs"]:
            lines.append(f"| {r['variant']} | {r['about']} | **failed**: {r['errors'][0]} | | | | | | | |")
            continue
        note = f" ({r['failed']} of {r['runs']} runs failed)" if r["failed"] else ""
        note += " †" if r["shutdown_errors"] else ""
        lines.append(f"| {r['variant']}{note} | {r['about']} | {fmt(r['small_requests'], 0)} | {fmt(r['p50_us'], 0)} "
                     f"| {fmt(r['p99_us'], 0)} | {fmt(r['p999_us'], 0)} | {fmt(r['max_us'], 0)} | "
                     f"{fmt(r['stream_MiB_s'], 0)} | {fmt(r['server_cpu_pct'], 0)} | {fmt(r['client_cpu_pct'], 0)} |")
    return "\n".join(lines)


def nginx_table(summary):
    lines = ["| server | file | req/s | server CPU µs/req | server CPU % | p50 µs | p99 µs | req/s vs nginx | "
             "CPU/req vs nginx |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        if r["failed"] == r["runs"]:
            lines.append(f"| {r['server']} | {r['file']} | **failed**: {r['errors'][0] if r['errors'] else '?'} "
                         "| | | | | | |")
            continue
        bound = "*" if r["server_cpu_pct"] is not None and r["server_cpu_pct"] < CLIENT_BOUND_BELOW else ""
        note = f" ({r['failed']} of {r['runs']} runs failed)" if r["failed"] else ""
        note += " †" if r["shutdown_errors"] else ""
        ratio = lambda v: f"{v:.2f}×" if v is not None else "–"  # noqa: E731
        lines.append(f"| {r['server']}{note} | {r['file']} | {fmt(r['req_per_s'], 0)}{bound} | "
                     f"{fmt(r['cpu_us_per_req'], 2)} | {fmt(r['server_cpu_pct'], 0)} | {fmt(r['p50_us'], 0)} | "
                     f"{fmt(r['p99_us'], 0)} | {ratio(r['rate_vs_nginx'])} | {ratio(r['cpu_vs_nginx'])} |")
    return "\n".join(lines)


def mem_total_bytes():
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def render_report(args, started, results, plots, plot_note):
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, shell=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'") or platform.processor()
    mem = mem_total_bytes()
    lines = ["# weft static files: stutter and nginx comparison", "",
             f"Produced by `python3 benchmarks/file_bench.py {' '.join(sys.argv[1:])}`".rstrip() +
             f" on {started:%Y-%m-%d %H:%M} UTC" + (" (--quick: a smoke run, not a measurement)" if args.quick else "")
             + ".", "",
             "## Machine", "",
             f"- CPU: {cpu}, {os.cpu_count()} CPUs; servers pinned to CPU 0 (`taskset -c 0`), load to CPU 1",
             f"- memory: {mem / 2 ** 30:.1f} GiB" if mem else "- memory: ?",
             f"- kernel: {platform.release()}",
             f"- OS: {sh('. /etc/os-release && echo $PRETTY_NAME')}",
             f"- file_server: `{args.server}`; file_load: `{args.load}`", ""]
    st = results.get("stutter")
    if st:
        big = st["big_bytes"]
        cached = mem and mem > 4 * big
        lines += ["## Stutter: small requests next to big downloads", "",
                  f"{st['streams']} connections download `big.bin` ({big / 2 ** 20:,.0f} MiB) over and over on "
                  f"keep-alive connections, discarding the bodies (`recv(MSG_TRUNC)`), while {st['small_clients']} "
                  f"connections each GET `small.txt` ({st['small_bytes']:,} B), wait for the whole response and ask "
                  f"again. `file_load` measures each small request from its send to its last body byte "
                  f"(CLOCK_MONOTONIC) and handles the small connections first in every turn of its loop. Each run: "
                  f"{st['warmup']:g} s warm-up, then {st['seconds']:g} s measured; "
                  f"{st['reps']} run(s) per variant" + (", the order rotating, medians" if st["reps"] > 1 else "") +
                  ". Percentiles are over the small requests completed in the measured window; max also covers the "
                  "requests still waiting when it closes (their age then), so a starved client shows. Server CPU % "
                  "is utime + stime of all the server's threads over the measured window. The server runs on CPU 0 "
                  "and the load on CPU 1, but nothing keeps other work off those CPUs: on a shared machine the tails "
                  "include the scheduler's time slices.", ""]
        if st["drop_caches"]:
            lines += ["`--drop-caches`: before each variant the runner wrote 3 to `/proc/sys/vm/drop_caches` and "
                      "there was no warm-up, so the first pass of each stream over `big.bin` reads the disk; the "
                      "later passes find the file in the page cache.", ""]
        elif cached:
            lines += [f"Page cache: the machine has {mem / 2 ** 30:.0f} GiB of memory, so `big.bin` stays in the page "
                      "cache after the runner writes it and no run reads the disk. The naive variant's stall is "
                      "therefore not disk latency: it is the time the loop thread spends in each blocking `pread` "
                      "copying a chunk out of the page cache, plus everything the loop does not do meanwhile "
                      "(one connection's chunk is read and written while every other connection, the small ones "
                      "included, waits). `--drop-caches` (root) shows the cold-cache case.", ""]
        lines += [stutter_table(st["summary"]), ""]
        naive = next((r for r in st["summary"] if r["variant"] == "naive" and r["p99_us"]), None)
        best = [r for r in st["summary"] if r["variant"] not in ("naive", "nginx") and r["p99_us"]]
        if naive and best:
            b = min(best, key=lambda r: r["p99_us"])
            ratio = naive["p99_us"] / b["p99_us"]
            lines += [f"Small-request p99: naive {naive['p99_us']:,.0f} µs; best weft backend `{b['variant']}` "
                      f"{b['p99_us']:,.0f} µs (" + (f"{ratio:.1f}× lower" if ratio >= 1 else
                                                    f"{1 / ratio:.1f}× higher") + ").", ""]
    ng = results.get("nginx")
    if ng:
        lines += ["## Against nginx", "",
                  f"nginx {ng['nginx_version']} (Debian's package) with a generated configuration: "
                  "`worker_processes 1; master_process off; daemon off; sendfile on; tcp_nopush on; tcp_nodelay on; "
                  "keepalive_requests 1000000; access_log off;`, every path in a temporary directory. "
                  f"`wrk -t1 -c{ng['conns']} -d{ng['seconds']}s --latency` pinned to CPU 1" +
                  (f", after a {ng['warmup']} s warm-up run of wrk per file" if ng["warmup"] else "") +
                  f"; {ng['reps']} repetition(s), the order of the servers rotating, medians. "
                  "Server CPU per request is "
                  "utime + stime of the server process (all threads, io_uring workers included) from "
                  "`/proc/PID/stat` over the wrk run, divided by wrk's request count. A rate marked `*` had the "
                  f"server below {CLIENT_BOUND_BELOW:.0f}% CPU: there wrk set the pace (or, on a shared machine, the "
                  "server waited for its CPU), and CPU per request is the figure to compare. With `big.1m` wrk "
                  "copies every body (about 1 GiB/s on one CPU), so that file is client-bound for every server.", "",
                  nginx_table(ng["summary"]), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p}.png) ([SVG]({p}.svg))" for p in plots] + [""]
    elif plot_note:
        lines += [f"Plots: {plot_note}.", ""]
    errors = [(r.get("variant") or f"{r.get('server')} {r.get('file')}", r.get("rep", 0) + 1, problem(r))
              for part in ("stutter", "nginx") for r in results.get(part, {}).get("runs", []) if problem(r)]
    if errors:
        lines += ["## Failed runs", "",
                  "A run whose server failed only at shutdown keeps its figures in the tables (marked †); the "
                  "runner still exits 1.", ""] + [f"- {who} (rep {rep}): {why}" for who, rep, why in errors] + [""]
    lines += ["## Reproduce", "", "```sh",
              f"python3 benchmarks/file_bench.py {' '.join(sys.argv[1:])}".rstrip()]
    for part in ("stutter", "nginx"):
        for r in results.get(part, {}).get("runs", [])[:1]:
            if r.get("load_cmd"):
                lines.append("# one stutter run's load: " + r["load_cmd"])
            if r.get("wrk_cmd"):
                lines.append("# one wrk run: " + r["wrk_cmd"])
    lines += ["```", ""]
    return "\n".join(lines)


def make_plots(out, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "skipped, python3-matplotlib is not installed"
    names = []
    st = results.get("stutter")
    if st:
        rows = [r for r in st["summary"] if r["p50_us"] is not None]
        if rows:
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
            xs = range(len(rows))
            w = 0.27
            for i, (key, label) in enumerate((("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))):
                ax1.bar([x + (i - 1) * w for x in xs], [r[key] for r in rows], w, label=label)
            ax1.set_yscale("log")
            ax1.set_ylabel("µs")
            ax1.set_title("small-request latency while streaming")
            ax2.bar(list(xs), [r["stream_MiB_s"] or 0 for r in rows], 0.6, color="tab:gray")
            ax2.set_ylabel("MiB/s")
            ax2.set_title("stream throughput")
            for ax in (ax1, ax2):
                ax.set_xticks(list(xs))
                ax.set_xticklabels([r["variant"] for r in rows], rotation=30, ha="right")
                ax.grid(True, axis="y", which="both", alpha=0.3)
            ax1.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(out / "plot_stutter.png", dpi=110)
            fig.savefig(out / "plot_stutter.svg")
            plt.close(fig)
            names.append("plot_stutter")
    ng = results.get("nginx")
    if ng:
        rows = [r for r in ng["summary"] if r["req_per_s"] is not None]
        files = [f for f in ng["files"] if any(r["file"] == f for r in rows)]
        servers = list(dict.fromkeys(r["server"] for r in rows))
        if rows:
            fig, axes = plt.subplots(2, len(files), figsize=(5.5 * len(files), 7), squeeze=False)
            colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            for col, f in enumerate(files):
                for row, (key, title) in enumerate((("req_per_s", "requests per second"),
                                                    ("cpu_us_per_req", "server CPU µs per request"))):
                    ax = axes[row][col]
                    vals = [next((r[key] for r in rows if r["server"] == s and r["file"] == f), None) or 0
                            for s in servers]
                    ax.bar(range(len(servers)), vals, 0.6, color=[colors[i % len(colors)] for i in range(len(servers))])
                    ax.set_xticks(range(len(servers)))
                    ax.set_xticklabels(servers, rotation=20, ha="right")
                    ax.set_title(f"{title}, {f}")
                    ax.grid(True, axis="y", alpha=0.3)
            fig.tight_layout()
            fig.savefig(out / "plot_nginx.png", dpi=110)
            fig.savefig(out / "plot_nginx.svg")
            plt.close(fig)
            names.append("plot_nginx")
    return names, None


# ------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", type=Path, default=BUILD / "examples/file_server", help="file_server binary")
    ap.add_argument("--load", type=Path, default=BUILD / "benchmarks/file_load", help="file_load binary")
    ap.add_argument("--parts", default="stutter,nginx", help="comma-separated: stutter,nginx (default both)")
    ap.add_argument("--backends", help="comma-separated weft backends for the stutter part (default all eight; "
                    "'none' for no weft variant); the nginx part adds them to uring,epoll_et")
    ap.add_argument("--nginx-backends", default=",".join(NGINX_BACKENDS),
                    help="weft backends of the nginx part (default uring,epoll_et; 'none' for nginx alone)")
    ap.add_argument("--naive-backend", default="epoll_et", help="backend of the naive variant (default epoll_et; "
                    "'none' leaves the naive variant out)")
    ap.add_argument("--with-nginx", action="store_true", help="also run nginx as a stutter variant (a reference)")
    ap.add_argument("--seconds", type=float, help="measured seconds per run, both parts (sets --stutter-seconds "
                    "and --wrk-seconds)")
    ap.add_argument("--stutter-seconds", type=float, default=14, help="measured seconds per stutter run (14)")
    ap.add_argument("--warmup", type=float, default=1, help="warm-up seconds per stutter run (1)")
    ap.add_argument("--stutter-reps", type=int, default=1, help="runs per stutter variant (1)")
    ap.add_argument("--streams", type=int, default=4, help="stream connections (4)")
    ap.add_argument("--small-clients", type=int, default=4, help="small-request connections (4)")
    ap.add_argument("--big-mib", type=int, default=256, help="size of big.bin in MiB (256)")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before each stutter variant "
                    "(root; no warm-up then)")
    ap.add_argument("--verify", action="store_true", help="file_load --verify: check every body byte")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the nginx part (3)")
    ap.add_argument("--wrk-seconds", type=int, default=5, help="seconds per wrk run (5)")
    ap.add_argument("--wrk-warmup", type=int, default=1, help="seconds of an unmeasured wrk run before each (1)")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "file-bench", help="output directory")
    ap.add_argument("--keep-files", action="store_true", help="keep OUT/www (the files served) afterwards")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: small files, 1 s runs, 1 rep, "
                    "epoll_et and uring; exit 1 on any error or zero requests")
    args = ap.parse_args()

    args.backends_given = args.backends is not None
    if args.backends == "none":
        args.backends = []
    else:
        args.backends = [b for b in args.backends.split(",") if b] if args.backends else list(ALL_BACKENDS)
    args.nginx_backends = [] if args.nginx_backends == "none" else [b for b in args.nginx_backends.split(",") if b]
    bad = [b for b in args.backends + args.nginx_backends if b not in ALL_BACKENDS]
    if args.naive_backend not in ALL_BACKENDS + ["none"]:
        bad.append(args.naive_backend)
    if bad:
        sys.exit(f"error: unknown backend(s) {', '.join(bad)}; known: {', '.join(ALL_BACKENDS)}")
    parts = [p for p in args.parts.split(",") if p]
    if any(p not in ("stutter", "nginx") for p in parts):
        sys.exit("error: --parts takes stutter and/or nginx")
    if args.quick:
        if not args.backends_given:
            args.backends = ["epoll_et", "uring"]
        args.big_mib = min(args.big_mib, 8)
        args.stutter_seconds, args.warmup, args.stutter_reps = 1, 0.3, 1
        args.reps, args.wrk_seconds, args.wrk_warmup = 1, 1, 0
        args.verify = True
    if args.seconds is not None:
        args.stutter_seconds = args.seconds
        args.wrk_seconds = max(1, round(args.seconds))
    args.server, args.load = args.server.resolve(), args.load.resolve()
    missing = []
    needs_server = ("nginx" in parts and len(nginx_servers(args)) > 1) or \
        ("stutter" in parts and (args.backends or args.naive_backend != "none"))
    if needs_server and not args.server.exists():
        missing.append(f"{args.server} (cmake --build --preset default --target file_server)")
    if "stutter" in parts and not args.load.exists():
        missing.append(f"{args.load} (cmake --build --preset default --target file_load)")
    if missing:
        sys.exit("error: missing " + "; ".join(missing))
    if not shutil.which("taskset"):
        sys.exit("error: taskset (util-linux) is needed to pin the server and the load")

    if "stutter" in parts and not stutter_variants(args):
        sys.exit("error: the stutter part has no variant (--backends none, --naive-backend none, no --with-nginx)")
    problems = []
    needs = []
    if "nginx" in parts or ("stutter" in parts and args.with_nginx):
        needs.append(("nginx", "nginx"))
    if "nginx" in parts:
        needs.append(("wrk", "wrk"))
    if needs:
        for binary, package in needs:
            why = ensure_package(binary, package) if binary != "nginx" or not nginx_binary() else None
            if why:
                problems.append(why)
        if problems:
            sys.exit("error: " + "; ".join(problems))

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / "www"
    big = args.big_mib << 20
    files = {"small.txt": SMALL_BYTES, **NGINX_FILES}
    if "stutter" in parts or args.with_nginx:
        files["big.bin"] = big
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"== writing the files served into {root}")
    make_root(root, files)

    results = {"started": started.isoformat(), "argv": sys.argv[1:], "server": str(args.server),
               "load": str(args.load), "machine": {"cpus": os.cpu_count(), "mem_bytes": mem_total_bytes(),
                                                   "kernel": platform.release()}}
    all_runs = []
    try:
        if "stutter" in parts:
            all_runs += stutter_part(args, root, big, results)
        if "nginx" in parts:
            all_runs += nginx_part(args, root, results)
    finally:
        if not args.keep_files:
            shutil.rmtree(root, ignore_errors=True)

    plots, plot_note = make_plots(out, results)
    if plot_note:
        log(f"plots {plot_note}")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report = render_report(args, started, results, plots, plot_note)
    (out / "REPORT.md").write_text(report)
    print(report)
    failed = [r for r in all_runs if problem(r)]
    log(f"== wrote {out / 'REPORT.md'} and {out / 'results.json'}")
    if failed:
        log(f"error: {len(failed)} of {len(all_runs)} runs failed:")
        for r in failed:
            log(f"   {r.get('variant') or r.get('server') + ' ' + r.get('file', '')}: {problem(r)}")
        return 1
    if not all_runs:
        log("error: nothing ran")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
