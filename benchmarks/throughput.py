"""Training throughput: modules compiled and decisions served per second, 1 vs 2 workers.

What a training iteration does, measured alone: every module of CORPUS compiled through the
interactive environment by the local worker pool, once with each worker count, the policy
answering every decision in the workers (a built-in heuristic, or a trained policy's numpy
weights with --policy DIR). The default's measurements are cached first (one untimed pass), as
they are during training. Only wall time means anything here (the work is spread over worker
processes and their compilers): run it on a quiet machine; the load is printed before and after.
Usage: python benchmarks/throughput.py CORPUS [--problem inlining] [--policy cost-threshold]
       [--max-modules N] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo.workers.pool import make_pool
from mlgo.workers.tasks import ModuleTask, PolicySpec


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load}")


def run_once(tasks: list[ModuleTask], workers: int) -> tuple[float, int, int, int]:
    """(seconds, modules ok, decisions, failures) for one pass with `workers` processes."""
    pool = make_pool(workers)
    try:
        t0 = time.monotonic()
        outs = list(pool.run(tasks))
        seconds = time.monotonic() - t0
    finally:
        pool.close()
    ok = [o for o in outs if o.ok]
    return seconds, len(ok), sum(o.num_decisions for o in ok), len(outs) - len(ok)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--problem", default="inlining")
    ap.add_argument("--policy", default="cost-threshold",
                    help="built-in heuristic name or policy directory")
    ap.add_argument("--max-modules", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    corpus = Corpus.load(args.corpus)
    modules = corpus.modules[: args.max_modules] if args.max_modules else corpus.modules
    spec = (PolicySpec(policy_dir=str(Path(args.policy).resolve())) if Path(args.policy).is_dir()
            else PolicySpec(builtin=args.policy))
    tasks = [ModuleTask(args.problem, m, spec) for m in modules]
    print(f"machine: {machine()}")
    print(f"{len(tasks)} modules of {args.corpus}, problem {args.problem}, policy {args.policy}")
    run_once(tasks, 2)  # fills the default's measurement cache, as training has by then

    rows = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            rows[workers].append(run_once(tasks, workers))
    print(f"\n{'workers':>7s} {'seconds':>9s} {'modules/s':>10s} {'decisions/s':>12s} {'failed':>7s}")
    best = {}
    for workers, runs in rows.items():
        seconds, ok, decisions, failed = min(runs)  # the least disturbed repeat
        best[workers] = seconds
        print(f"{workers:7d} {seconds:9.2f} {ok / seconds:10.2f} {decisions / seconds:12.0f} "
              f"{failed:7d}")
    print(f"\nspeed-up with 2 workers: {best[1] / best[2]:.2f}x")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
