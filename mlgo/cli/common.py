"""Pieces shared by the subcommands: problem/corpus/worker flags, gin, progress, failure reports."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from corpus_tools.corpus import Corpus, atomic_write_text
from mlgo.checks import MAX_TIMEOUT, MAX_WORKERS, int_arg, timeout_arg, workers_arg
from mlgo.errors import MlgoError, summary_line
from mlgo.problems import PROBLEMS
from mlgo.workers.pool import make_pool
from mlgo.workers.tasks import ModuleOutcome, ModuleTask, PolicySpec


def add_problem_args(p: argparse.ArgumentParser, corpus: bool = True) -> None:
    p.add_argument("--problem", required=True, choices=PROBLEMS)
    if corpus:
        p.add_argument("--corpus", required=True, type=Path, help="corpus directory")
        p.add_argument("--max-modules", type=int_arg(lo=0), default=0,
                       help="use only the first N modules (0: all)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help=f"local worker processes, 1 to {MAX_WORKERS} (default: cores)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run workers on a Ray cluster ('auto', 'local' or host:port)")
    p.add_argument("--gin_file", action="append", default=[], type=Path)
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="e.g. \"inlining.InliningForSize.opt_level='-Os'\"")
    p.add_argument("--timeout", type=timeout_arg, default=300.0,
                   help=f"per-compile wall-clock limit in seconds, at most {MAX_TIMEOUT:g}")


def setup_gin(args: argparse.Namespace) -> str:
    """Parse gin files and bindings; return the config text to replay in workers."""
    import gin

    from mlgo.configurables import check_bound_values, import_configurables

    import_configurables(training=True)
    for f in args.gin_file:
        if not Path(f).is_file():
            raise MlgoError(f"{f}: gin file not found")
    gin.clear_config()  # one configuration per command, even when called in-process repeatedly
    try:
        gin.parse_config_files_and_bindings([str(f) for f in args.gin_file], args.gin_bindings,
                                            finalize_config=False)
    except Exception as e:  # gin raises ValueError/KeyError/SyntaxError-alikes
        where = ", ".join([*map(str, args.gin_file), *args.gin_bindings]) or "gin"
        raise MlgoError(f"bad gin configuration ({where}): {e}") from e
    check_bound_values()
    return gin.config_str()


def load_corpus(args: argparse.Namespace) -> Corpus:
    """The corpus of --corpus (first --max-modules), checked to be IR of the build the
    problem serves (after setup_gin: the problem's level may be a gin binding)."""
    from mlgo.problems import get_problem

    corpus = Corpus.load(args.corpus)
    if len(corpus) == 0:
        raise MlgoError(f"{args.corpus}: the corpus has no modules")
    if args.max_modules:
        corpus.modules = corpus.modules[: args.max_modules]
    get_problem(args.problem).check_corpus(corpus)
    return corpus


def policy_spec(policy: str) -> PolicySpec:
    """A built-in heuristic name, a shipped policy name (policies/NAME), or a policy directory."""
    from mlgo.policies.shipped import resolve

    p = Path(resolve(policy))
    if p.is_dir():
        return PolicySpec(policy_dir=str(p.resolve()))
    if "/" in policy or p.suffix:
        raise MlgoError(f"{policy}: policy directory not found")
    return PolicySpec(builtin=policy)


def run_with_progress(
    args: argparse.Namespace, tasks: Sequence[ModuleTask], desc: str
) -> Iterator[ModuleOutcome]:
    from tqdm import tqdm

    pool = make_pool(args.workers or None, args.ray)
    try:
        with tqdm(total=len(tasks), desc=desc, unit="mod", file=sys.stderr,
                  disable=None, dynamic_ncols=True) as bar:
            for out in pool.run(tasks):
                bar.update(1)
                yield out
    finally:
        pool.close()


def report_failures(failures: Sequence[tuple[str, str]], path: Path | None = None) -> None:
    """Print a summary of skipped modules, given as (module, error) pairs (the first line of
    each error), optionally with the full errors as JSON."""
    if not failures:
        return
    print(f"{len(failures)} module(s) failed and were skipped:", file=sys.stderr)
    for module, error in failures[:20]:
        print(f"  {module}: {summary_line(error, module)}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    if path is not None:
        atomic_write_text(path, json.dumps([{"module": m, "error": e} for m, e in failures],
                                           indent=1))
        print(f"  full errors: {path}", file=sys.stderr)
