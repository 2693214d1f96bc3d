"""`mlgo vocab`: per-feature quantile boundaries from a trace, used to normalize features; or,
with --ir2vec, an IR2Vec vocabulary trained from a corpus for LLVM 22's inliner embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.cli.args import int_arg
from mlgo.cli.common import add_llvm_version_arg
from mlgo.policies.vocab import DEFAULT_QUANTILES
from mlgo_base.errors import MlgoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="compute per-feature quantile boundaries (<feature>.buckets), "
                       "or train an IR2Vec vocabulary (--ir2vec)")
    p.add_argument("trace", type=Path, nargs="?", help="trace directory from `mlgo trace`")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="vocab directory (with --ir2vec: the vocabulary's JSON file)")
    p.add_argument("--quantiles", type=int, default=DEFAULT_QUANTILES,
                   help=f"quantiles kept per feature (default {DEFAULT_QUANTILES})")
    p.add_argument("--ir2vec", type=Path, metavar="CORPUS",
                   help="train an IR2Vec vocabulary on this corpus's modules instead (LLVM 22; "
                   "give it to the inliner with "
                   "--gin_bindings \"inlining.InliningForSize.ir2vec_vocab='FILE'\")")
    p.add_argument("--dim", type=int_arg(lo=1, hi=1024), default=64,
                   help="with --ir2vec: the vocabulary's dimension (default %(default)s)")
    p.add_argument("--epochs", type=int_arg(lo=1, hi=100000), default=200,
                   help="with --ir2vec: training passes over the facts (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="with --ir2vec: random seed")
    p.add_argument("--max-modules", type=int_arg(lo=0), default=0,
                   help="with --ir2vec: use only the first N modules (0: all)")
    add_llvm_version_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ir2vec is not None:
        if args.trace is not None:
            raise MlgoError("mlgo vocab: give a trace directory or --ir2vec CORPUS, not both")
        return _ir2vec(args)
    if args.trace is None:
        raise MlgoError("mlgo vocab: give a trace directory (or --ir2vec CORPUS)")
    from mlgo.traces import build_vocab

    counts = build_vocab(args.trace, args.output, args.quantiles)
    print(f"wrote {len(counts)} feature vocab files to {args.output}")
    for name, c in counts.items():
        print(f"  {name:40s} {c:5d} boundaries")
    return 0


def _ir2vec(args: argparse.Namespace) -> int:
    from corpus_tools.corpus import Corpus, check_llvm_version
    from mlgo.training.ir2vec import train_vocab

    corpus = Corpus.load(args.ir2vec)
    check_llvm_version(corpus)
    s = train_vocab(corpus, args.output, dim=args.dim, epochs=args.epochs, seed=args.seed,
                    max_modules=args.max_modules)
    print(f"wrote {s.path}: IR2Vec vocabulary of {s.entities} entities x {s.dim} from "
          f"{s.facts} distinct facts of {s.modules} modules (final margin loss {s.final_loss:.4f}, "
          f"tail ranked first for {100 * s.ranked_first:.1f}% of facts)")
    return 0
