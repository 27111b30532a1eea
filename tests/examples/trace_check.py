#!/usr/bin/env python3
"""Checks trace mode: examples/trace_models on every backend, and that it costs an
ordinary build nothing.

usage: trace_check.py TRACE_MODELS ORDINARY_PROGRAM

TRACE_MODELS (built with WEFT_TRACE=1) must show, for each backend, the steps of its
model for one request and answer: the readiness backends a read that finds nothing
(EAGAIN), parks and is retried when the wait reports the fd ready; each its own wait
(pselect, ppoll, epoll_pwait2, the signal, spin's passes); blocking the task's own
thread; uring submissions and completions. The client must get its answer on every
backend (the program reports otherwise). ORDINARY_PROGRAM (any example built without
trace mode) must contain none of the trace's text: trace mode off is compiled away.
"""
import re
import subprocess
import sys

trace_models, ordinary = sys.argv[1], sys.argv[2]
out = subprocess.run([trace_models], capture_output=True, text=True, timeout=120)
if out.returncode != 0:
    sys.exit(f"trace_models exited with {out.returncode}: {out.stderr.strip()}")
if out.stderr.strip():
    sys.exit(f"trace_models wrote to stderr (a trace line outside a run?): {out.stderr.strip()[:300]}")

sections = {}
for block in out.stdout.split("\n== ")[0:]:
    m = re.match(r"(?:== )?(\w+): accept, read", block)
    if m:
        sections[m.group(1)] = block

readiness_common = [r"recv\(fd \d+, 64\) -> EAGAIN", r"park fd \d+ read", r"ready fd \d+ read: try again",
                    r"recv\(fd \d+, 64\) -> 4", r"send\(fd \d+, 4\) -> 4", r"recv\(fd \d+, 64\) -> 0"]
expect = {
    "select": readiness_common + [r"pselect\(fds 0\.\.\d+, read list \d+, write list \d+, timeout forever\) -> 1 ready"],
    "poll": readiness_common + [r"ppoll\(\d+ fds, timeout forever\) -> 1 ready"],
    "epoll_lt": readiness_common + [r"epoll_ctl ADD fd \d+ in$", r"epoll_(pwait2|wait)\(timeout forever\) -> 1 ready"],
    "epoll_et": [r"park fd \d+ read", r"epoll_ctl ADD fd \d+ in out \(edge-triggered\)",
                 r"epoll_(pwait2|wait)\(timeout forever\) -> \d ready", r"recv\(fd \d+, 64\) -> 4",
                 r"recv\(fd \d+, 64\) -> 0"],
    "sigio": readiness_common + [r"signal SIGRTMIN\+\d+: fd \d+ band in"],
    "spin": readiness_common + [r"spin pass: \d+ fds to retry, no syscall", r"\.\.\. the .* above, \d+ times more"],
    "blocking": [r"\[t2\] thread started for a task", r"\[t2\] accept4\(fd \d+\) -> \d+",
                 r"\[t2\] fd \d+: the next call blocks this thread until it can read", r"\[t2\] recv\(fd \d+, 64\) -> 4",
                 r"\[t2\] recv\(fd \d+, 64\) -> 0", r"\[t2\] thread ends"],
    "uring": [r"io_uring_enter: submit_and_wait\(1, timeout forever\) -> \d+", r"sqe recv fd \d+ len 64",
              r"cqe res 4$", r"sqe send fd \d+ len 4", r"cqe res 0$"],
}
for name, patterns in expect.items():
    block = sections.get(name)
    if block is None:
        if name == "uring":
            continue  # built without liburing
        sys.exit(f"no trace for {name}; sections: {sorted(sections)}")
    if "(not available here" in block and name == "uring":
        print("uring: not available here (as reported)")
        continue
    if "(server:" in block or "(client got" in block:
        sys.exit(f"{name}: the exchange failed:\n{block}")
    for p in patterns:
        if not re.search(p, block, re.M):
            sys.exit(f"{name}: no line matches {p!r} in:\n{block}")
    print(f"{name}: {len(block.splitlines()) - 1} trace lines, the model's steps present")

side = subprocess.run([trace_models, "--side-by-side", "poll,blocking", "--width", "40"], capture_output=True, text=True,
                      timeout=60)
if side.returncode != 0 or not re.match(r"poll +\| blocking +\|", side.stdout):
    sys.exit(f"--side-by-side: exit {side.returncode}, output {side.stdout[:200]!r}")
bad = subprocess.run([trace_models, "--backend", "kqueue"], capture_output=True, text=True, timeout=60)
if bad.returncode != 2 or "unknown backend 'kqueue'" not in bad.stderr:
    sys.exit(f"--backend kqueue: exit {bad.returncode}, stderr {bad.stderr!r}")

# Trace mode off leaves nothing behind: none of its format strings in an ordinary binary
# (they are in trace_models, which shows the check can see them).
def has_trace_text(path):
    data = open(path, "rb").read()
    return any(s in data for s in (b"park fd %d", b"recv(fd %d, %zu)", b"[t%u] "))

if not has_trace_text(trace_models):
    sys.exit("the trace text was not found in trace_models itself: the check below proves nothing")
if has_trace_text(ordinary):
    sys.exit(f"{ordinary} (built without WEFT_TRACE) contains trace text: trace mode off is not free")
print("trace mode off: no trace text in", ordinary.rsplit("/", 1)[-1])
