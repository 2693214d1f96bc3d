#!/usr/bin/env python3
"""A fake clang-19 that speaks LLVM's interactive protocol, for fault-injection tests.

FAKE_MODE selects the behaviour: ok, crash, hang_before_open, hang_after_header, garbage,
truncated, exit_before_open, clean_no_channel, fail_after, no_read (sends
FAKE_DECISIONS observations without reading any advice, then hangs). FAKE_DECISIONS sets how many
observations to send (default 3). FAKE_OBJECT is copied to the -o path on success."""

import json
import os
import shutil
import signal
import struct
import sys
import time

args = sys.argv[1:]
if "--version" in args:
    print("Debian clang version 19.1.7 (fake)")
    sys.exit(0)
mode = os.environ.get("FAKE_MODE", "ok")
n = int(os.environ.get("FAKE_DECISIONS", "3"))
base = None
for a in args:
    for flag in ("-inliner-interactive-channel-base=", "-regalloc-evict-interactive-channel-base="):
        if a.startswith(flag):
            base = a[len(flag):]
out = args[args.index("-o") + 1] if "-o" in args else None

if mode == "hang_before_open":
    time.sleep(3600)
if mode == "exit_before_open":
    print("fake: error: cannot read input", file=sys.stderr)
    sys.exit(1)
if mode == "crash_before_open":
    os.kill(os.getpid(), signal.SIGSEGV)


def finish() -> None:
    if out and os.environ.get("FAKE_OBJECT"):
        shutil.copy(os.environ["FAKE_OBJECT"], out)
    sys.exit(0)


if base is None or mode == "clean_no_channel":
    finish()

fin = open(base + ".in", "rb")
fout = open(base + ".out", "wb")
header = {
    "features": [
        {"name": "cost_estimate", "type": "int64_t", "port": 0, "shape": [1]},
        {"name": "threshold", "type": "int64_t", "port": 0, "shape": [1]},
        {"name": "weights", "type": "float", "port": 0, "shape": [2, 2]},
    ],
    "advice": {"name": "inlining_decision", "type": "int64_t", "port": 0, "shape": [1]},
}
if mode == "garbage":
    fout.write(b"\x00\xffthis is not json\n")
    fout.flush()
    time.sleep(0.2)
    sys.exit(0)
fout.write(json.dumps(header).encode() + b"\n")
fout.flush()
if mode == "hang_after_header":
    time.sleep(3600)
fout.write(b'{"context": "f"}\n{"context": "g"}\n')
if mode == "no_read":
    for i in range(n):
        fout.write(b'{"observation":%d}\n' % i + struct.pack("<qq4f", i, 15, 0, 0, 0, 0) + b"\n")
    fout.flush()
    time.sleep(3600)
answers = []
for i in range(n):
    fout.write(json.dumps({"observation": i}).encode() + b"\n")
    body = struct.pack("<qq", i * 10, 15) + struct.pack("<4f", 0.5, 1.5, -2.0, float(i))
    if mode == "truncated" and i == n - 1:
        fout.write(body[:5])
        fout.flush()
        sys.exit(0)
    fout.write(body + b"\n")
    fout.flush()
    if mode == "crash" and i == n - 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    raw = fin.read(8)
    if len(raw) != 8:
        print("fake: advice channel closed", file=sys.stderr)
        sys.exit(3)
    answers.append(struct.unpack("<q", raw)[0])
fout.close()
if os.environ.get("FAKE_ANSWERS"):
    with open(os.environ["FAKE_ANSWERS"], "w") as f:
        json.dump(answers, f)
if mode == "fail_after":
    print("fake: error: backend failed", file=sys.stderr)
    sys.exit(1)
finish()
