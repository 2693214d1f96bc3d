"""Compile time of a whole small build through mlgo-clang vs plain clang-19.

Side by side in one run; every repeat compiles each of lua's sources once with each compiler,
interleaved source by source in an order that rotates from source to source, so that machine
noise hits all three alike (timing whole builds one after another instead let load swings on
this shared machine land on one compiler):
  plain    clang-19 -O2 -c -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -I src src/X.c   (no ML flags)
  native   the same through the program `mlgo-clang --print-launcher` prints (no Python)
  python   the same through the `mlgo-clang` console script (Python, which then execs the
           same program)
Both serve the same regalloc policy (MLGO_REGALLOC_POLICY, default default-rule); their objects are
checked to be identical. Compiles run one at a time (a serial build).
Besides wall time it reports CPU time (user+sys of every process a build started: clang, the
program, Python; getrusage(RUSAGE_CHILDREN)), which load on the other cores inflates far less
than wall time. Where the native program's time goes: the eviction decisions of each source
are counted (MLGO_HOST_DECISION_LOG, untimed build) and the per-source gap native - plain is
fitted as a fixed cost per compile (program start-up, FIFOs) plus a cost per decision (the
round trip clang -> program -> clang).
Usage: python benchmarks/wrapper_overhead.py [--lua DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlgo.serving.launcher import DEFAULT_REGALLOC_POLICY, launcher_for
from mlgo_base import process
from mlgo_base.toolchain import locate

LUA_FLAGS = ["-O2", "-c", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-I", "src"]


def default_lua_dir() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.cache/mlgo/debian/build/lua5.4-*/src")))
    return str(Path(found[-1]).parent) if found else None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def compile_one(cc: str, lua: Path, src: str, out: Path,
                env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds to compile lua's src/`src` with `cc` into directory `out`."""
    c0, t0 = _children_cpu(), time.perf_counter()
    process.run([cc, *LUA_FLAGS, f"src/{src}", "-o", str(out / (src[:-2] + ".o"))],
                what=f"compiling {src} with {cc}", timeout=600, cwd=lua, env=env)
    return time.perf_counter() - t0, _children_cpu() - c0


def machine() -> str:
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()}, {model}, {os.cpu_count()} cores, load average {load}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lua", default=default_lua_dir(),
                    help="an unpacked lua5.4 tree (with src/); default: the Debian build cache")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not args.lua or not (Path(args.lua) / "src").is_dir():
        sys.exit(f"{args.lua}: no lua source tree with src/ (pass --lua)")
    lua = Path(args.lua)
    sources = sorted(p.name for p in (lua / "src").glob("*.c"))
    compilers = {
        "plain": locate("clang"),
        "native": launcher_for("clang"),
        "python": str(Path(sys.executable).parent / "mlgo-clang"),
    }
    policy = os.environ.get("MLGO_REGALLOC_POLICY", DEFAULT_REGALLOC_POLICY)
    names = list(compilers)
    work = Path(tempfile.mkdtemp(prefix="wrapper-overhead-"))
    # wall[name][src] and cpu[name][src]: one entry per repeat
    wall = {n: {s: [] for s in sources} for n in names}
    cpu = {n: {s: [] for s in sources} for n in names}
    decisions: dict[str, int] = {}
    try:
        log = work / "decisions.tsv"
        for name, cc in compilers.items():  # warm caches and count decisions; not timed
            (work / "warm" / name).mkdir(parents=True)
            for src in sources:
                env = None
                if name == "native":
                    env = dict(os.environ, MLGO_HOST_DECISION_LOG=str(log))
                    before = len(log.read_text().splitlines()) if log.exists() else 0
                compile_one(cc, lua, src, work / "warm" / name, env)
                if name == "native":
                    decisions[src] = len(log.read_text().splitlines()) - before
        objects = {name: {p.name: p.read_bytes() for p in (work / "warm" / name).iterdir()}
                   for name in compilers}
        if objects["native"] != objects["python"]:
            sys.exit("the native launcher and the Python wrapper built different objects")
        served = objects["native"] != objects["plain"]

        for name in names:
            (work / name).mkdir()
        for r in range(args.repeats):
            for i, src in enumerate(sources):
                k = (r + i) % len(names)
                for name in names[k:] + names[:k]:
                    w, c = compile_one(compilers[name], lua, src, work / name)
                    wall[name][src].append(w)
                    cpu[name][src].append(c)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    version = process.run([compilers["plain"], "--version"], what="asking the compiler its version",
                          timeout=60).stdout.splitlines()[0]
    print(f"machine: {machine()}, Python {platform.python_version()}")
    print(f"compiler: {version}; regalloc policy {policy!r} "
          f"({'objects differ from plain' if served else 'objects equal to plain'}), "
          f"{sum(decisions.values())} eviction decisions served per build")
    print(f"lua: {lua}, {len(sources)} sources x {args.repeats} repeats, serial, interleaved "
          f"per source, flags {' '.join(LUA_FLAGS)}")
    for label, series in (("wall", wall), ("cpu", cpu)):
        per_repeat = {n: [sum(series[n][s][r] for s in sources) for r in range(args.repeats)]
                      for n in names}
        plain = per_repeat["plain"]
        for name in names:
            # Each repeat compiled every source with every compiler side by side: its ratio is
            # paired; the total ratio weighs every repeat by its length.
            ratios = [t / p for t, p in zip(per_repeat[name], plain, strict=True)]
            total = sum(per_repeat[name]) / sum(plain)
            per_compile = 1000 * (sum(per_repeat[name]) - sum(plain)) / len(sources) / args.repeats
            runs = " ".join(f"{t:.2f}" for t in per_repeat[name])
            print(f"{label:4s} {name:7s} total ratio {total:.3f}  median repeat ratio "
                  f"{statistics.median(ratios):.3f}  ({per_compile:+6.1f} ms/compile)  "
                  f"per repeat (s): {runs}")
    counts = np.array([decisions[s] for s in sources], dtype=float)
    for label, series in (("wall", wall), ("cpu", cpu)):
        gaps = np.array([1000 * (statistics.median(series["native"][s])
                                 - statistics.median(series["plain"][s])) for s in sources])
        slope, intercept = np.polyfit(counts, gaps, 1)
        print(f"{label:4s} native - plain per source (median of repeats), least squares over "
              f"{len(sources)} sources: {intercept:+.1f} ms per compile "
              f"{1000 * slope:+.0f} us per decision")

if __name__ == "__main__":
    main()
