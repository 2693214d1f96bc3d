"""`mlgo train`: behavioral cloning, PPO, ES or imitation for a problem over a corpus
(mlgo/training/pipeline.py does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.cli.args import float_arg, int_arg
from mlgo.cli.common import add_problem_args, load_corpus, setup_gin
from mlgo.training.pipeline import ALGORITHMS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy (bc warm start, ppo, es, imitation)")
    add_problem_args(p)
    p.add_argument("--algorithm", required=True, choices=ALGORITHMS,
                   help="bc: behavioral cloning of the default proxy's decisions (the warm "
                   "start); ppo, es: reinforcement learning, evolution strategies (usually "
                   "from --warmstart); imitation: clone the best decisions of a per-module "
                   "search (docs/train.md)")
    p.add_argument("--output", "-o", required=True, type=Path,
                   help="run directory; run the same command again to resume a killed run")
    p.add_argument("--warmstart", type=Path, default=None,
                   help="policy directory to start from (e.g. a bc run's OUT/best)")
    p.add_argument("--trace", type=Path, default=None,
                   help="trace for bc and for the vocab (default: traced into OUT/trace)")
    p.add_argument("--vocab", type=Path, default=None,
                   help="feature quantiles (default: from the warm start, or built into OUT/vocab)")
    p.add_argument("--search", type=Path, default=None,
                   help="imitation: an `mlgo search` directory to learn from in round 0 "
                   "(default: search afresh); also the vocab's trace when none is given")
    held_out = p.add_mutually_exclusive_group()
    held_out.add_argument("--validation-fraction", type=float_arg(lo=0.0, hi=1.0, hi_open=True),
                          default=0.2, help="share of the modules held out for validation (whole "
                          "projects, chosen by --seed), in [0, 1)")
    held_out.add_argument("--validation-projects", type=_project_list, metavar="P,Q",
                          help="validate on exactly these projects' modules and train on the "
                          "rest (instead of --validation-fraction); a resumed run must have "
                          "been started with the same projects")
    p.add_argument("--seed", type=int_arg(lo=0), default=0,
                   help="seeds the train/validation split, the fresh network's weights and "
                   "the sampling (default 0)")
    p.set_defaults(func=run)


def _project_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated project names")
    return names


def run(args: argparse.Namespace) -> int:
    from mlgo.configurables import default_gin_file
    from mlgo.problems import get_problem
    from mlgo.training.pipeline import train
    from mlgo.workers.pool import make_pool

    # The problem's gin file first, so --gin_file and --gin_bindings override it.
    defaults = default_gin_file(args.problem, args.algorithm)
    if defaults is not None:
        args.gin_file = [defaults, *args.gin_file]
    gin_config = setup_gin(args)
    corpus = load_corpus(args, check_level=False)  # training.pipeline.train checks it
    problem = get_problem(args.problem)
    search_pool = None
    if args.algorithm == "imitation":
        from mlgo.search import run_search_task

        search_pool = make_pool(args.workers or None, args.ray, task_fn=run_search_task)
    result = train(problem, args.algorithm, corpus, args.output,
                   pool=make_pool(args.workers or None, args.ray), gin_config=gin_config,
                   warmstart=args.warmstart, trace=args.trace, vocab=args.vocab,
                   validation_fraction=args.validation_fraction, seed=args.seed,
                   timeout=args.timeout, search=args.search, search_pool=search_pool,
                   validation_projects=args.validation_projects)
    best = result.best
    print(f"done: {args.algorithm} on {problem.name}; newest policy {args.output / 'policy'}"
          + (f", best on validation {args.output / 'best'} ({100 * best:+.2f}% {problem.objective} "
             "vs default)" if best is not None else ""))
    if best is not None and best > 0:
        print(f"WARNING: even the best policy is {100 * best:+.2f}% worse than the default "
              "heuristic on the validation split; `mlgo export` will refuse it without --force")
    if result.empty_iterations:
        print(f"WARNING: {len(result.empty_iterations)} iteration(s) trained nothing (every "
              f"module failed): {', '.join(map(str, result.empty_iterations[:10]))}")
    if result.failed_modules and result.checkpoint_dir is not None:
        print(f"{len(result.failed_modules)} module(s) failed at least once and were skipped; "
              f"see {result.checkpoint_dir / 'state.json'}")
    return 0
