"""`mlgo trace`: record (features, default-proxy action, reward) for every decision of a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.cli.common import (
    add_problem_args,
    load_corpus,
    policy_spec,
    report_failures,
    run_with_progress,
    setup_gin,
)
from mlgo.workers.tasks import ModuleTask


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="record decisions of a policy (default: the default proxy) over a corpus")
    add_problem_args(p)
    p.add_argument("--policy", default=None,
                   help="who decides while tracing (default: the problem's default proxy)")
    p.add_argument("-o", "--output", required=True, type=Path, help="trace directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.problems import get_problem

    gin_config = setup_gin(args)
    corpus = load_corpus(args)
    problem = get_problem(args.problem)
    modules = trace_modules(args, problem, corpus.modules, gin_config)
    return 0 if modules else 1


def trace_modules(args: argparse.Namespace, problem, modules, gin_config: str) -> int:
    """Trace `modules` into args.output; returns how many modules had decisions."""
    from mlgo.traces import TraceWriter

    header = problem.header()
    proxy = {"inlining": "cost-threshold", "regalloc": "proxy"}[problem.name]
    spec = policy_spec(args.policy or proxy)
    tasks = [ModuleTask(problem.name, m, spec, record=True, gin_config=gin_config, timeout=args.timeout)
             for m in modules]
    writer = TraceWriter(args.output, header, {"problem": problem.name,
                                               "policy": args.policy or proxy})
    failures, no_decisions = [], 0
    for out in run_with_progress(args, tasks, "trace"):
        if not out.ok:
            failures.append(out)
        elif out.actions is None:
            no_decisions += 1
        else:
            writer.add(out)
    writer.close({"failed": [f.module for f in failures], "no_decisions": no_decisions})
    print(f"traced {writer.modules} module(s), {writer.decisions} decision(s) -> {args.output} "
          f"({no_decisions} with no decision, {len(failures)} failed)")
    report_failures([(f.module, f.error) for f in failures], args.output / "failures.json")
    return writer.modules
