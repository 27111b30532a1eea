#!/usr/bin/env python3
"""The backend comparison: every weft backend against Asio, libuv, Tokio and two
hand-written C baselines, on a loopback echo.

    python3 benchmarks/run.py            # quick: a few cells, prints the table (< 5 min)
    python3 benchmarks/run.py --full     # the whole matrix, memory, callgrind, compile time

Each server is pinned to CPU 0 and the load generator (benchmarks/echo_load) to CPU 1.
For every cell (connections x message size x pipeline depth) the servers run in an
order that rotates between repetitions, and the medians are reported. Per cell and
server the runner records:
  - msgs/s and p50/p99/p99.9 latency (from echo_load);
  - server CPU per message, split into user and system: utime and stime of all the
    server's threads from /proc/PID/stat, read when echo_load opens its measured window
    and again when it closes it, divided by the messages of that window; the server's
    CPU% over the window, and echo_load's own (a cell whose server is below 90% is
    marked client-bound: the load generator, not the server, set the pace);
  - syscalls per message, from separate counted runs: `perf stat -e
    raw_syscalls:sys_enter` attached to a fresh server (0.3 s before the load starts)
    until the load ends, for two fixed message counts; the difference of the counts
    over the difference of the messages leaves out start-up and accepts;
  - for weft servers, heap allocations per message, the same way (echo_server_counting).
With --full also: server RSS per idle connection at 10,000 idle connections,
user-space instructions per message under callgrind (again two fixed counts), and the
compile time and binary size of examples/upper_echo_server.cpp against the Asio peer.

Outputs in --out (default build/bench, or benchmarks/results with --full): runs.csv
(every run), results.csv (medians), REPORT.md, and plots (PNG and SVG) when
python3-matplotlib is installed. Servers are stopped by PID with SIGTERM; the runner
kills nothing it did not start.
"""

import argparse
import csv
import datetime
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "default"
TOKIO_BUILD = ROOT / "build" / "tokio"

# Peers: report name -> (CMake target or None, binary, what they are).
PEERS = {
    "c_epoll": ("c_epoll_echo", BUILD / "benchmarks/peers/c_epoll_echo",
                "hand-written C, edge-triggered epoll, short read = drained"),
    "c_uring": ("c_uring_echo", BUILD / "benchmarks/peers/c_uring_echo",
                "hand-written C, liburing: multishot accept + recv, buffer ring, DEFER_TASKRUN"),
    "asio": ("asio_echo", BUILD / "benchmarks/peers/asio_echo", "standalone Asio, C++20 coroutines, epoll reactor"),
    "asio_uring": ("asio_uring_echo", BUILD / "benchmarks/peers/asio_uring_echo",
                   "standalone Asio, C++20 coroutines, ASIO_HAS_IO_URING + ASIO_DISABLE_EPOLL"),
    "libuv": ("uv_echo", BUILD / "benchmarks/peers/uv_echo", "libuv, default loop (epoll)"),
    "tokio": (None, TOKIO_BUILD / "release/tokio_echo", "Tokio, current-thread runtime"),
}
# The cells the targets are judged on (server-bound: the load generator keeps up).
TARGET_CELLS = [(64, 64, 1), (64, 64, 16), (1000, 64, 1), (1000, 64, 16)]
FULL_CELLS = [(c, s, d) for c in (1, 64, 1000, 10000) for s in (64, 4096) for d in (1, 16)]
QUICK_CELLS = [(64, 64, 1), (1000, 64, 16)]
IDLE_CONNECTIONS = 10000
CLIENT_BOUND_BELOW = 90.0  # server CPU% under which a cell is marked client-bound
HZ = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- building

