#!/usr/bin/env python3
"""Why bulk echo cost more than the C server: the read size. Measures server CPU per
message at 64 connections x 4096 B x depth 16 (64 KiB in flight per connection) for the
C epoll and C liburing servers and for weft's epoll_et and uring with `--buffer-size`
16 KiB and 64 KiB, `read_some` and `receive()`. Servers and load are pinned and rotated
like benchmarks/run.py's cells (it uses run.py's own functions); medians of --reps runs.

    python3 benchmarks/bulk_buffers.py [--reps 5] [--seconds 3] [--out benchmarks/results/bulk.md]

Needs the Release build (scripts/test.sh or bench.sh builds it).
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

CELL = (64, 4096, 16)


def configs():
    echo = str(run.BUILD / "benchmarks/echo_server")
    peers = run.BUILD / "benchmarks/peers"
    out = [("C epoll (64 KiB reads)", [str(peers / "c_epoll_echo")]),
           ("C liburing (16 KiB provided buffers)", [str(peers / "c_uring_echo")])]
    for backend in ("epoll_et", "uring"):
        for api in ("read_some", "receive"):
            for size in (16384, 65536):
                out.append((f"{backend} {api}, {size // 1024} KiB",
                            [echo, "--backend", backend, "--api", api, "--buffer-size", str(size)]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--out", default=str(run.ROOT / "benchmarks/results/bulk.md"))
    args = ap.parse_args()
    cfgs = configs()
    figures = {name: [] for name, _ in cfgs}
    for rep in range(args.reps):
        order = cfgs if rep % 2 == 0 else cfgs[::-1]  # rotate, as run.py does
        for name, argv in order:
            r = run.timed_run(run.Server(name, "x", argv), CELL, args.seconds, 1)
            figures[name].append(r["cpu_us_per_msg"])
            print(f"  rep {rep + 1}: {name:40} {r['cpu_us_per_msg']:.2f} us/msg", flush=True)
    base = statistics.median(figures[cfgs[0][0]])
    lines = ["# Bulk echo: what the read size costs", "",
             f"Server CPU per message at {CELL[0]} connections x {CELL[1]} B x depth {CELL[2]}, "
             f"median of {args.reps} runs of {args.seconds} s (server on CPU 0, load on CPU 1, order rotated). "
             "Made by `python3 benchmarks/bulk_buffers.py"
             f" --reps {args.reps} --seconds {args.seconds}`.", "",
             "| server | µs/msg | ÷ C epoll | runs |", "|---|---:|---:|---|"]
    for name, _ in cfgs:
        v = statistics.median(figures[name])
        lines.append(f"| {name} | {v:.2f} | {v / base:.2f} | {' '.join(f'{x:.2f}' for x in figures[name])} |")
    lines += ["", "With 16 KiB a connection's 64 KiB in flight takes four reads and four writes where the C "
              "epoll server, reading into 64 KiB, takes one of each. `echo_server` now defaults to "
              "`--buffer-size 65536`; the library's own default for provided buffers stays 16 KiB "
              "(256 of them: 4 MiB per loop rather than 16), a choice for the user to make "
              "(`options::buffer_size`).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
