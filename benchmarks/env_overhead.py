"""Wall-time cost of the interactive environment vs plain compiles of the same modules.

Side by side in one run, interleaved per module (the order rotates from module to module) so
machine noise hits every variant alike:
  plain        clang-19 <module args> -Oz -o out.o             (no ML flags)
  interactive  the same compile through mlgo.env with the cost-threshold policy answering
               every inlining decision over the FIFOs (Python host)
  native       (--native) the same decisions answered by benchmarks/echo_host.c: the floor of
               the protocol itself, without Python (includes one extra fork+exec per compile)
Besides wall time it reports CPU time, which the other core's load does not inflate: the
compiler's (RUSAGE_CHILDREN, per variant) and the Python host's own (RUSAGE_SELF, interactive).
Usage: python benchmarks/env_overhead.py CORPUS [--problem inlining] [--repeats 3] [--native]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo.compiler.interactive import make_workdir, remove_workdir, run_compile
from mlgo.env import CompilerEnv, run_episode
from mlgo.problems import get_problem
from mlgo_base import process


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def build_echo_host(out_dir: Path) -> str:
    exe = out_dir / "echo_host"
    src = Path(__file__).with_name("echo_host.c")
    process.run(["cc", "-O2", "-o", str(exe), str(src)], what="building the C echo host",
                timeout=300)
    return str(exe)


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--problem", default="inlining")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-modules", type=int, default=0)
    ap.add_argument("--native", action="store_true", help="also time the C echo host (inlining)")
    args = ap.parse_args()
    problem = get_problem(args.problem)
    policy = problem.heuristic({"inlining": "cost-threshold", "regalloc": "proxy"}[problem.name])
    corpus = Corpus.load(args.corpus)
    modules = corpus.modules[: args.max_modules or None]
    for m in modules:  # warm the default-size cache so the interactive side does not pay for it
        problem.baseline(m)
    problem.header()  # the once-per-process header probe is not a per-compile cost
    tmp = Path(tempfile.mkdtemp(prefix="mlgo-bench-"))
    echo = build_echo_host(tmp) if args.native else None
    variants = ["plain", "interactive"] + (["native"] if echo else [])
    wall = dict.fromkeys(variants, 0.0)
    child_cpu = dict.fromkeys(variants, 0.0)
    host_cpu = dict.fromkeys(variants, 0.0)  # this Python process: spawning, and serving
    decisions = 0

    def run(variant: str, m) -> None:
        nonlocal decisions
        c0, s0, t0 = _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF), time.perf_counter()
        if variant == "interactive":
            res = run_episode(CompilerEnv(problem, m, record=False), policy)
            decisions += max(res.num_decisions, 0)
        else:
            wd = make_workdir()
            try:
                base = wd / "channel" if variant == "native" else None
                argv = problem.compile_argv(m, wd, base)
                if variant == "native":
                    argv = [echo, str(base), "--", *argv]
                run_compile(argv, m.name, wd)
            finally:
                remove_workdir(wd)
        wall[variant] += time.perf_counter() - t0
        child_cpu[variant] += _cpu(resource.RUSAGE_CHILDREN) - c0
        host_cpu[variant] += _cpu(resource.RUSAGE_SELF) - s0

    print(f"machine: {machine()}")
    k = 0
    for _ in range(args.repeats):
        for m in modules:
            for j in range(len(variants)):
                run(variants[(k + j) % len(variants)], m)
            k += 1
    n = len(modules) * args.repeats
    print(f"corpus: {args.corpus}, {len(modules)} modules x {args.repeats} repeats, problem "
          f"{problem.name}, {decisions} decisions ({decisions / max(n, 1):.1f} per compile)")
    cpu = {v: child_cpu[v] + host_cpu[v] for v in variants}
    print(f"{'variant':12} {'wall':>9} {'compiler CPU':>13} {'Python CPU':>11} {'wall ratio':>11} "
          f"{'CPU ratio':>10}")
    for v in variants:
        print(f"{v:12} {wall[v]:8.2f}s {child_cpu[v]:12.2f}s {host_cpu[v]:10.2f}s "
              f"{wall[v] / wall['plain']:11.3f} {cpu[v] / cpu['plain']:10.3f}")
    ratio = wall["interactive"] / wall["plain"]
    extra = host_cpu["interactive"] - host_cpu["plain"]
    print(f"ratio interactive/plain: {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%); "
          f"CPU ratio {cpu['interactive'] / cpu['plain']:.3f}")
    print(f"Python CPU for serving (interactive minus plain): {1000 * extra / max(n, 1):.1f} ms "
          f"per compile, {1e6 * extra / max(decisions, 1):.0f} us per decision")
    print(f"machine after: {machine()}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
