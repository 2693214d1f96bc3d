"""What a regalloc policy does to the code it compiles: lua5.4's interpreter built at -O2 with
plain clang-19 (the default eviction advisor) and through mlgo-clang's native launcher serving
each policy, then run under callgrind on a CPU-bound Lua program.

Reported per variant: the interpreter's .text, the weighted spill+reload+copy cost summed over
its objects' register-allocator remarks, and the dynamic instruction count (callgrind's Ir,
repeatable run to run, unlike seconds on this shared machine). The program's output must be
the same for every variant.
Usage: python benchmarks/regalloc_callgrind.py [--policy regalloc] [--policy proxy] ...
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlgo.compiler.measure import parse_regalloc_remarks, text_size
from mlgo.lua_demo import lua_sources
from mlgo.problems.regalloc.programs import LUA_PROGRAM as PROGRAM
from mlgo.serving.launcher import launcher_for
from mlgo_base import process, toolchain
from mlgo_base.change import relative_change

FLAGS = ["-O2", "-c", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX"]
REMARKS = ["-fsave-optimization-record=yaml", "-foptimization-record-passes=regalloc"]


def build(cc: str, src: Path, out: Path, env: dict[str, str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in src.glob("*.c") if p.name != "luac.c")

    def one(c: Path) -> Path:
        obj = out / (c.stem + ".o")
        cmd = [cc, *FLAGS, *REMARKS, f"-foptimization-record-file={obj.with_suffix('.yaml')}",
               "-I", str(src), str(c), "-o", str(obj)]
        r = process.run(cmd, what=f"compiling {c.name}", timeout=600, env=env, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{c}: compile failed with {cc}: {r.stderr.strip()[-1500:]}")
        return obj

    with ThreadPoolExecutor(2) as ex:
        objs = list(ex.map(one, sources))
    exe = out / "lua"
    process.run([toolchain.clang().path, *map(str, objs), "-o", str(exe), "-lm", "-ldl"],
                what="linking lua", timeout=300)
    return exe


def spill_cost(out: Path) -> float:
    """Summed over the objects' remarks, as mlgo's reward counts it (per-function remarks)."""
    return sum(parse_regalloc_remarks(y).total for y in out.glob("*.yaml"))


def callgrind(exe: Path) -> tuple[int, str]:
    r = process.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                     str(exe), "-e", PROGRAM], what="running lua under callgrind", timeout=1800,
                    check=False)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"{exe}: callgrind run failed: {r.stderr[-1500:]}")
    return int(m.group(1)), r.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", action="append", default=[],
                    help="regalloc policy for mlgo-clang (name or directory); default: regalloc, proxy")
    args = ap.parse_args()
    policies = args.policy or ["regalloc", "proxy"]
    src = lua_sources()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load}; lua sources {src}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlgo-rcg-") as tmp:
        variants = [("clang-19 -O2 (default eviction)", toolchain.clang().path, dict(os.environ))]
        for p in policies:
            env = dict(os.environ, MLGO_REGALLOC_POLICY=p)
            os.environ["MLGO_REGALLOC_POLICY"] = p
            variants.append((f"mlgo-clang, policy {p}", launcher_for("clang"), env))
        for i, (label, cc, env) in enumerate(variants):
            out = Path(tmp) / str(i)
            exe = build(cc, src, out, env)
            ir, output = callgrind(exe)
            rows.append((label, text_size(exe), spill_cost(out), ir, output))
    base = rows[0]
    print(f"\n{'variant':36s} {'.text':>8s} {'spill cost':>12s} {'vs default':>10s} "
          f"{'Ir (callgrind)':>15s} {'vs default':>10s}")
    for label, text, cost, ir, _ in rows:
        print(f"{label:36s} {text:8d} {cost:12.0f} {100 * relative_change(base[2], cost):+9.2f}% "
              f"{ir:15d} {100 * relative_change(base[3], ir):+9.3f}%")
    outputs = {r[4] for r in rows}
    print(f"\nprogram output: {rows[0][4]!r} ({'same for every variant' if len(outputs) == 1 else 'DIFFERS'})")
    if len(outputs) != 1:
        raise SystemExit("the interpreters disagree")


if __name__ == "__main__":
    main()
