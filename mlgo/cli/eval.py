"""`mlgo eval`: a policy (directory or built-in heuristic) vs the default, over a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.cli.common import (
    add_problem_args,
    load_corpus,
    report_failures,
    setup_gin,
)
from mlgo.policies.shipped import shipped_names
from mlgo.workers.pool import make_pool, run_with_progress
from mlgo.workers.tasks import ModuleTask, PolicySpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare a policy with the default heuristic over a corpus")
    add_problem_args(p)
    p.add_argument("--policy", required=True,
                   help="policy directory, or a built-in: default, llvm-default, cost-threshold, "
                   "never, always (inlining); default, proxy, default-rule, never, first-valid "
                   "(regalloc) (docs/eval.md, 'Built-in baseline policies'); or a shipped "
                   f"policy: {', '.join(shipped_names()) or 'none installed'}")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--plot", type=Path, default=None,
                   help="per-module distribution PNG (default: next to --json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.evaluate import collect, format_table, plot, write_json
    from mlgo.problems import get_problem

    gin_config = setup_gin(args)
    corpus = load_corpus(args)
    problem = get_problem(args.problem)
    spec = PolicySpec.named(args.policy)
    if spec.builtin is not None:
        problem.heuristic(spec.builtin)  # unknown names fail here, not in every worker
    tasks = [ModuleTask(problem.name, m, spec, gin_config=gin_config, timeout=args.timeout)
             for m in corpus.modules]
    pool = make_pool(args.workers or None, args.ray)
    try:
        rep = collect(problem.name, args.policy, problem.objective, corpus,
                      run_with_progress(pool, tasks, "eval"))
    finally:
        pool.close()
    print(format_table(rep))
    if args.json:
        write_json(rep, args.json)
        print(f"report: {args.json}")
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot_path and rep.modules:
        plot(rep, plot_path)
        print(f"plot: {plot_path}")
    report_failures([(f["module"], f["error"]) for f in rep.failures])
    return 0 if rep.modules else 1
