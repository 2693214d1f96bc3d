"""`mlgo vocab`: per-feature quantile boundaries from a trace, used to normalize features."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from corpus_tools.corpus import atomic_write_text
from mlgo.errors import MlgoError

DEFAULT_QUANTILES = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="compute per-feature quantile boundaries (<feature>.buckets)")
    p.add_argument("trace", type=Path, help="trace directory from `mlgo trace`")
    p.add_argument("-o", "--output", required=True, type=Path, help="vocab directory")
    p.add_argument("--quantiles", type=int, default=DEFAULT_QUANTILES)
    p.set_defaults(func=run)


def quantile_boundaries(values: np.ndarray, n: int) -> np.ndarray:
    """Up to n+1 distinct boundaries at evenly spaced quantiles (duplicates dropped, so a
    feature with few distinct values gets few boundaries)."""
    if values.size == 0:
        return np.zeros(0)
    qs = np.quantile(values.astype(np.float64), np.linspace(0.0, 1.0, n + 1), method="inverted_cdf")
    return np.unique(qs)


def build_vocab(trace_dir: Path, out_dir: Path, n: int = DEFAULT_QUANTILES) -> dict[str, int]:
    from mlgo.traces import read_trace, trace_header

    header = trace_header(trace_dir)
    chunks: dict[str, list[np.ndarray]] = {f.name: [] for f in header.features}
    modules = 0
    for t in read_trace(trace_dir):
        modules += 1
        for name, arr in t.features.items():
            chunks[name].append(np.asarray(arr).reshape(-1))
    if modules == 0:
        raise MlgoError(f"{trace_dir}: the trace has no decisions; nothing to build a vocab from")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, parts in chunks.items():
        bounds = quantile_boundaries(np.concatenate(parts), n)
        atomic_write_text(out_dir / f"{name}.buckets", "".join(f"{b!r}\n" for b in bounds.tolist()))
        counts[name] = len(bounds)
    return counts


def run(args: argparse.Namespace) -> int:
    counts = build_vocab(args.trace, args.output, args.quantiles)
    print(f"wrote {len(counts)} feature vocab files to {args.output}")
    for name, c in counts.items():
        print(f"  {name:40s} {c:5d} boundaries")
    return 0
