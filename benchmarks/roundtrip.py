"""Round trip per decision of the interactive channel, without a compiler's work in the way.

benchmarks/fake_compiler.c speaks clang's side (LLVM 19's inliner header, N observations, each
answered before the next) and times write-observation -> read-advice. It is served by
  C host       benchmarks/echo_host.c (blocking reads, no deadlines): the floor of the channel
  mlgo host    mlgo.compiler.interactive.InteractiveCompile + the cost-threshold heuristic
Hosts alternate run by run. --thrash MB makes the fake compiler touch that much memory before
each observation, as a real compile evicts the host's caches between decisions.
--no-io times only the host's Python work per decision (parse the event lines, decode the
observation, run cost-threshold, encode the advice) over the same stream held in memory.
Usage: python benchmarks/roundtrip.py [--decisions 20000] [--runs 3] [--thrash 0] [--no-io]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path

from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.problems.inlining.problem import cost_threshold
from mlgo.protocol import Header, LogReader, Observation, StreamSource, TensorSpec
from mlgo_base import process

HERE = Path(__file__).parent


def _cc(src: str, out: Path) -> str:
    process.run(["cc", "-O2", "-o", str(out), str(HERE / src)], what=f"building {src}", timeout=300)
    return str(out)


def _trip(stderr: str) -> float:
    m = re.search(r"([\d.]+) us each", stderr)
    if not m:
        raise SystemExit(f"fake compiler failed: {stderr}")
    return float(m.group(1))


def c_host(echo: str, fake: list[str], base: Path) -> tuple[float, float]:
    r = process.run([echo, str(base), "--", *fake], what="the C echo host run", timeout=3600,
                    check=False)
    return _trip(r.stderr), float("nan")


def mlgo_host(fake: list[str], base: Path, n: int) -> tuple[float, float]:
    wd = make_workdir()
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        with InteractiveCompile(fake, "fake", wd, channel_base=base) as c:
            while (obs := c.next_observation()) is not None:
                c.answer(cost_threshold(obs.features))
            res = c.finish()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        remove_workdir(wd)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return _trip(res.stderr), 1e6 * cpu / max(n, 1)


def python_work(n: int) -> float:
    """Microseconds of warm Python work per decision, no I/O: the mlgo reader over an in-memory
    copy of the stream fake_compiler.c sends."""
    names = ["cost_estimate", "threshold"] + [f"feature_{i}" for i in range(2, 39)]
    header = Header(tuple(TensorSpec(x, "int64_t", (1,)) for x in names),
                    advice=TensorSpec("inlining_decision", "int64_t", (1,)))
    parts = [json.dumps(header.to_json(), separators=(",", ":")).encode() + b"\n"]
    for k in range(n):
        if k % 5 == 0:
            parts.append(b'{"context":"f%d"}\n' % k)
        values = [k % 7, 3] + [k + i for i in range(2, 39)]
        parts.append(b'{"observation":%d}\n' % k + struct.pack("<39q", *values) + b"\n")
    src = StreamSource(io.BufferedReader(io.BytesIO(b"".join(parts))))
    encode = getattr(header.advice, "encode_scalar", None) or (lambda a: header.advice.encode([a]))
    t0 = time.perf_counter()
    reader = LogReader(src)
    while (ev := reader.next_event()) is not None:
        if isinstance(ev, Observation):
            encode(cost_threshold(ev.features))
    return 1e6 * (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--thrash", type=int, default=0, help="MB the fake compiler touches per decision")
    ap.add_argument("--no-io", action="store_true", help="only the Python work per decision")
    args = ap.parse_args()
    if args.no_io:
        us = sorted(python_work(args.decisions) for _ in range(args.runs))
        print(f"Python work per decision (no I/O), median of {args.runs}: {us[len(us) // 2]:.1f} us "
              f"(min {us[0]:.1f}), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="mlgo-rt-"))
    fake_exe = _cc("fake_compiler.c", tmp / "fake_compiler")
    echo = _cc("echo_host.c", tmp / "echo_host")
    base = tmp / "channel"
    fake = [fake_exe, str(base), str(args.decisions), str(args.thrash)]
    results: dict[str, list[tuple[float, float]]] = {"C host": [], "mlgo host": []}
    for _ in range(args.runs):
        results["C host"].append(c_host(echo, fake, base))
        results["mlgo host"].append(mlgo_host(fake, base, args.decisions))
        time.sleep(0.1)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.decisions} decisions x {args.runs} runs, thrash {args.thrash} MB, load average {load}")
    for name, rs in results.items():
        trips = sorted(t for t, _ in rs)
        cpu = sorted(c for _, c in rs)
        cpu_s = f", host CPU per decision median {cpu[len(cpu) // 2]:.1f} us" if name == "mlgo host" else ""
        print(f"{name:10} round trip median {trips[len(trips) // 2]:.1f} us (min {trips[0]:.1f}){cpu_s}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
