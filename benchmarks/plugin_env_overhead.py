"""Compile-time cost of inliner plugins vs plain clang-19 -Oz, side by side on corpus modules.

Every module's bitcode is compiled with its recorded arguments at -Oz, plainly and once with each
plugin given, interleaved module by module (so that load from other work falls on every variant
alike), for several rounds. CPU time is the compiler processes' user+sys (getrusage of children):
far less sensitive to other load than wall time. Optimizer and code generation only (no
frontend), so the ratios are larger than a build from sources would show.
Usage: python benchmarks/plugin_env_overhead.py CORPUS [CORPUS ...] --plugin LABEL=SO
       [--plugin LABEL=SO ...] [--rounds 3] [--max-modules N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo_base import process


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+", type=Path)
    ap.add_argument("--plugin", action="append", required=True, metavar="LABEL=SO")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-modules", type=int, default=0, help="per corpus (0: all)")
    args = ap.parse_args()
    variants = {"plain -Oz": []}
    for spec in args.plugin:
        label, so = spec.split("=", 1)
        variants[label] = [f"-fpass-plugin={so}"]
    modules = []
    for path in args.corpus:
        mods = Corpus.load(path).modules
        modules += mods[: args.max_modules] if args.max_modules else mods
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGO_PLUGIN", "MLGO_DECISION"))}
    cpu = dict.fromkeys(variants, 0.0)
    wall = dict.fromkeys(variants, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.o")
        for r in range(args.rounds):
            for i, m in enumerate(modules):
                # Rotate which variant goes first, so none always runs on a cold cache.
                names = list(variants)
                names = names[(i + r) % len(names):] + names[:(i + r) % len(names)]
                for name in names:
                    argv = ["clang-19", *m.compile_args(opt_level="-Oz", extra=variants[name]),
                            "-o", out]
                    c0, t0 = _cpu(), time.perf_counter()
                    process.run(argv, what=f"compiling {m.name} ({name})", timeout=600, env=env)
                    wall[name] += time.perf_counter() - t0
                    cpu[name] += _cpu() - c0
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{len(modules)} modules x {args.rounds} rounds")
    base = cpu["plain -Oz"]
    for name in variants:
        print(f"{name:24s} cpu {cpu[name]:8.2f} s ({cpu[name] / base - 1:+.2%})  "
              f"wall {wall[name]:8.2f} s")


if __name__ == "__main__":
    main()
