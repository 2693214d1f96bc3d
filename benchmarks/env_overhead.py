"""Wall-time cost of the interactive environment vs plain compiles of the same modules.

Side by side in one run, interleaved per module so machine noise hits both equally:
  plain        clang-19 <module args> -Oz -o out.o             (no ML flags)
  interactive  the same compile through mlgo.env with the cost-threshold policy answering
               every inlining decision over the FIFOs (Python host)
Usage: python benchmarks/env_overhead.py CORPUS [--problem inlining] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

from corpus_tools.corpus import Corpus
from mlgo.compiler.interactive import make_workdir, remove_workdir, run_compile
from mlgo.env import CompilerEnv, run_episode
from mlgo.problems import get_problem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--problem", default="inlining")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-modules", type=int, default=0)
    args = ap.parse_args()
    problem = get_problem(args.problem)
    policy = problem.heuristic({"inlining": "cost-threshold", "regalloc": "proxy"}[problem.name])
    corpus = Corpus.load(args.corpus)
    modules = corpus.modules[: args.max_modules or None]
    for m in modules:  # warm the default-size cache so the interactive side does not pay for it
        problem.baseline(m)
    plain = inter = 0.0
    decisions = 0
    for _ in range(args.repeats):
        for m in modules:
            wd = make_workdir()
            try:
                t0 = time.perf_counter()
                run_compile(problem.compile_argv(m, wd, None), m.name, wd)
                plain += time.perf_counter() - t0
            finally:
                remove_workdir(wd)
            t0 = time.perf_counter()
            res = run_episode(CompilerEnv(problem, m, record=False), policy)
            inter += time.perf_counter() - t0
            decisions += max(res.num_decisions, 0)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}")
    print(f"corpus: {args.corpus}, {len(modules)} modules x {args.repeats} repeats, problem {problem.name}")
    print(f"plain compiles:       {plain:8.2f} s")
    print(f"interactive (mlgo):   {inter:8.2f} s")
    print(f"ratio interactive/plain: {inter / plain:.3f}  (overhead {100 * (inter / plain - 1):+.1f}%)")


if __name__ == "__main__":
    main()
