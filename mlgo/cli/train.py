"""`mlgo train`: behavioral cloning, PPO or ES for a problem over a corpus."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from corpus_tools.corpus import atomic_write_text
from mlgo.checks import float_arg, int_arg
from mlgo.cli.common import add_problem_args, load_corpus, setup_gin
from mlgo.errors import MlgoError

log = logging.getLogger(__name__)
ALGORITHMS = ("bc", "ppo", "es")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy (bc warm start, ppo, es)")
    add_problem_args(p)
    p.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    p.add_argument("--output", "-o", required=True, type=Path,
                   help="run directory; run the same command again to resume a killed run")
    p.add_argument("--warmstart", type=Path, default=None,
                   help="policy directory to start from (e.g. a bc run's OUT/best)")
    p.add_argument("--trace", type=Path, default=None,
                   help="trace for bc and for the vocab (default: traced into OUT/trace)")
    p.add_argument("--vocab", type=Path, default=None,
                   help="feature quantiles (default: from the warm start, or built into OUT/vocab)")
    p.add_argument("--validation-fraction", type=float_arg(lo=0.0, hi=1.0, hi_open=True),
                   default=0.2, help="share of the modules held out for validation, in [0, 1)")
    p.add_argument("--seed", type=int_arg(lo=0), default=0)
    p.set_defaults(func=run)


def _ensure_trace(args, problem, corpus, gin_config: str) -> Path:
    """A trace of the default proxy over every module (built once, reused on resume; bc
    trains on the training split's decisions and reports agreement on the others)."""
    from mlgo.cli import trace as trace_cmd
    from mlgo.traces import META

    if args.trace:
        return args.trace
    out = args.output / "trace"
    if (out / META).is_file():
        return out
    log.info("tracing the default heuristic's decisions into %s", out)
    sub = argparse.Namespace(**vars(args))
    sub.output, sub.policy = out, None
    sub.max_modules = 0
    trace_cmd.trace_modules(sub, problem, corpus.modules, gin_config)
    return out


def _network_and_params(args, problem, corpus, gin_config: str):
    from mlgo.cli.vocab import build_vocab
    from mlgo.policies.checkpoint import load_policy

    structure = args.output / "structure"
    if (structure / "policy.json").is_file():  # resuming: the run's own network
        net, params, _ = load_policy(structure, problem=problem.name)
        return net, params
    if args.warmstart:
        net, params, meta = load_policy(args.warmstart, problem=problem.name)
        header = problem.header()
        net.check_features(header)
        return net, params
    vocab = args.vocab
    if vocab is None:
        vocab = args.output / "vocab"
        if not vocab.is_dir():
            # Built aside and renamed, so a run killed mid-way never leaves half a vocab.
            trace = _ensure_trace(args, problem, corpus, gin_config)
            tmp = args.output / "vocab.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            build_vocab(trace, tmp)
            tmp.rename(vocab)
    net = problem.build_network(problem.header(), vocab)
    return net, net.init_params(args.seed)


def default_gin_file(problem: str, algorithm: str) -> Path | None:
    """The problem's own defaults for an algorithm: mlgo/problems/<problem>/<algorithm>.gin."""
    import mlgo.problems

    path = Path(mlgo.problems.__file__).parent / problem / f"{algorithm}.gin"
    return path if path.is_file() else None


def run(args: argparse.Namespace) -> int:
    from mlgo.problems import get_problem
    from mlgo.training.run import run_lock

    # The problem's gin file first, so --gin_file and --gin_bindings override it.
    defaults = default_gin_file(args.problem, args.algorithm)
    if defaults is not None:
        args.gin_file = [defaults, *args.gin_file]
    gin_config = setup_gin(args)
    corpus = load_corpus(args)
    problem = get_problem(args.problem)
    args.output.mkdir(parents=True, exist_ok=True)
    with run_lock(args.output):
        return _train(args, problem, corpus, gin_config)


def _train(args: argparse.Namespace, problem, corpus, gin_config: str) -> int:
    from mlgo.training import bc, es, ppo
    from mlgo.training.run import TrainingRun
    from mlgo.workers.pool import make_pool

    _check_same_run(args)
    net, params = _network_and_params(args, problem, corpus, gin_config)
    # Stamped only once the start succeeded, so that a mistyped --warmstart leaves nothing
    # that would refuse the corrected command.
    _stamp_run(args)
    pool = make_pool(args.workers or None, args.ray)
    run_ = TrainingRun(problem=problem, corpus=corpus, output=args.output, pool=pool, network=net,
                       params=params, algorithm=args.algorithm, gin_config=gin_config,
                       timeout=args.timeout, validation_fraction=args.validation_fraction,
                       seed=args.seed, meta={"warmstart": str(args.warmstart or "")})
    try:
        if args.algorithm == "bc":
            trace = _ensure_trace(args, problem, corpus, gin_config)
            bc.train(run_, bc.BCConfig(), trace)
        elif args.algorithm == "ppo":
            ppo.train(run_, ppo.PPOConfig())
        else:
            es.train(run_, es.ESConfig())
    finally:
        run_.close()
    if run_.empty_iterations and not run_.trained_iterations:
        raise MlgoError(f"{args.output}: nothing was trained: every module failed in all "
                        f"{len(run_.empty_iterations)} iteration(s) of this run (see the "
                        "warnings above)" + ("" if (args.output / "policy").is_dir() else
                                             "; no policy was written"))
    if run_.empty_iterations:
        print(f"WARNING: {len(run_.empty_iterations)} iteration(s) trained nothing (every "
              f"module failed): {', '.join(map(str, run_.empty_iterations[:10]))}")
    best = run_.best
    print(f"done: {args.algorithm} on {problem.name}; newest policy {args.output / 'policy'}"
          + (f", best on validation {args.output / 'best'} ({100 * best:+.2f}% {problem.objective} "
             "vs default)" if best is not None else ""))
    if best is not None and best > 0:
        print(f"WARNING: even the best policy is {100 * best:+.2f}% worse than the default "
              "heuristic on the validation split; `mlgo export` will refuse it without --force")
    failed = run_.state.get("failed_modules", {})
    latest = run_.checkpointer.dir / "LATEST"
    if failed and latest.is_file():
        print(f"{len(failed)} module(s) failed at least once and were skipped; see "
              f"{run_.checkpointer.dir / latest.read_text().strip() / 'state.json'}")
    return 0


def _check_same_run(args: argparse.Namespace) -> None:
    """Refuse to resume a run directory with a different problem or algorithm."""
    stamp = args.output / "run.json"
    want = {"problem": args.problem, "algorithm": args.algorithm}
    if stamp.is_file():
        try:
            have = json.loads(stamp.read_text())
            if not isinstance(have, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise MlgoError(f"{stamp}: unreadable ({e}); it names the problem and algorithm "
                            "this directory trains: restore it, or delete it to let this "
                            "command claim the directory") from None
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise MlgoError(f"{args.output} holds a run with {', '.join(f'{k}={a}' for k, (a, _) in diff.items())}; "
                            f"use another --output for {', '.join(f'{k}={b}' for k, (_, b) in diff.items())}")


def _stamp_run(args: argparse.Namespace) -> None:
    stamp = args.output / "run.json"
    if not stamp.is_file():
        atomic_write_text(stamp, json.dumps({"problem": args.problem,
                                             "algorithm": args.algorithm}) + "\n")
