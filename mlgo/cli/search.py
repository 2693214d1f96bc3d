"""`mlgo search`: per module, decisions that beat LLVM's own (inlining) or the default eviction
rule (regalloc, scored by the problem's objective, e.g. the trace reward) (mlgo/search.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlgo.checks import float_problem
from mlgo.cli.args import _argtype, int_arg
from mlgo.cli.common import add_problem_args, load_corpus, report_failures, setup_gin
from mlgo.workers.tasks import PolicySpec
from mlgo_base.errors import MlgoError


def _seconds(text: str) -> float:
    """'90', '90s', '30m' or '2h' in seconds."""
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower())
    return float(text[:-1] if unit else text) * (unit or 1)


duration_arg = _argtype(_seconds, lambda v: float_problem(v, 0.0, 7 * 24 * 3600.0, False, False))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="greedy flip search from LLVM's inlining decisions or the "
                       "default eviction rule, per module; writes the best trajectories as a trace")
    add_problem_args(p)
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="search directory (run the same command again to resume)")
    p.add_argument("--passes", type=int_arg(lo=1), default=2, help="passes over the call sites (default 2)")
    p.add_argument("--budget", type=int_arg(lo=0), default=0,
                   help="compiles per module, everything included (default 0: no limit)")
    p.add_argument("--guide", default=None, metavar="POLICY",
                   help="policy directory whose uncertainty orders the flips")
    p.add_argument("--guide-mode", choices=("uncertain", "disagree"), default="uncertain",
                   help="with --guide: try the least sure call sites first, or only those "
                   "where the policy disagrees with the current best")
    p.add_argument("--flips", choices=("all", "inlined", "marginal"), default="all",
                   help="which call sites to try flipping: all; only those the current best "
                   "inlines (1 -> 0; cheaper, and where most of the gain is on C); or "
                   "'marginal': those, the ones whose cost was closest to the threshold first")
    p.add_argument("--cold-tries", type=int_arg(lo=0), default=2,
                   help="regalloc: skip a function's remaining positions after this many of its "
                   "flips changed no profiled function (default 2; 0: never skip)")
    p.add_argument("--strategy", choices=("greedy", "strong"), default="greedy",
                   help="greedy: single flips from LLVM's decisions (default); strong: "
                   "inlining only, also group moves (all call sites of a callee or a caller), "
                   "pairs, perturbation, and every decision vector of modules with at most "
                   "--enumerate-max decisions")
    p.add_argument("--time-budget", type=duration_arg, default=0.0, metavar="TIME",
                   help="strong: wall time for the whole corpus, spent where the search gains "
                   "most per second (e.g. 90s, 30m, 2h; default 0: each module to its local "
                   "optimum)")
    p.add_argument("--enumerate-max", type=int_arg(lo=0, hi=12), default=8,
                   help="strong: enumerate modules with at most this many decisions "
                   "(default 8; 0: never)")
    p.add_argument("--per-module", action="store_true", help="print a line per module")
    p.add_argument("--comdat-aware", action="store_true",
                   help="charge each COMDAT text group 1/n (n: modules defining it at -Oz); "
                   "the weights go to OUT/comdat_weights.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.search import SearchConfig, format_summary, search_corpus
    from mlgo.workers.pool import make_pool

    if args.problem != "inlining" and (args.guide or args.flips != "all" or args.comdat_aware):
        raise MlgoError(f"{args.problem} search: --guide, --flips and --comdat-aware are for "
                        "inlining only")
    gin_config = setup_gin(args)
    corpus = load_corpus(args)
    guide = PolicySpec.named(args.guide) if args.guide else None
    if guide is not None and guide.builtin is not None:
        raise MlgoError(f"--guide {args.guide}: a policy directory is needed, not a built-in")
    if args.strategy == "strong" and (args.problem != "inlining" or guide or args.flips != "all"):
        raise MlgoError("--strategy strong is for inlining, without --guide and --flips")
    if args.time_budget and args.strategy != "strong":
        raise MlgoError("--time-budget is for --strategy strong")
    config = SearchConfig(args.passes, args.budget, args.guide_mode if guide else "none",
                          args.flips, args.cold_tries if args.problem == "regalloc" else 0,
                          args.strategy, args.time_budget,
                          args.enumerate_max if args.strategy == "strong" else SearchConfig.enumerate_max)
    weights = None
    pool = make_pool(args.workers or None, args.ray)
    try:
        if args.comdat_aware:
            from mlgo.search import default_comdat_weights

            weights = default_comdat_weights(corpus.modules, pool, gin_config, args.timeout)
            from mlgo_base.files import atomic_write_text

            # For PPO/ES/imitation rewards: inlining.InliningForSize.comdat_weights = '<file>'
            atomic_write_text(args.output / "comdat_weights.json", json.dumps(weights) + "\n")
    finally:
        pool.close()
    from mlgo.search import run_search_task
    from mlgo.search_schedule import run_strong_task

    pool = make_pool(args.workers or None, args.ray,
                     task_fn=run_strong_task if args.strategy == "strong" else run_search_task)
    try:
        summary = search_corpus(corpus.modules, args.output, config, pool, guide=guide,
                                gin_config=gin_config, timeout=args.timeout,
                                comdat_weights=weights,
                                identity={"guide": guide.policy_dir if guide else ""},
                                problem=args.problem)
    finally:
        pool.close()
    if args.per_module:
        from mlgo.search import format_modules

        print(format_modules(args.output, corpus.modules))
    print(format_summary(summary))
    print(f"trace of the best decisions: {args.output}")
    report_failures(summary.failed)
    return 0 if summary.modules else 1
