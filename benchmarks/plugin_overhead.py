"""Compile-time cost of the inliner pass plugin vs plain clang-19 -Oz on a whole real build.

Side by side, interleaved file by file: every source of the project compiled once plainly and
once with -fpass-plugin, for several rounds. CPU time (user+sys of the compiler processes, from
getrusage) is reported beside wall time because it is far less sensitive to other load.
Usage: python benchmarks/plugin_overhead.py POLICY [--rounds 3]   (POLICY: a policy dir or
cost-threshold); the sources are lua5.4's from the `mlgo corpus debian lua5.4` build cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from mlgo.compiler.measure import text_size
from mlgo.lua_demo import lua_sources
from mlgo.serving.plugin import plugin_for
from mlgo_base import process


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policy")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    plugin = plugin_for(args.policy)
    src = lua_sources()
    sources = sorted(p for p in src.glob("*.c") if p.name != "luac.c")
    variants = {"plain -Oz": [], "-Oz + plugin": [f"-fpass-plugin={plugin}"]}
    wall = dict.fromkeys(variants, 0.0)
    cpu = dict.fromkeys(variants, 0.0)
    size = dict.fromkeys(variants, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for c in sources:
                for name, extra in variants.items():
                    obj = Path(tmp) / f"{c.stem}.o"
                    cmd = ["clang-19", "-Oz", "-c", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-I", str(src),
                           *extra, str(c), "-o", str(obj)]
                    c0, t0 = _cpu(), time.perf_counter()
                    process.run(cmd, what=f"compiling {c.name} ({name})", timeout=600)
                    wall[name] += time.perf_counter() - t0
                    cpu[name] += _cpu() - c0
                    if r == 0:
                        size[name] += text_size(obj)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"lua5.4: {len(sources)} sources x {args.rounds} rounds, policy {args.policy}")
    for name in variants:
        print(f"{name:14s} wall {wall[name]:7.2f} s  cpu {cpu[name]:7.2f} s  .text {size[name]}")
    a, b = variants
    print(f"ratio plugin/plain: wall {wall[b] / wall[a]:.3f}, cpu {cpu[b] / cpu[a]:.3f}")


if __name__ == "__main__":
    main()
