"""Pieces shared by the subcommands: problem/corpus/worker flags, gin, progress, failure reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo.checks import MAX_TIMEOUT, MAX_WORKERS
from mlgo.cli.args import int_arg, timeout_arg, workers_arg
from mlgo.problems import PROBLEMS
from mlgo_base.errors import MlgoError, summary_line


def add_problem_args(p: argparse.ArgumentParser, corpus: bool = True) -> None:
    p.add_argument("--problem", required=True, choices=PROBLEMS,
                   help="inlining: inline or not at each call site, for .text size at -Oz; "
                   "regalloc: which live range the register allocator evicts")
    if corpus:
        p.add_argument("--corpus", required=True, type=Path, help="corpus directory")
        p.add_argument("--max-modules", type=int_arg(lo=0), default=0,
                       help="use only the first N modules (0: all)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help=f"local worker processes, 1 to {MAX_WORKERS} (default: cores)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run workers on a Ray cluster ('auto', 'local' or host:port)")
    p.add_argument("--gin_file", action="append", default=[], type=Path,
                   help="gin file of settings (repeatable); `mlgo train` first loads the problem's "
                   "own defaults, mlgo/problems/PROBLEM/ALGORITHM.gin, where there is one")
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="e.g. \"inlining.InliningForSize.opt_level='-Os'\"")
    p.add_argument("--timeout", type=timeout_arg, default=300.0,
                   help=f"per-compile wall-clock limit in seconds, at most {MAX_TIMEOUT:g}")


def setup_gin(args: argparse.Namespace) -> str:
    """Parse --gin_file and --gin_bindings; return the config text to replay in workers."""
    from mlgo.training.gin_config import parse_gin

    return parse_gin(args.gin_file, args.gin_bindings)


def load_corpus(args: argparse.Namespace, *, check_level: bool = True) -> Corpus:
    """The corpus of --corpus (first --max-modules), checked to be IR of the build the
    problem serves (after setup_gin: the problem's level may be a gin binding) unless the
    library call that follows checks it itself (`check_level=False`)."""
    from mlgo.problems import get_problem

    corpus = Corpus.load(args.corpus)
    if len(corpus) == 0:
        raise MlgoError(f"{args.corpus}: the corpus has no modules")
    if args.max_modules:
        corpus.modules = corpus.modules[: args.max_modules]
    if check_level:
        get_problem(args.problem).check_corpus(corpus)
    return corpus


def report_failures(failures: Sequence[tuple[str, str]]) -> None:
    """Print a summary of skipped modules, given as (module, error) pairs (the first line of
    each error)."""
    if not failures:
        return
    print(f"{len(failures)} module(s) failed and were skipped:", file=sys.stderr)
    for module, error in failures[:20]:
        print(f"  {module}: {summary_line(error, module)}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
