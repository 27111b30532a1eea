#!/usr/bin/env python3
"""Checks weft-doctor: the text report and --json agree with each other and with the
backends built in; with WEFT_DISABLE_URING set (CTest's weft_doctor_without_uring, and
CI's step that runs the suite that way) io_uring is reported unavailable, naming the
variable; a bad argument exits 2 with a message.

    doctor_check.py WEFT_DOCTOR select,poll,...,uring
"""
import json
import os
import subprocess
import sys


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    doctor, names = sys.argv[1], sys.argv[2].split(",")
    disabled = os.environ.get("WEFT_DISABLE_URING", "") not in ("", "0")

    text = subprocess.run([doctor], capture_output=True, text=True, timeout=30)
    if text.returncode != 0:
        fail(f"weft-doctor exited {text.returncode}: {text.stderr}")
    out = text.stdout
    print(out)
    for section in ("kernel: ", "io_uring: ", "limits:", "backends:"):
        if section not in out:
            fail(f"text report lacks '{section}'")
    for limit in ("RLIMIT_NOFILE", "RLIMIT_SIGPENDING", "RLIMIT_MEMLOCK", "net.core.somaxconn",
                  "net.ipv4.ip_local_port_range"):
        if limit not in out:
            fail(f"text report lacks the limit {limit}")

    js = subprocess.run([doctor, "--json"], capture_output=True, text=True, timeout=30)
    if js.returncode != 0:
        fail(f"weft-doctor --json exited {js.returncode}")
    report = json.loads(js.stdout)
    got = [b["name"] for b in report["backends"]]
    if got != names:
        fail(f"backends {got}, built in {names}")
    uring = report["io_uring"]
    backend = {b["name"]: b for b in report["backends"]}
    if "uring" in names:
        if uring["available"] != backend["uring"]["available"]:
            fail("the io_uring section and the uring backend disagree")
        if disabled:
            if uring["available"] or "WEFT_DISABLE_URING" not in backend["uring"]["reason"]:
                fail(f"WEFT_DISABLE_URING is set but uring is reported {backend['uring']}")
            if "io_uring: unavailable: WEFT_DISABLE_URING" not in out:
                fail("the text report does not say why io_uring is unavailable")
        elif uring["available"]:
            if not uring["opcodes"] or not all(o["present"] for o in uring["opcodes"]):
                fail(f"opcodes: {uring['opcodes']}")
    for b in report["backends"]:
        if b["available"] == bool(b["reason"]):
            fail(f"{b['name']}: available={b['available']} with reason '{b['reason']}'")
        if b["name"] != "uring" and not b["available"]:
            fail(f"{b['name']} unavailable: {b['reason']}")
        line = [l for l in out.splitlines() if l.strip().startswith(b["name"] + " ")]
        if not line or (("runs here" in line[0]) != b["available"]):
            fail(f"text and JSON disagree on {b['name']}: {line}")
    for key in ("RLIMIT_NOFILE", "net.core.somaxconn", "kernel.io_uring_disabled"):
        if key not in report["limits"]:
            fail(f"JSON limits lack {key}")

    bad = subprocess.run([doctor, "--bogus"], capture_output=True, text=True, timeout=30)
    if bad.returncode != 2 or "--bogus" not in bad.stderr:
        fail(f"a bad argument: exit {bad.returncode}, stderr {bad.stderr!r}")
    print("weft-doctor: OK")


if __name__ == "__main__":
    main()