def build(only):
    """Builds echo_server, echo_load and every peer that can be built; returns
    {peer: reason} for the peers that cannot."""
    skipped = {}
    log("== building (cmake --preset default, Release)")
    conf = subprocess.run(["cmake", "--preset", "default"], cwd=ROOT, capture_output=True, text=True)
    if conf.returncode != 0:
        sys.exit("error: cmake configure failed:\n" + conf.stdout + conf.stderr)
    for m in re.finditer(r"peer (\S+) skipped: (.*)", conf.stdout + conf.stderr):
        for name, (target, _, _) in PEERS.items():
            if target == m.group(1):
                skipped[name] = m.group(2).strip()
    targets = ["echo_server", "echo_server_counting", "echo_load", "pingpong", "spread_burst"]
    for name, (target, _, _) in PEERS.items():
        if target and name not in skipped and wanted(name, only):
            targets.append(target)
    jobs = str(os.cpu_count() or 2)
    b = subprocess.run(["cmake", "--build", "--preset", "default", "-j", jobs, "--target", *targets], cwd=ROOT,
                       capture_output=True, text=True)
    if b.returncode != 0:
        # Build the weft programs alone, so a broken peer costs only that peer.
        log(b.stdout[-3000:] + b.stderr[-3000:])
        for t in targets:
            r = subprocess.run(["cmake", "--build", "--preset", "default", "-j", jobs, "--target", t], cwd=ROOT,
                               capture_output=True, text=True)
            if r.returncode != 0:
                if t in ("echo_server", "echo_server_counting", "echo_load"):
                    sys.exit(f"error: building {t} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
                for name, (target, _, _) in PEERS.items():
                    if target == t:
                        skipped[name] = f"build of {t} failed (cmake --build --preset default --target {t})"
    if wanted("tokio", only):
        log("== building the Tokio peer (cargo, offline, from Debian's crates)")
        r = subprocess.run(["bash", str(ROOT / "benchmarks/peers/tokio_echo/build.sh"), str(TOKIO_BUILD)],
                           capture_output=True, text=True)
        if r.returncode == 3:
            skipped["tokio"] = (r.stdout.strip().splitlines() or ["skipped"])[-1].removeprefix("skip: ")
        elif r.returncode != 0:
            log(r.stdout[-3000:] + r.stderr[-3000:])
            skipped["tokio"] = "cargo build failed (bash benchmarks/peers/tokio_echo/build.sh)"
    return skipped


def wanted(name, only):
    return not only or name in only


# ------------------------------------------------------------------------------ servers

class Server:
    """One echo server configuration: a weft backend or a peer."""

    def __init__(self, name, family, argv, counting_argv=None, fd_limit=None, about=""):
        self.name, self.family, self.argv = name, family, argv
        self.counting_argv = counting_argv
        self.fd_limit = fd_limit
        self.about = about

    def runs_cell(self, conns):
        """None if the server can hold `conns` connections, else why it cannot."""
        if self.fd_limit is not None and conns + 16 > self.fd_limit:
            return f"n/a: FD_SETSIZE (fds from {self.fd_limit} up are refused)"
        return None


def discover(only, skipped):
    servers = []
    out = subprocess.run([str(BUILD / "benchmarks/echo_server"), "--list"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        name, *rest = line.split()
        if not wanted(name, only):
            continue
        if "unavailable" in rest:
            skipped[name] = "not available on this machine (B::available() is false)"
            continue
        limit = None
        for kv in rest:
            if kv.startswith("fd_limit="):
                limit = int(kv.split("=", 1)[1])
        servers.append(Server(name, "weft", [str(BUILD / "benchmarks/echo_server"), "--backend", name],
                              [str(BUILD / "benchmarks/echo_server_counting"), "--backend", name], limit,
                              "weft, echo_server --api auto (receive())"))
    uring_off = "uring" in skipped or not any(s.name == "uring" for s in servers) and \
        "uring unavailable" in out.stdout
    for name, (_, binary, about) in PEERS.items():
        if not wanted(name, only):
            continue
        if name.endswith("uring") and uring_off:
            skipped[name] = "io_uring is not available on this machine"
            continue
        if name in skipped:
            continue
        if not binary.exists():
            skipped[name] = f"{binary.relative_to(ROOT)} was not built"
            continue
        servers.append(Server(name, "peer", [str(binary)], about=about))
    return servers


class Running:
    """A started server: its process, port and captured output."""

    def __init__(self, argv, wrap=(), startup=15.0, cpus="0"):
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        cmd = ["taskset", "-c", cpus, *wrap, *argv, "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid  # taskset execs the server (or valgrind): same PID
        self.port = None
        deadline = time.monotonic() + startup
        while time.monotonic() < deadline:
            m = re.search(r"^port (\d+)$", self.stdout(), re.M)
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        err = self.stderr().strip().splitlines()
        self.stop()
        raise RuntimeError(f"did not start: {err[-1] if err else 'no port line'}")

    def stdout(self):
        self.out.seek(0)
        return self.out.read()

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def ticks(self):
        """(utime, stime) of all the process's threads, in clock ticks."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self, timeout=20.0):
        """SIGTERM, then waits; returns the exit status (SIGKILL after the timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed"
        return self.proc.returncode


def parse_load(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


def load_cmd(port, conns, size, depth, *extra, cpus="1"):
    return ["taskset", "-c", cpus, str(BUILD / "benchmarks/echo_load"), "--port", str(port), "--connections",
            str(conns), "--size", str(size), "--depth", str(depth), *extra]


def timed_run(server, cell, seconds, warmup, server_cpus="0", load_cpus="1"):
    """One measured run; returns a dict of figures (and the server's stdout), or raises
    RuntimeError."""
    conns, size, depth = cell
    srv = Running(server.argv, cpus=server_cpus)
    try:
        cmd = load_cmd(srv.port, conns, size, depth, "--seconds", str(seconds), "--warmup", str(warmup),
                       cpus=load_cpus)
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = w0 = None
        result = None
        for line in load.stdout:
            if line.startswith("window"):
                t0, w0 = srv.ticks(), time.monotonic()
            elif line.startswith("msgs="):
                t1, w1 = srv.ticks(), time.monotonic()
                result = parse_load(line)
        err = load.stderr.read()
        rc = load.wait()
        if rc != 0 or result is None or t0 is None:
            raise RuntimeError("echo_load failed: " + (err.strip().splitlines() or ["no result"])[-1])
        msgs = max(result["msgs"], 1)
        user, system = (t1[0] - t0[0]) / HZ, (t1[1] - t0[1]) / HZ
        result.update(
            cpu_us_per_msg=(user + system) * 1e6 / msgs,
            user_us_per_msg=user * 1e6 / msgs,
            sys_us_per_msg=system * 1e6 / msgs,
            server_cpu_pct=100.0 * (user + system) / max(w1 - w0, 1e-9),
        )
    finally:
        status = srv.stop()
        if status not in (0, None):
            log(f"   warning: {server.name} exited with {status} on SIGTERM")
    result["server_stdout"] = srv.stdout()  # (complete once the server has exited)
    return result


# Library options measured on and off: (backend, option) -> (echo_server arguments for
# on, for off, what the option is[, the cells, when not the target cells]). The runs
# rotate the two.
OPTION_VARIANTS = {
    ("uring", ".fixed_files"): (["--fixed-files", "on"], ["--fixed-files", "off"],
                                "sockets in the ring's registered file table, every operation with "
                                "IOSQE_FIXED_FILE (off by default)"),
    ("uring", ".incremental_buffers"): (["--incremental-buffers", "on"], ["--incremental-buffers", "off"],
                                        "provided buffers consumed incrementally (IOU_PBUF_RING_INC): receive() "
                                        "takes only the bytes it got from a buffer (on by default)"),
    # Bundles happen only when more bytes wait than the next buffer holds: the bulk cell
    # is measured too.
    ("uring", ".bundles"): (["--bundles", "on"], ["--bundles", "off"],
                            "receive bundles (IORING_RECVSEND_BUNDLE): the multishot recv takes several provided "
                            "buffers in one completion when more bytes wait than the next buffer holds (off by "
                            "default)",
                            TARGET_CELLS + [(64, 4096, 16)]),
}


def measure_options(servers, cells, seconds, args):
    """Server CPU per message with each library option of OPTION_VARIANTS on and off, on
    the target cells in this run: medians of rotated runs, and the geometric mean of the
    per-cell ratios (on over off)."""
    results = {}
    for (backend, option), (on, off, about, *where) in OPTION_VARIANTS.items():
        tcells = [c for c in (where[0] if where else TARGET_CELLS) if c in cells]
        srv = next((s for s in servers if s.name == backend), None)
        if srv is None or not tcells:
            continue
        log(f"== {backend} {option} on and off")
        variants = {"on": Server(f"{backend}+{option}", "weft", srv.argv + on),
                    "off": Server(backend, "weft", srv.argv + off)}
        rows, errors = {}, []
        for cell in tcells:
            got = {"on": [], "off": []}
            for rep in range(args.reps):
                for which in (("on", "off") if rep % 2 == 0 else ("off", "on")):
                    try:
                        got[which].append(timed_run(variants[which], cell, seconds, args.warmup)["cpu_us_per_msg"])
                    except (RuntimeError, OSError) as e:
                        errors.append(f"error: {backend} {option} {which} {cell_name(cell)}: {e}")
            if got["on"] and got["off"]:
                rows[cell] = (median(got["on"]), median(got["off"]))
                log(f"   {cell_name(cell):16} on {rows[cell][0]:.3f}  off {rows[cell][1]:.3f} us/msg")
        ratio = geomean([a / b for a, b in rows.values()]) if rows else None
        results[(backend, option)] = {"about": about, "cells": rows, "ratio": ratio, "errors": errors}
    return results


def render_options(options):
    lines = ["## Library options, on and off", "",
             "Server CPU per message (µs) with each option on and off, medians of rotated runs on the target "
             "cells; the ratio is the geometric mean of on ÷ off. An option stays on by default only if it pays.",
             ""]
    for (backend, option), r in options.items():
        lines += [f"`{backend}` `{option}`: {r['about']}.", "", "| cell | on | off | on ÷ off |", "|---|---:|---:|---:|"]
        for cell, (on, off) in r["cells"].items():
            lines.append(f"| {cell_name(cell)} | {on:.3f} | {off:.3f} | {on / off:.3f} |")
        lines.append(f"| geometric mean | | | {fmt(r['ratio'], 3)} |")
        lines += [f"- {e}" for e in r["errors"]]
        lines.append("")
    return lines


def fixed_counts(cell):
    """Two message counts for the differential runs: large enough that the per-message
    part dominates, and at least twice what is in flight at once."""
    conns, _, depth = cell
    m1 = max(20000, 2 * conns * depth)
    return m1, 3 * m1


def counted_run(server, cell, messages, perf_ok):
    """A fresh server serves exactly `messages`; returns (syscalls, allocations) over its
    life (None where not measured)."""
    conns, size, depth = cell
    argv = server.counting_argv or server.argv
    srv = Running(argv)
    perf = None
    pfile = tempfile.NamedTemporaryFile(mode="r", suffix=".perf")
    try:
        if perf_ok:
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(srv.pid), "-o",
                                     pfile.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # perf opens its counters
        cmd = load_cmd(srv.port, conns, size, depth, "--messages", str(messages), "--seconds", "600")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("echo_load failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
        syscalls = None
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
            perf = None
            m = re.search(r"^(\d+),,raw_syscalls:sys_enter", open(pfile.name).read(), re.M)
            syscalls = int(m.group(1)) if m else None
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        srv.stop()
    m = re.search(r"^allocations=(\d+)$", srv.stdout(), re.M)
    return syscalls, (int(m.group(1)) if m and server.counting_argv else None)


def perf_works():
    try:
        r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"perf unavailable: {e}"
    if r.returncode != 0 or not re.search(r"^\d+,,raw_syscalls:sys_enter", r.stderr, re.M):
        return "perf cannot count raw_syscalls:sys_enter (needs root or kernel.perf_event_paranoid <= -1)"
    return None


def idle_rss(server):
    """Bytes of server RSS per idle connection at IDLE_CONNECTIONS."""
    srv = Running(server.argv)
    load = None
    try:
        time.sleep(0.3)
        before = srv.rss_kib()
        load = subprocess.Popen(load_cmd(srv.port, IDLE_CONNECTIONS, 64, 1, "--idle", "--seconds", "300"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = load.stdout.readline()
        if not line.startswith("idle"):
            raise RuntimeError("echo_load --idle failed: " + (load.stderr.read().strip().splitlines() or ["?"])[-1])
        time.sleep(0.5)
        after = srv.rss_kib()
        return (after - before) * 1024.0 / IDLE_CONNECTIONS, after
    finally:
        if load and load.poll() is None:
            load.send_signal(signal.SIGTERM)
            load.wait()
        srv.stop(60)


def shorten(function):
    """A callgrind function name without template arguments, parameters or paths:
    `weft::io_awaiter::await_ready`."""
    f = re.sub(r"\s*\[[^\]]*\]\s*$", "", function)  # the [object file]
    f = re.sub(r"^(\?\?\?|\S*/\S*?):", "", f)  # ???: or source-file: prefix
    out, depth = [], 0
    for ch in f:  # drop everything nested in <...> or (...)
        if ch in "<(":
            depth += 1
        elif ch in ">)" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    f = "".join(out).strip()
    f = f.split(" ")[-1] if " " in f and not f.endswith("]") else f  # drop a return type
    return f[:110]


def profile(path, messages, top=12):
    """The functions with the most instructions of their own, per message of the run."""
    if not shutil.which("callgrind_annotate"):
        return []
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)], capture_output=True, text=True)
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            rows.append((int(m.group(1).replace(",", "")) / messages, float(m.group(2)), shorten(m.group(3))))
        if len(rows) == top:
            break
    return rows


def callgrind_ir(server, messages, keep=None, depth=1, argv=None):
    """Instructions (Ir) over a fresh server's life under callgrind, serving `messages`
    messages of 64 B on 64 connections at `depth`; returns (Ir, messages served).
    `argv` replaces the server's command line (an `--api` variant)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        srv = Running(argv or server.argv, wrap=wrap, startup=120)
        try:
            # Two minutes is far more than any server needs here; a server that stalls
            # under valgrind (it does not model every io_uring feature) fails the cell.
            r = subprocess.run(load_cmd(srv.port, 64, 64, depth, "--messages", str(messages), "--seconds", "120"),
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError("echo_load failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
        finally:
            # valgrind 3.19 lets no signal in while its guest sleeps in io_uring_enter: it
            # takes a pending SIGTERM only after a stretch of guest code, so a burst of
            # messages is sent until the server exits. They are counted with the rest.
            srv.proc.send_signal(signal.SIGTERM)
            for _ in range(30):
                try:
                    srv.proc.wait(1.0)
                    break
                except subprocess.TimeoutExpired:
                    poke = subprocess.run(load_cmd(srv.port, 4, 64, 1, "--messages", "2000", "--seconds", "5"),
                                          capture_output=True, text=True)
                    m = re.search(r"total_msgs=(\d+)", poke.stdout)
                    messages += int(m.group(1)) if m else 0
            srv.stop(5)
        text = out.read_text() if out.exists() else ""
        if keep and text:
            shutil.copy(out, keep)
        m = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(r"^totals:\s*(\d+)", text, re.M)
        if not m:
            raise RuntimeError("callgrind wrote no summary (did the server exit cleanly?)")
        return int(m.group(1)), messages


def callgrind_variants(srv):
    """What callgrind measures of a server: (row name, command line, depth). A weft
    backend is measured reading with `read_some()` into its own buffer and with
    `receive()` leases; `epoll_lt` also at depth 8, where the read usually finds data
    already there (at depth 1 it is tried as soon as the echo is written and meets
    `EAGAIN` first: two paths of different cost)."""
    if srv.family != "weft":
        return [(srv.name, None, 1)]
    rows = [(f"{srv.name} read_some", srv.argv + ["--api", "read_some"], 1),
            (f"{srv.name} receive", srv.argv + ["--api", "receive"], 1)]
    if srv.name == "epoll_lt":
        rows.append(("epoll_lt read_some, depth 8 (data waiting)", srv.argv + ["--api", "read_some"], 8))
    return rows


def compile_cost():
    """Compile time (median of 3) and binary size: the upper-echo example against the
    Asio peer's source, same compiler and flags."""
    rows = []
    asio_src = ROOT / "benchmarks/peers/asio_echo.cpp"
    uring = ["-DWEFT_HAS_URING=1"] if (BUILD / "benchmarks/echo_server").exists() and shutil.which("pkg-config") and \
        subprocess.run(["pkg-config", "--exists", "liburing"]).returncode == 0 else []
    weft_flags = ["-I", str(ROOT / "include"), "-I", str(ROOT / "examples"), *uring]
    cases = [("weft: examples/minimal_echo_server.cpp (the README's, one backend)",
              ROOT / "examples/minimal_echo_server.cpp", weft_flags, ["-luring"] if uring else []),
             ("weft: examples/upper_echo_server.cpp (all backends, run-time choice)",
              ROOT / "examples/upper_echo_server.cpp", weft_flags, ["-luring"] if uring else [])]
    if asio_src.exists() and Path("/usr/include/asio.hpp").exists():
        cases.append(("Asio: benchmarks/peers/asio_echo.cpp", asio_src, [], []))
    with tempfile.TemporaryDirectory() as d:
        for label, src, flags, libs in cases:
            times, front = [], []
            obj, exe = Path(d) / "x.o", Path(d) / "x"
            for _ in range(3):
                t = time.monotonic()
                subprocess.run(["taskset", "-c", "0", "g++", "-std=c++20", "-O2", "-DNDEBUG", *flags, "-c", str(src),
                                "-o", str(obj)], check=True)
                times.append(time.monotonic() - t)
                # The front end alone (headers parsed, templates instantiated, no code
                # generated): what the includes cost, against what the code costs.
                t = time.monotonic()
                subprocess.run(["taskset", "-c", "0", "g++", "-std=c++20", "-O2", "-DNDEBUG", *flags, "-fsyntax-only",
                                str(src)], check=True)
                front.append(time.monotonic() - t)
            subprocess.run(["g++", str(obj), "-o", str(exe), "-pthread", *libs], check=True)
            size = exe.stat().st_size
            subprocess.run(["strip", str(exe)], check=True)
            rows.append({"source": label, "compile_s": statistics.median(times),
                         "front_end_s": statistics.median(front), "binary_bytes": size,
                         "stripped_bytes": exe.stat().st_size})
        if rows:
            rows[0]["headers"] = header_cost(cases[0][1], cases[0][2], Path(d))
    return rows


THREAD_HEADERS = ("<thread>", "<mutex>", "<condition_variable>", "<functional>")


def header_cost(src, flags, tmp):
    """What the standard headers cost the one-backend server's front end: a file that
    includes exactly the system headers that `src` and the weft headers it reaches
    include (from `g++ -H`), parsed alone, and again without the four thread headers
    the worker pool and the resolver need (issue 13 asked what moving them would save)."""
    trace = subprocess.run(["g++", "-std=c++20", "-O2", "-DNDEBUG", *flags, "-fsyntax-only", "-H", str(src)],
                           capture_output=True, text=True, check=True).stderr
    weft_files = {str(src)} | {line.lstrip(". ").strip() for line in trace.splitlines()
                               if "/weft/" in line and line.startswith(".")}
    system = set()
    for f in weft_files:
        for line in Path(f).read_text().splitlines():
            m = re.match(r"\s*#\s*include\s*(<[^>]+>)", line)
            if m and not m.group(1).startswith(("<weft/", "<sanitizer/", "<liburing")):
                system.add(m.group(1))
    variants = [("the standard and system headers it includes, alone", sorted(system)),
                ("the same without " + ", ".join(f"`{h}`" for h in THREAD_HEADERS),
                 sorted(system - set(THREAD_HEADERS)))]
    out = []
    for label, headers in variants:
        tu = tmp / "headers.cpp"
        tu.write_text("".join(f"#include {h}\n" for h in headers))
        times = []
        for _ in range(3):
            t = time.monotonic()
            subprocess.run(["taskset", "-c", "0", "g++", "-std=c++20", "-O2", "-DNDEBUG", "-fsyntax-only", str(tu)],
                           check=True)
            times.append(time.monotonic() - t)
        out.append({"label": label, "count": len(headers), "front_end_s": statistics.median(times)})
    return out


# ------------------------------------------------------------------------------ the run

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def cell_name(cell):
    return f"{cell[0]}x{cell[1]}Bxd{cell[2]}"


def files_section(path):
    """The file benchmark's report (benchmarks/file_bench.py, kept in files/) as a section
    of this one: its headings two levels down, its links and images relative to here."""
    lines = path.read_text().splitlines()[1:]  # without its title
    out = ["## Files: the stutter case study and nginx", "",
           "Measured separately by `benchmarks/file_bench.py` (its own report: [files/REPORT.md](files/REPORT.md)).", ""]
    for line in lines:
        if line.startswith("#"):
            line = "##" + line
        line = re.sub(r"\]\((plot_[a-z_]+\.(?:png|svg))\)", r"](files/\1)", line)
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the whole matrix, plus RSS, callgrind and compile time")
    ap.add_argument("--cells", help="comma-separated CONNSxSIZExDEPTH, e.g. 64x64x1,1000x64x16")
    ap.add_argument("--servers", help="comma-separated server names (weft backends and peers); default all")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per cell (default 3)")
    ap.add_argument("--seconds", type=int, help="measured seconds per run (quick 1, full 2)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up seconds per run (default 1)")
    ap.add_argument("--out", help="output directory (default build/bench; with --full benchmarks/results)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--skip", default="",
                    help="comma-separated: syscalls,rss,callgrind,options,compile,plots,threads")
    args = ap.parse_args()

    only = set(args.servers.split(",")) if args.servers else set()
    skip = set(filter(None, args.skip.split(",")))
    if not args.full:
        skip |= {"rss", "callgrind", "compile"}
    try:
        cells = [tuple(int(x) for x in c.split("x")) for c in args.cells.split(",")] if args.cells else \
            (FULL_CELLS if args.full else QUICK_CELLS)
        if any(len(c) != 3 or min(c) < 1 for c in cells):
            raise ValueError
    except ValueError:
        sys.exit(f"error: --cells must be CONNSxSIZExDEPTH[,...] with positive numbers, got '{args.cells}'")
    seconds = args.seconds or (2 if args.full else 1)
    out = Path(args.out) if args.out else (ROOT / ("benchmarks/results" if args.full else "build/bench"))
    out.mkdir(parents=True, exist_ok=True)

    # 10,000 connections need more descriptors than the default 1,024 (children inherit this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 2 * IDLE_CONNECTIONS + 1000) if hard != resource.RLIM_INFINITY else 2 * IDLE_CONNECTIONS + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    have = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if max(c[0] for c in cells) + 100 > have or (args.full and "rss" not in skip and IDLE_CONNECTIONS + 100 > have):
        sys.exit(f"error: RLIMIT_NOFILE is {have} (hard limit {hard}): too low for the connections asked for")
    if (os.cpu_count() or 1) < 2:
        sys.exit("error: the benchmark pins the server to CPU 0 and the load to CPU 1: it needs 2 CPUs")

    skipped = {} if args.no_build else build(only)
    servers = discover(only, skipped)
    if not servers:
        sys.exit("error: no server to run (check --servers)")
    for name, why in skipped.items():
        log(f"{name} skipped: {why}")
    perf_problem = None if "syscalls" in skip else perf_works()
    if perf_problem:
        log(f"syscalls per message not measured: {perf_problem}")

    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"== {len(cells)} cells x {len(servers)} servers x {args.reps} runs of {seconds}s (+{args.warmup}s warm-up)")
    runs = []  # every run: cell, server, rep, figures or error
    for cell in cells:
        for rep in range(args.reps):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for srv in order:
                na = srv.runs_cell(cell[0])
                if na:
                    if rep == 0:
                        runs.append({"cell": cell, "server": srv.name, "rep": rep, "error": na})
                    continue
                try:
                    r = timed_run(srv, cell, seconds, args.warmup)
                    runs.append({"cell": cell, "server": srv.name, "rep": rep, **r})
                    log(f"   {cell_name(cell):16} {srv.name:11} rep {rep}: {r['msgs_per_s']:>10.0f} msgs/s "
                        f"{r['cpu_us_per_msg']:7.2f} us/msg  server {r['server_cpu_pct']:5.1f}%")
                except (RuntimeError, OSError) as e:
                    runs.append({"cell": cell, "server": srv.name, "rep": rep, "error": f"error: {e}"})
                    log(f"   {cell_name(cell):16} {srv.name:11} rep {rep}: error: {e}")

    counted = {}  # (cell, server) -> (syscalls/msg or an error, allocations/msg)
    counted_errors = []
    if "syscalls" not in skip:
        log("== counted runs: syscalls (perf) and, for weft, heap allocations per message")
        for cell in cells:
            m1, m2 = fixed_counts(cell)
            for srv in servers:
                if srv.runs_cell(cell[0]):
                    continue
                try:
                    s1, a1 = counted_run(srv, cell, m1, perf_problem is None)
                    s2, a2 = counted_run(srv, cell, m2, perf_problem is None)
                    sc = (s2 - s1) / (m2 - m1) if s1 is not None and s2 is not None else None
                    al = (a2 - a1) / (m2 - m1) if a1 is not None and a2 is not None else None
                    counted[(cell, srv.name)] = (sc, al)
                    log(f"   {cell_name(cell):16} {srv.name:11} syscalls/msg {fmt(sc, 3)}  allocations/msg {fmt(al, 4)}")
                except (RuntimeError, OSError) as e:
                    counted[(cell, srv.name)] = (f"error: {e}", None)
                    counted_errors.append(f"{cell_name(cell)} {srv.name}: {e}")
                    log(f"   {cell_name(cell):16} {srv.name:11} counted run: error: {e}")

    rss = {}
    if "rss" not in skip:
        log(f"== memory: server RSS per idle connection at {IDLE_CONNECTIONS} connections")
        for srv in servers:
            na = srv.runs_cell(IDLE_CONNECTIONS)
            if na:
                rss[srv.name] = na
                continue
            try:
                rss[srv.name] = idle_rss(srv)
                log(f"   {srv.name:11} {rss[srv.name][0]:8.0f} B/connection")
            except (RuntimeError, OSError) as e:
                rss[srv.name] = f"error: {e}"
                log(f"   {srv.name:11} error: {e}")

    ir, profiles = {}, {}
    if "callgrind" not in skip:
        if not shutil.which("valgrind"):
            log("callgrind skipped: valgrind is not installed")
        else:
            log("== callgrind: user-space instructions per message (64 connections x 64 B x depth 1)")
            c1, c2 = 5000, 25000
            for srv in servers:
                for key, argv, depth in callgrind_variants(srv):
                    try:
                        ir1, n1 = callgrind_ir(srv, c1, depth=depth, argv=argv)
                        with tempfile.NamedTemporaryFile(suffix=".callgrind") as kept:
                            ir2, n2 = callgrind_ir(srv, c2, kept.name, depth=depth, argv=argv)
                            if srv.family == "weft" or srv.name in ("c_epoll", "c_uring"):
                                profiles[key] = profile(kept.name, n2)
                        ir[key] = (ir2 - ir1) / (n2 - n1)
                        log(f"   {key:36} {ir[key]:8.0f} Ir/msg")
                    except (RuntimeError, OSError) as e:
                        ir[key] = f"error: {e}"
                        log(f"   {key:36} error: {e}")

    options = {}
    if "options" not in skip:
        options = measure_options(servers, cells, seconds, args)

    compile_rows = []
    if "compile" not in skip:
        log("== compile time and binary size")
        try:
            compile_rows = compile_cost()
        except (subprocess.CalledProcessError, OSError) as e:
            log(f"   error: {e}")

    threads = None
    if "threads" not in skip:
        threads = measure_threads(servers, args, seconds)

    summary = summarise(runs, counted, servers, cells)
    write_csv(out, runs, summary)
    plots = [] if "plots" in skip else make_plots(out, summary, servers, cells)
    report = render_report(args, started, seconds, cells, servers, skipped, perf_problem, summary, rss, ir,
                           profiles, compile_rows, plots, options)
    # The file benchmark (benchmarks/file_bench.py) keeps its report in files/ under the
    # same directory; a rerun of this comparison keeps pointing at it.
    if threads:
        report += "\n" + render_threads(threads)
    files_report = out / "files" / "REPORT.md"
    if files_report.exists():
        report += "\n" + files_section(files_report)
    (out / "REPORT.md").write_text(report)
    print(render_tables(summary, servers, cells))
    if threads:
        print("\n" + render_threads(threads))
    log(f"\nreport: {out / 'REPORT.md'}")
    errors = [r for r in runs if r.get("error", "").startswith("error")] + counted_errors
    errors += [v for v in list(rss.values()) + list(ir.values()) if isinstance(v, str) and v.startswith("error")]
    errors += [e for rows in options.values() for e in rows.get("errors", [])]
    errors += threads["errors"] if threads else []
    if errors:
        log(f"{len(errors)} run(s) failed; see the report")
        return 1
    return 0


# The threads dimension (weft::runtime): which backends, cells and ping-pong paths.
THREAD_BACKENDS = ("epoll_et", "uring")
THREAD_CELLS = [(64, 64, 1), (1000, 64, 16)]
PINGPONG_ROUND_TRIPS = 20000
SPREAD_CONNECTIONS = 10000


def threads_run(backend, loops, cell, seconds, warmup):
    """One echo run of `echo_server --threads LOOPS`, server and load both on CPUs 0-1."""
    server = Server(f"{backend} on {loops} loop(s)", "weft",
                    [str(BUILD / "benchmarks/echo_server"), "--backend", backend, "--threads", str(loops)])
    r = timed_run(server, cell, seconds, warmup, server_cpus="0,1", load_cpus="0,1")
    m = re.search(r"^loops connections=(\S+)", r["server_stdout"], re.M)
    r["per_loop"] = m.group(1) if m else "-"
    return r


def measure_threads(servers, args, seconds):
    """The threads dimension: echo on 1 and 2 loops, the cross-loop ping-pong, and a
    burst of connections spread both ways. Returns the figures and the commands."""
    backends = [b for b in THREAD_BACKENDS if any(s.name == b for s in servers)]
    out = {"echo": {}, "pingpong": {}, "spread": {}, "errors": [], "backends": backends}
    if not backends:
        return out
    log("== threads: echo on 1 and 2 loops (server and load share CPUs 0-1)")
    for cell in THREAD_CELLS:
        for rep in range(args.reps):
            for backend in (backends if rep % 2 == 0 else backends[::-1]):
                for loops in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    key = (backend, cell, loops)
                    try:
                        r = threads_run(backend, loops, cell, seconds, args.warmup)
                        out["echo"].setdefault(key, []).append(r)
                        log(f"   {cell_name(cell):16} {backend:9} {loops} loop(s) rep {rep}: "
                            f"{r['msgs_per_s']:>10.0f} msgs/s {r['cpu_us_per_msg']:7.2f} us/msg  "
                            f"connections per loop {r['per_loop']}")
                    except (RuntimeError, OSError) as e:
                        out["errors"].append(f"threads {backend} {loops} {cell_name(cell)}: {e}")
                        log(f"   {cell_name(cell):16} {backend:9} {loops} loop(s): error: {e}")
    log(f"== threads: cross-loop ping-pong ({PINGPONG_ROUND_TRIPS} round trips, loops pinned to CPUs 0 and 1)")
    paths = []
    if "uring" in backends:
        paths += [("uring", "msg_ring"), ("uring", "eventfd")]
    if "epoll_et" in backends:
        paths.append(("epoll_et", "eventfd"))
    paths.append(("threads", "mutex_cv"))
    for rep in range(args.reps):
        for backend, wake in (paths if rep % 2 == 0 else paths[::-1]):
            cmd = [str(BUILD / "benchmarks/pingpong"), "--round-trips", str(PINGPONG_ROUND_TRIPS)]
            cmd += ["--baseline", "mutex_cv"] if backend == "threads" else ["--backend", backend, "--wake", wake]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0 or not r.stdout.startswith("pingpong"):
                out["errors"].append(f"pingpong {backend} {wake}: {r.stderr.strip()}")
                continue
            fig = parse_load(r.stdout)
            out["pingpong"].setdefault((backend, wake), []).append(fig)
            log(f"   {backend:9} {wake:9} rep {rep}: {fig['round_trips_per_s']:>8.0f} round trips/s  "
                f"p50 {fig['p50_us']:.1f} us  p99 {fig['p99_us']:.1f} us")
    log(f"== threads: a burst of {SPREAD_CONNECTIONS} connections over 2 loops, spread both ways")
    for rep in range(args.reps):
        for backend in backends:
            for spread in ("reuse_port", "hand_off"):
                cmd = [str(BUILD / "benchmarks/spread_burst"), "--backend", backend, "--spread", spread,
                       "--connections", str(SPREAD_CONNECTIONS)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0 or not r.stdout.startswith("spread"):
                    out["errors"].append(f"spread_burst {backend} {spread}: {r.stderr.strip() or r.stdout.strip()}")
                    continue
                fig = dict(re.findall(r"(\w+)=(\S+)", r.stdout))
                out["spread"].setdefault((backend, spread), []).append(fig)
                log(f"   {backend:9} {spread:10} rep {rep}: {float(fig['conns_per_s']):>8.0f} conns/s  per loop "
                    f"{fig['per_loop']}  imbalance {fig['imbalance']}  idle wake-ups {fig['idle_wakeups']}")
    return out


def render_threads(t):
    """The threads section of the report."""
    def med(rows, key):
        return median([float(r[key]) for r in rows])

    def by_imbalance(rows):  # the median run as a whole (its counts belong together)
        return sorted(rows, key=lambda r: float(r["imbalance"]))[len(rows) // 2]

    lines = ["## Every core: `weft::runtime` on 1 and 2 loops", "",
             "This machine has 2 CPUs, and here the server's loops and the load generator share both "
             "(`taskset -c 0,1` for each): these rows show what a second loop costs and how evenly the "
             "connections spread, not how weft scales. (For the scaling curve, see the end of this section.)", ""]
    if t["echo"]:
        lines += ["Echo (`echo_server --threads N`, SO_REUSEPORT listeners; medians):", "",
                  "| backend | cell | loops | msgs/s | server µs/msg | server CPU % | connections per loop |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for (backend, cell, loops), rows in sorted(t["echo"].items()):
            lines.append(f"| {backend} | {cell_name(cell)} | {loops} | {med(rows, 'msgs_per_s'):.0f} | "
                         f"{med(rows, 'cpu_us_per_msg'):.2f} | {med(rows, 'server_cpu_pct'):.0f} | "
                         f"{rows[len(rows) // 2]['per_loop']} |")
        lines.append("")
    if t["pingpong"]:
        lines += [f"Cross-loop ping-pong (`benchmarks/pingpong`, {PINGPONG_ROUND_TRIPS} round trips over two "
                  "`weft::channel`s between loops pinned to CPUs 0 and 1; each leg wakes a sleeping loop; "
                  "medians):", "",
                  "| path | round trips/s | messages/s | p50 µs | p99 µs |", "|---|---:|---:|---:|---:|"]
        names = {("uring", "msg_ring"): "uring, IORING_OP_MSG_RING", ("uring", "eventfd"): "uring, eventfd",
                 ("epoll_et", "eventfd"): "epoll_et, eventfd",
                 ("threads", "mutex_cv"): "baseline: 2 threads, mutex + condition variable queues"}
        for key, rows in t["pingpong"].items():
            lines.append(f"| {names.get(key, key)} | {med(rows, 'round_trips_per_s'):.0f} | "
                         f"{med(rows, 'msgs_per_s'):.0f} | {med(rows, 'p50_us'):.1f} | {med(rows, 'p99_us'):.1f} |")
        lines.append("")
    if t["spread"]:
        lines += [f"A burst of {SPREAD_CONNECTIONS} connections (`benchmarks/spread_burst`: 4 client threads "
                  "connect, send a byte, read it back and close; 2 loops). Idle wake-ups are loop iterations that "
                  "resumed nothing; the median run by imbalance (busiest loop over the mean):", "",
                  "| backend | spread | conns/s | per loop | imbalance | idle wake-ups per loop | loop CPU ms |",
                  "|---|---|---:|---|---:|---|---|"]
        for (backend, spread), rows in sorted(t["spread"].items()):
            r = by_imbalance(rows)
            lines.append(f"| {backend} | {spread} | {med(rows, 'conns_per_s'):.0f} | {r['per_loop']} | "
                         f"{r['imbalance']} | {r['idle_wakeups']} | {r['cpu_ms']} |")
        lines.append("")
    lines += ["Commands: `python3 benchmarks/run.py` runs this section (skip it with `--skip threads`); "
              "one figure at a time: `build/default/benchmarks/pingpong --backend uring --wake msg_ring`, "
              "`build/default/benchmarks/pingpong --baseline mutex_cv`, "
              "`build/default/benchmarks/spread_burst --backend epoll_et --spread hand_off`.", "",
              "The scaling curve on a machine with more cores: put the server's N loops on cores 0..N-1 and the "
              "load elsewhere, then raise N:", "",
              "```sh",
              "for n in 1 2 4 8; do",
              "  taskset -c 0-$((n-1)) build/default/benchmarks/echo_server --backend uring --threads $n --port 9000 &",
              "  sleep 0.5",
              "  taskset -c 16-31 build/default/benchmarks/echo_load --port 9000 --connections 1000 --size 64 \\",
              "      --depth 16 --seconds 5 --warmup 1",
              "  kill %1; wait",
              "done",
              "```", "",
              "Each `msgs=` line gives the throughput at n loops; divide by n = 1's for the speed-up. The load "
              "generator must not be the bottleneck: give it at least as many cores as the server (`echo_load` runs "
              "one thread; start several, on different ports or the same one, if one cannot keep up).", ""]
    if t["errors"]:
        lines += ["Errors:", ""] + [f"- {e}" for e in t["errors"]] + [""]
    return "\n".join(lines)


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def summarise(runs, counted, servers, cells):
    """Medians per (cell, server)."""
    summary = {}
    for cell in cells:
        for srv in servers:
            rs = [r for r in runs if r["cell"] == cell and r["server"] == srv.name]
            ok = [r for r in rs if "error" not in r]
            row = {"connections": cell[0], "size": cell[1], "depth": cell[2], "server": srv.name,
                   "family": srv.family, "runs": len(ok)}
            if not ok:
                row["status"] = rs[0]["error"] if rs else "not run"
            else:
                row["status"] = "ok" if len(ok) == len(rs) else f"{len(rs) - len(ok)} of {len(rs)} runs failed"
                for k in ("msgs_per_s", "mib_per_s", "p50_us", "p99_us", "p999_us", "cpu_us_per_msg",
                          "user_us_per_msg", "sys_us_per_msg", "server_cpu_pct", "client_cpu_pct"):
                    row[k] = median([r[k] for r in ok])
                row["client_bound"] = row["server_cpu_pct"] < CLIENT_BOUND_BELOW
                row["fairness"] = row["p999_us"] / row["p50_us"] if row["p50_us"] else None
            sc, al = counted.get((cell, srv.name), (None, None))
            row["syscalls_per_msg"], row["allocations_per_msg"] = sc, al
            summary[(cell, srv.name)] = row
    return summary


FIELDS = ["connections", "size", "depth", "server", "family", "status", "runs", "msgs_per_s", "mib_per_s", "p50_us",
          "p99_us", "p999_us", "cpu_us_per_msg", "user_us_per_msg", "sys_us_per_msg", "server_cpu_pct",
          "client_cpu_pct", "client_bound", "fairness", "syscalls_per_msg", "allocations_per_msg"]


def write_csv(out, runs, summary):
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in summary.values():
            w.writerow(row)
    with open(out / "runs.csv", "w", newline="") as f:
        keys = ["connections", "size", "depth", "server", "rep", "error", "msgs", "seconds", "msgs_per_s", "p50_us",
                "p99_us", "p999_us", "cpu_us_per_msg", "user_us_per_msg", "sys_us_per_msg", "server_cpu_pct",
                "client_cpu_pct", "total_msgs"]
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({"connections": r["cell"][0], "size": r["cell"][1], "depth": r["cell"][2], **r})


def cell_table(summary, servers, cell):
    lines = [f"| server | msgs/s | server µs/msg (user + sys) | server CPU | client CPU | p50 / p99 / p99.9 µs "
             f"| p99.9 / p50 | syscalls/msg | allocations/msg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for srv in servers:
        row = summary[(cell, srv.name)]
        if "msgs_per_s" not in row:
            lines.append(f"| {srv.name} | {row['status']} | | | | | | | |")
            continue
        bound = " (client-bound)" if row["client_bound"] else ""
        lines.append(
            f"| {srv.name} | {fmt(row['msgs_per_s'], 0)} | {fmt(row['cpu_us_per_msg'], 2)} "
            f"({fmt(row['user_us_per_msg'], 2)} + {fmt(row['sys_us_per_msg'], 2)}) | {fmt(row['server_cpu_pct'], 0)}%{bound} "
            f"| {fmt(row['client_cpu_pct'], 0)}% | {fmt(row['p50_us'])} / {fmt(row['p99_us'])} / {fmt(row['p999_us'])} "
            f"| {fmt(row['fairness'], 1)} | {fmt(row['syscalls_per_msg'], 2)} | {fmt(row['allocations_per_msg'], 4)} |")
    return "\n".join(lines)


def render_tables(summary, servers, cells):
    parts = []
    for cell in cells:
        parts.append(f"\n### {cell[0]} connections × {cell[1]} B × depth {cell[2]}\n")
        parts.append(cell_table(summary, servers, cell))
    return "\n".join(parts)


def matrix_table(summary, servers, cells, key, digits):
    head = "| server | " + " | ".join(cell_name(c) for c in cells) + " |"
    lines = [head, "|---|" + "---:|" * len(cells)]
    for srv in servers:
        vals = []
        for c in cells:
            row = summary[(c, srv.name)]
            v = row.get(key)
            if v is None:
                vals.append(row["status"] if "msgs_per_s" not in row else "-")
            else:
                vals.append(fmt(v, digits) + ("*" if row.get("client_bound") else ""))
        lines.append(f"| {srv.name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# A cell's p99.9 latency above this many times its p50 means some connections waited far
# longer than the typical one: service was not fair (issue 10, scenario 12).
FAIRNESS_LIMIT = 10.0


def fairness_lines(summary, servers, cells):
    """Which servers keep p99.9 / p50 within FAIRNESS_LIMIT in every cell with many connections."""
    many = [c for c in cells if c[0] >= 64]
    held, missed = [], []
    for srv in servers:
        worst = None
        for c in many:
            f = summary[(c, srv.name)].get("fairness")
            if f is not None and (worst is None or f > worst[0]):
                worst = (f, c)
        if worst is None:
            continue
        (held if worst[0] <= FAIRNESS_LIMIT else missed).append((srv.name, worst))
    out = [f"p99.9 latency over p50 latency per cell. Service is fair when every connection waits about as long "
           f"as the typical one; a ratio above {FAIRNESS_LIMIT:.0f} means some connections waited far longer "
           f"while others were served at once. Over the cells with 64 or more connections:", ""]
    if held:
        out.append("- within " + f"{FAIRNESS_LIMIT:.0f}: " +
                   ", ".join(f"`{n}` (worst {fmt(w[0], 1)}, {cell_name(w[1])})" for n, w in held))
    if missed:
        out.append("- above " + f"{FAIRNESS_LIMIT:.0f}: " +
                   ", ".join(f"`{n}` (worst {fmt(w[0], 1)}, {cell_name(w[1])})" for n, w in missed))
    return out


def ratio_line(summary, cells, a, b):
    """geomean over `cells` of a's CPU/msg over b's, and the cells both ran."""
    pairs = []
    for c in cells:
        ra, rb = summary.get((c, a), {}), summary.get((c, b), {})
        if ra.get("cpu_us_per_msg") and rb.get("cpu_us_per_msg"):
            pairs.append(ra["cpu_us_per_msg"] / rb["cpu_us_per_msg"])
    return (geomean(pairs), len(pairs)) if pairs else (None, 0)


def verdict(value, limit):
    if value is None:
        return "not measured"
    return "met" if value <= limit else "**missed**"


def render_targets(summary, servers, cells, rss, ir, compile_rows, options=None):
    names = {s.name for s in servers}
    tcells = [c for c in TARGET_CELLS if c in cells]
    out = [f"Judged on the cells the targets name, {', '.join(cell_name(c) for c in tcells) or '(none in this run)'} "
           "(whether each was server-bound is in the matrices and the list below): "
           "geometric mean of the per-cell ratios of the medians of server CPU per message.", "",
           "| target | measured | limit | verdict |", "|---|---:|---:|---|"]

    def add(what, value, limit, digits=3):
        out.append(f"| {what} | {fmt(value, digits)} | {limit} | {verdict(value, limit)} |")

    peers = [p for p in ("asio", "libuv", "tokio") if p in names]
    if "uring" in names and peers:
        # The best peer is the one uring compares worst against, over the same cells.
        best = max(peers, key=lambda p: ratio_line(summary, tcells, "uring", p)[0] or 0)
        add(f"uring CPU/msg ÷ best of Asio-epoll, libuv, Tokio ({best})", ratio_line(summary, tcells, "uring", best)[0],
            0.95)
    if "uring" in names and "c_uring" in names:
        add("uring CPU/msg ÷ C liburing", ratio_line(summary, tcells, "uring", "c_uring")[0], 0.95)
    if "c_uring" in names and peers:
        best = max(peers, key=lambda p: ratio_line(summary, tcells, "c_uring", p)[0] or 0)
        out.append(f"| (calibration) C liburing CPU/msg ÷ {best} | {fmt(ratio_line(summary, tcells, 'c_uring', best)[0], 3)}"
                   " | about 0.88 expected | |")
    if "c_epoll" in names:
        if "epoll_et" in names:
            add("epoll_et CPU/msg ÷ C epoll (ET)", ratio_line(summary, tcells, "epoll_et", "c_epoll")[0], 1.0)
        for other in ("epoll_lt", "poll", "select", "sigio", "spin", "blocking"):
            if other in names:
                v = ratio_line(summary, tcells, other, "c_epoll")[0]
                out.append(f"| {other} CPU/msg ÷ C epoll (ET) (no C loop of its own model: see below) | {fmt(v, 3)} "
                           f"| reported | |")
    bulk = (64, 4096, 16)
    if bulk in cells and "c_epoll" in names:
        for b in ("epoll_et", "uring"):
            if b in names:
                add(f"{b} CPU/msg ÷ C epoll (ET) at {cell_name(bulk)} (bulk)",
                    ratio_line(summary, [bulk], b, "c_epoll")[0], 1.15)
    for (backend, option), rows in (options or {}).items():
        if rows.get("ratio") is not None:
            out.append(f"| {backend} with `{option}` ÷ without, CPU/msg (kept only if it pays) | "
                       f"{fmt(rows['ratio'], 3)} | reported | |")
    for srv in servers:
        if srv.family != "weft":
            continue
        base = "c_uring" if srv.name == "uring" else "c_epoll"
        for key, _, _ in callgrind_variants(srv):
            if not isinstance(ir.get(key), float):
                continue
            # read_some: 2x the C server for epoll_et and uring, 2.5x for the other
            # readiness models (no C loop of their own); receive(): 2.5x.
            limit = 2.0 if "read_some" in key and srv.name in ("epoll_et", "uring") else 2.5
            if srv.name == "blocking":
                limit = None  # a thread per connection: reported, not judged against an event loop
            if isinstance(ir.get(base), float):
                v = ir[key] / ir[base]
                if limit is None:
                    out.append(f"| {key} Ir/msg ÷ {base} Ir/msg | {fmt(v, 2)} | reported | |")
                else:
                    add(f"{key} Ir/msg ÷ {base} Ir/msg", v, limit, 2)
    for c in tcells:
        if c[2] != 1:
            continue
        if "uring" in names and "c_uring" in names:
            u, cu = summary[(c, "uring")].get("syscalls_per_msg"), summary[(c, "c_uring")].get("syscalls_per_msg")
            if u is not None and cu is not None:
                out.append(f"| uring syscalls/msg at {cell_name(c)} (C liburing: {cu:.3f}) | {u:.3f} | ≤ {cu:.3f} "
                           f"| {'met' if u <= cu else '**missed**'} |")
        if "epoll_et" in names:
            add(f"epoll_et syscalls/msg at {cell_name(c)}", summary[(c, "epoll_et")].get("syscalls_per_msg"), 2.1)
    worst = [(summary[(c, s.name)]["allocations_per_msg"], s.name, c) for s in servers if s.family == "weft"
             for c in cells if summary[(c, s.name)].get("allocations_per_msg") is not None]
    if worst:
        v, who, c = max(worst)
        out.append(f"| heap allocations per message, worst weft backend and cell ({who}, {cell_name(c)}) | "
                   f"{v:.4f} | 0 | {'met' if v == 0 else '**missed**'} |")
    for srv in servers:
        if srv.family == "weft" and isinstance(rss.get(srv.name), tuple):
            add(f"{srv.name} RSS per idle connection (bytes) at {IDLE_CONNECTIONS}", rss[srv.name][0], 1024, 0)
    if len(compile_rows) == 3:
        asio_s = compile_rows[2]["compile_s"]
        add("compile time: the README's one-backend echo server ÷ Asio peer", compile_rows[0]["compile_s"] / asio_s,
            0.5, 2)
        out.append(f"| compile time: upper-echo example (all backends) ÷ Asio peer | "
                   f"{fmt(compile_rows[1]['compile_s'] / asio_s, 2)} | reported | |")
    return "\n".join(out)


STRUCTURAL = """\
Where a backend costs more server CPU than the C epoll loop, part of it is its model
(below) and part is weft's own path per message (the callgrind profiles above show where
its user-space instructions go):
- `epoll_lt`: level-triggered; after a short read the fd is reported again while data
  remains, and a session's read parks and is woken once per message, as with ET. Its
  interest set is kept lazily (no `epoll_ctl` in steady state).
- `poll`: every wait copies the whole `pollfd` array into the kernel, which polls each
  socket, and the loop scans the array it gets back: O(connections) per wait.
- `select`: the same with three bitmaps up to the highest fd, and no fd at or above
  `FD_SETSIZE` (1,024): cells with more connections are not run.
- `sigio`: one queued real-time signal per readiness change, dequeued through a
  signalfd; the kernel's per-signal work (queueing `siginfo`, `F_SETOWN` delivery) is
  paid per message.
- `spin`: never sleeps while any operation waits: it retries every parked operation
  each pass, so it burns its core whatever the load, and its CPU per message is its
  CPU time divided by the messages, mostly failed `EAGAIN` syscalls.
- `blocking`: one thread per connection; every message costs a wake-up of a sleeping
  thread and a context switch, which the scheduler charges as system time.
"""


def render_report(args, started, seconds, cells, servers, skipped, perf_problem, summary, rss, ir, profiles,
                  compile_rows, plots, options=None):
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
        except OSError:
            return "?"

    cpu = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'") or platform.processor()
    asio_h = Path("/usr/include/asio/version.hpp")
    m = re.search(r"#define ASIO_VERSION (\d+)", asio_h.read_text()) if asio_h.exists() else None
    asio = f"{int(m.group(1)) // 100000}.{int(m.group(1)) // 100 % 1000}.{int(m.group(1)) % 100}" if m else None
    cmdline = "python3 benchmarks/run.py " + " ".join(sys.argv[1:])
    lines = [
        "# weft backend comparison", "",
        f"Produced by `{cmdline.strip()}` on {started:%Y-%m-%d %H:%M} UTC.", "",
        "## Machine", "",
        f"- CPU: {cpu}, {os.cpu_count()} CPUs; server pinned to CPU 0, load (`echo_load`) to CPU 1",
        f"- kernel: {platform.release()}",
        f"- OS: {sh('. /etc/os-release && echo $PRETTY_NAME')}",
        f"- compiler: {sh('g++ --version | head -1')} (Release: -O3 -DNDEBUG from CMake)",
        f"- rustc: {sh('rustc --version') or 'not installed'}",
        f"- liburing: {sh('pkg-config --modversion liburing') or 'not installed'}, "
        f"libuv: {sh('pkg-config --modversion libuv') or 'not installed'}, "
        f"Asio: {asio or 'not installed'}",
        "",
        "## Method", "",
        f"{args.reps} repetitions per cell, the order of the servers rotating between them; medians. Each run: "
        f"{args.warmup} s warm-up, then {seconds} s measured. Server CPU is utime + stime of all its threads from "
        f"`/proc/PID/stat` over the measured window, divided by the messages echoed in it. A cell whose server was "
        f"below {CLIENT_BOUND_BELOW:.0f}% CPU is marked client-bound (`*` in the matrices): there the load "
        "generator set the pace, and CPU per message is the honest figure, msgs/s is not. Syscalls and heap "
        "allocations per message come from separate runs of two fixed message counts against fresh servers "
        "(the difference over the difference), syscalls counted by `perf stat -e raw_syscalls:sys_enter`.", "",
        "Servers:", "",
    ]
    for s in servers:
        lines.append(f"- `{s.name}`: {s.about}")
    for name, why in skipped.items():
        lines.append(f"- `{name}`: **skipped**: {why}")
    if perf_problem:
        lines += ["", f"Syscalls per message were not measured: {perf_problem}."]
    lines += ["", "## Server CPU per message (µs)", "", matrix_table(summary, servers, cells, "cpu_us_per_msg", 2), "",
              "## Messages per second", "", matrix_table(summary, servers, cells, "msgs_per_s", 0), "",
              "## Syscalls per message", "", matrix_table(summary, servers, cells, "syscalls_per_msg", 2), "",
              "## Fairness: p99.9 / p50 latency", ""] + fairness_lines(summary, servers, cells) + [
              "", matrix_table(summary, servers, cells, "fairness", 1), "",
              "## Heap allocations per message (weft backends)", "",
              matrix_table(summary, [s for s in servers if s.family == "weft"], cells, "allocations_per_msg", 4), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p}.png) ([SVG]({p}.svg))" for p in plots] + [""]
    if rss:
        lines += [f"## Memory: server RSS per idle connection at {IDLE_CONNECTIONS:,} connections", "",
                  "`echo_load --idle` opens the connections, echoes one message on each, then holds them; the "
                  "server's VmRSS then, minus its VmRSS before, divided by the connections.", "",
                  "| server | bytes per connection | RSS at 10,000 (MiB) |", "|---|---:|---:|"]
        for s in servers:
            v = rss.get(s.name)
            if isinstance(v, tuple):
                lines.append(f"| {s.name} | {v[0]:,.0f} | {v[1] / 1024:,.1f} |")
            elif v:
                lines.append(f"| {s.name} | {v} | |")
        lines.append("")
    if ir:
        lines += ["## User-space instructions per message (callgrind)", "",
                  "64 connections × 64 B × depth 1; `valgrind --tool=callgrind` over a fresh server serving 5,000 "
                  "and then 25,000 messages; the difference of the two totals over the difference of the messages "
                  "served. A server that valgrind holds in `io_uring_enter` after SIGTERM is sent bursts of messages "
                  "on 4 new connections until it exits; those messages are counted, their accepts are not "
                  "separated out.", "",
                  "Each weft backend reads with `read_some()` (its own buffer) and with `receive()` (a lease "
                  "from the provided buffers); `epoll_lt` also at depth 8, where a read usually finds its data "
                  "already there instead of meeting `EAGAIN` first.", "",
                  "| server | Ir/msg |", "|---|---:|"]
        for key, v in ir.items():
            lines.append(f"| {key} | {fmt(v, 0) if isinstance(v, float) else v} |")
        lines.append("")
    if profiles:
        lines += ["### Where the instructions go", "",
                  "`callgrind_annotate --inclusive=no` of the 25,000-message run: the functions with the most "
                  "instructions of their own, per message of that run (start-up and accepts included, so the "
                  "column sums to more than the differential figure above).", ""]
        for name, rows in profiles.items():
            lines += [f"`{name}`:", "", "| Ir/msg | share | function |", "|---:|---:|---|"]
            lines += [f"| {per:,.1f} | {pct:.1f}% | `{fn}` |" for per, pct, fn in rows]
            lines.append("")
    if compile_rows:
        lines += ["## Compile time and binary size", "",
                  "`g++ -std=c++20 -O2 -DNDEBUG -c`, median of 3, pinned to CPU 0; sizes of the linked program.", "",
                  "The front end is `-fsyntax-only` (headers parsed, templates instantiated, no code generated).",
                  "",
                  "| source | compile (s) | of which front end (s) | binary (bytes) | stripped (bytes) |",
                  "|---|---:|---:|---:|---:|"]
        for r in compile_rows:
            lines.append(f"| {r['source']} | {r['compile_s']:.2f} | {r.get('front_end_s', 0):.2f} | "
                         f"{r['binary_bytes']:,} | {r['stripped_bytes']:,} |")
        lines.append("")
        if compile_rows[0].get("headers"):
            lines += ["What the one-backend server's front end spends on standard and system headers "
                      "(`-fsyntax-only` of a file that includes only them; the rest is weft's own "
                      "headers and the templates the program instantiates):", "",
                      "| headers | count | front end (s) |", "|---|---:|---:|"]
            lines += [f"| {h['label']} | {h['count']} | {h['front_end_s']:.2f} |" for h in compile_rows[0]["headers"]]
            lines.append("")
    if options:
        lines += render_options(options)
    lines += ["## Targets", "", render_targets(summary, servers, cells, rss, ir, compile_rows, options), "",
              STRUCTURAL, ""]
    # Why each missed target is missed and what would close it: written by hand from a
    # run's profiles (benchmarks/targets_missed.md names the run it analyses).
    missed = ROOT / "benchmarks" / "targets_missed.md"
    if missed.exists():
        lines += [missed.read_text().rstrip(), ""]
    bound = [f"{cell_name(c)}: {s.name}" for c in cells for s in servers
             if summary[(c, s.name)].get("client_bound")]
    lines += ["## Client-bound cells", "",
              (f"Server below {CLIENT_BOUND_BELOW:.0f}% CPU (msgs/s there measures the load generator): " + "; ".join(bound))
              if bound else f"None: every server was at {CLIENT_BOUND_BELOW:.0f}% CPU or more in every cell it ran.", ""]
    lines += ["## Every cell", render_tables(summary, servers, cells), ""]
    return "\n".join(lines)


def make_plots(out, summary, servers, cells):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots skipped: python3-matplotlib is not installed")
        return []
    names = []
    for size, depth in sorted({(c[1], c[2]) for c in cells}):
        conns = sorted({c[0] for c in cells if c[1] == size and c[2] == depth})
        if len(conns) < 2:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
        for srv in servers:
            xs, rate, cpu = [], [], []
            for n in conns:
                row = summary.get(((n, size, depth), srv.name), {})
                if row.get("msgs_per_s"):
                    xs.append(n)
                    rate.append(row["msgs_per_s"])
                    cpu.append(row["cpu_us_per_msg"])
            if not xs:
                continue
            style = "-" if srv.family == "weft" else "--"
            ax1.plot(xs, rate, style, marker="o", label=srv.name)
            ax2.plot(xs, cpu, style, marker="o", label=srv.name)
        for ax, title in ((ax1, "messages per second"), (ax2, "server CPU µs per message")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("connections")
            ax.set_title(f"{title} ({size} B, depth {depth})")
            ax.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        name = f"plot_{size}B_depth{depth}"
        fig.savefig(out / f"{name}.png", dpi=110)
        fig.savefig(out / f"{name}.svg")
        plt.close(fig)
        names.append(name)
    return names


if __name__ == "__main__":
    sys.exit(main())
