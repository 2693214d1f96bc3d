"""`mlgo vocab`: per-feature quantile boundaries from a trace, used to normalize features."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.policies.vocab import DEFAULT_QUANTILES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="compute per-feature quantile boundaries (<feature>.buckets)")
    p.add_argument("trace", type=Path, help="trace directory from `mlgo trace`")
    p.add_argument("-o", "--output", required=True, type=Path, help="vocab directory")
    p.add_argument("--quantiles", type=int, default=DEFAULT_QUANTILES,
                   help=f"quantiles kept per feature (default {DEFAULT_QUANTILES})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.traces import build_vocab

    counts = build_vocab(args.trace, args.output, args.quantiles)
    print(f"wrote {len(counts)} feature vocab files to {args.output}")
    for name, c in counts.items():
        print(f"  {name:40s} {c:5d} boundaries")
    return 0
