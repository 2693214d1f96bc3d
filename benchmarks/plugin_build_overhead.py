"""Compile CPU of whole CMake package builds, plain clang -Oz against the same build serving a
policy through the inliner plugin, side by side.

Each project is configured and built from its sources in a fresh build directory with the
initial-cache files `mlgo tune` writes: the plain one (clang -Oz, lld) and `mlgo cmake-flags`'
(the same plus `-fpass-plugin` and lld loading the plugin), MinSizeRel. Variants alternate
within each round and the order flips every round, so load from other work falls on both
alike. The figure is the CPU time (user+sys, getrusage of children) of `cmake --build` with one
job (configuring, which is the same for both but for the plugin's load in CMake's compiler
probes, is not counted); wall time and the load average are printed beside it. Every plugin
build must also have decided through the policy in every module it compiled
(MLGO_DECISION_SUMMARY, no module noted `not-size`), so a build that silently lost the plugin
cannot pass for a cheap one.

Usage: python benchmarks/plugin_build_overhead.py --project NAME=SRC_DIR [--project ...]
       [--policy inlining-oz] [--plugin SO] [--rounds 3] [--cmake-arg=-DOPTION=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mlgo.serving.cmake import initial_cache
from mlgo.serving.plugin import plugin_for
from mlgo.tune.project import plain_cache_text
from mlgo_base import process, toolchain


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def build_once(src: Path, cache: Path, build: Path, cmake_args: list[str], env: dict) -> tuple[float, float]:
    """CPU and wall seconds of building `src` from scratch (configure not counted)."""
    process.run(["cmake", "-C", str(cache), "-DCMAKE_BUILD_TYPE=MinSizeRel", *cmake_args,
                 "-S", str(src), "-B", str(build)], what=f"configuring {src}", timeout=600, env=env)
    c0, t0 = _cpu(), time.perf_counter()
    process.run(["cmake", "--build", str(build), "-j", "1"], what=f"building {src}", timeout=3600,
                env=env)
    return _cpu() - c0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", action="append", required=True, metavar="NAME=SRC_DIR")
    ap.add_argument("--policy", default="inlining-oz")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cmake-arg", action="append", default=[])
    ap.add_argument("--plugin", metavar="SO", help="a plugin already built for POLICY (default: "
                    "build it from this checkout)")
    args = ap.parse_args()
    projects = {}
    for spec in args.project:
        name, src = spec.split("=", 1)
        if not (Path(src) / "CMakeLists.txt").is_file():
            ap.error(f"{src}: no CMakeLists.txt")
        projects[name] = Path(src).resolve()
    plugin = args.plugin or str(plugin_for(args.policy))
    compilers = {"C": toolchain.locate("clang"), "CXX": toolchain.locate("clang++")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGO_PLUGIN", "MLGO_DECISION"))}
    print(f"policy {args.policy}, plugin {plugin}; {os.cpu_count()} cores")
    print(f"start: {_uptime()}", flush=True)
    cpu = {(p, v): [] for p in projects for v in ("plain", "plugin")}
    wall = {(p, v): [] for p in projects for v in ("plain", "plugin")}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {"plain": Path(tmp) / "plain.cmake", "plugin": Path(tmp) / "mlgo.cmake"}
        caches["plain"].write_text(plain_cache_text())
        caches["plugin"].write_text(initial_cache(plugin, args.policy, compilers))
        for r in range(args.rounds):
            for i, project in enumerate(projects):
                order = ("plain", "plugin") if (r + i) % 2 == 0 else ("plugin", "plain")
                for variant in order:
                    build = Path(tmp) / f"build-{project}-{variant}-{r}"
                    e = dict(env)
                    summary = Path(tmp) / f"summary-{project}-{r}.txt"
                    if variant == "plugin":
                        e["MLGO_DECISION_SUMMARY"] = str(summary)
                    c, w = build_once(projects[project], caches[variant], build, args.cmake_arg, e)
                    cpu[project, variant].append(c)
                    wall[project, variant].append(w)
                    if variant == "plugin":
                        check_served(summary, project)
                    subprocess.run(["rm", "-rf", str(build)], check=True)
                print(f"round {r + 1} {project}: plain {cpu[project, 'plain'][-1]:.2f} s, "
                      f"plugin {cpu[project, 'plugin'][-1]:.2f} s CPU "
                      f"({cpu[project, 'plugin'][-1] / cpu[project, 'plain'][-1] - 1:+.2%}); "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"end: {_uptime()}")
    print(f"CPU (user+sys) of `cmake --build -j 1`, {args.rounds} rounds, interleaved:")
    for project in projects:
        plain, served = cpu[project, "plain"], cpu[project, "plugin"]
        paired = [s / p - 1 for p, s in zip(plain, served, strict=True)]
        print(f"  {project}: plain median {statistics.median(plain):.2f} s "
              f"[{min(plain):.2f}-{max(plain):.2f}], plugin median {statistics.median(served):.2f} s "
              f"[{min(served):.2f}-{max(served):.2f}]; medians {statistics.median(served) / statistics.median(plain) - 1:+.2%}; "
              f"per round {', '.join(f'{x:+.2%}' for x in paired)}; wall medians "
              f"{statistics.median(wall[project, 'plain']):.1f} s / "
              f"{statistics.median(wall[project, 'plugin']):.1f} s")
    total_plain = sum(statistics.median(cpu[p, "plain"]) for p in projects)
    total_served = sum(statistics.median(cpu[p, "plugin"]) for p in projects)
    print(f"  all projects, sum of medians: plain {total_plain:.2f} s, plugin {total_served:.2f} s "
          f"({total_served / total_plain - 1:+.2%})")
    # Other work on the machine only adds CPU time to a build, so each variant's fastest round is
    # the figure least moved by it.
    min_plain = sum(min(cpu[p, "plain"]) for p in projects)
    min_served = sum(min(cpu[p, "plugin"]) for p in projects)
    print(f"  all projects, sum of each variant's fastest round: plain {min_plain:.2f} s, plugin "
          f"{min_served:.2f} s ({min_served / min_plain - 1:+.2%})")
    # Each round's builds of every project together: the spread of the total across rounds.
    rounds = [sum(cpu[p, "plugin"][r] for p in projects) / sum(cpu[p, "plain"][r] for p in projects) - 1
              for r in range(args.rounds)]
    print(f"  all projects, per round: {', '.join(f'{x:+.2%}' for x in rounds)}; worst project-round "
          f"{max(s / p - 1 for q in projects for p, s in zip(cpu[q, 'plain'], cpu[q, 'plugin'], strict=True)):+.2%}")


def check_served(summary: Path, project: str) -> None:
    """Every module the plugin build compiled was decided by the policy, at -Oz."""
    if not summary.is_file():
        raise SystemExit(f"{project}: the plugin build wrote no decision summary: was it served?")
    rows = [line.split("\t") for line in summary.read_text().splitlines()]
    odd = [r for r in rows if len(r) != 6 or "not-size" in r[5]]
    if not rows or odd:
        raise SystemExit(f"{project}: {len(rows)} modules served, {len(odd)} not at -Oz/-Os")
    summary.unlink()


if __name__ == "__main__":
    main()
