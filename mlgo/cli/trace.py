"""`mlgo trace`: record (features, default-proxy action, reward) for every decision of a corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlgo.cli.common import add_problem_args, load_corpus, report_failures, setup_gin


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="record decisions of a policy (default: the default proxy) over a corpus")
    add_problem_args(p)
    p.add_argument("--policy", default=None,
                   help="who decides while tracing (default: the problem's default proxy)")
    p.add_argument("-o", "--output", required=True, type=Path, help="trace directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.problems import get_problem
    from mlgo.traces import FAILURES, trace_modules
    from mlgo.workers.pool import make_pool

    gin_config = setup_gin(args)
    corpus = load_corpus(args)
    pool = make_pool(args.workers or None, args.ray)
    try:
        summary = trace_modules(get_problem(args.problem), corpus.modules, args.output,
                                pool=pool, policy=args.policy, gin_config=gin_config,
                                timeout=args.timeout)
    finally:
        pool.close()
    print(summary.format())
    report_failures(summary.failures)
    if summary.failures:
        print(f"  full errors: {args.output / FAILURES}", file=sys.stderr)
    return 0 if summary.modules else 1
