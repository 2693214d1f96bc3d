"""Wall time of a whole small build through mlgo-clang vs plain clang-19.

Side by side in one run; every repeat builds lua's sources once with each compiler, in an
order that rotates from repeat to repeat so machine noise hits all three alike:
  plain    clang-19 -O2 -c -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -I src src/X.c   (no ML flags)
  native   the same through the launcher `mlgo-clang --print-launcher` prints (no Python)
  python   the same through the `mlgo-clang` console script (Python per compile)
Both wrappers serve the same regalloc policy (MLGO_REGALLOC_POLICY, default proxy); their
objects are checked to be identical. Compiles run one at a time (a serial build).
Usage: python benchmarks/wrapper_overhead.py [--lua DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlgo.serving.host import _compiler
from mlgo.serving.launcher import launcher_for

LUA_FLAGS = ["-O2", "-c", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-I", "src"]


def default_lua_dir() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.cache/mlgo/debian/build/lua5.4-*/src")))
    return str(Path(found[-1]).parent) if found else None


def build(cc: str, lua: Path, sources: list[str], out: Path) -> float:
    """Seconds to compile every source with `cc`, one after another, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for src in sources:
        subprocess.run([cc, *LUA_FLAGS, f"src/{src}", "-o", str(out / (src[:-2] + ".o"))],
                       cwd=lua, check=True)
    return time.perf_counter() - t0


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
        "plain": _compiler("clang"),
        "native": launcher_for("clang"),
        "python": str(Path(sys.executable).parent / "mlgo-clang"),
    }
    policy = os.environ.get("MLGO_REGALLOC_POLICY", "proxy")
    work = Path(tempfile.mkdtemp(prefix="wrapper-overhead-"))
    try:
        for name, cc in compilers.items():  # warm caches; not timed
            build(cc, lua, sources, work / "warm" / name)
        objects = {name: {p.name: p.read_bytes() for p in (work / "warm" / name).iterdir()}
                   for name in compilers}
        if objects["native"] != objects["python"]:
            sys.exit("the native launcher and the Python wrapper built different objects")
        served = objects["native"] != objects["plain"]

        times: dict[str, list[float]] = {name: [] for name in compilers}
        names = list(compilers)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(build(compilers[name], lua, sources, work / f"r{r}" / name))
            shutil.rmtree(work / f"r{r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    version = subprocess.run([compilers["plain"], "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    print(f"machine: {machine()}, Python {platform.python_version()}")
    print(f"compiler: {version}; regalloc policy {policy!r} "
          f"({'objects differ from plain' if served else 'objects equal to plain'})")
    print(f"lua: {lua}, {len(sources)} sources x {args.repeats} repeats, serial, "
          f"flags {' '.join(LUA_FLAGS)}")
    plain = statistics.median(times["plain"])
    for name in names:
        med = statistics.median(times[name])
        per_compile = 1000 * (med - plain) / len(sources)
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:7s} median {med:6.2f} s  ratio {med / plain:.3f}  "
              f"(+{per_compile:5.1f} ms/compile)  runs: {runs}")


if __name__ == "__main__":
    main()
