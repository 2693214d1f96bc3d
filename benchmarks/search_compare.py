"""How much an inlining search finds, and where: search directories of the same corpus side by
side per project, and the kept flips of one of them by the kind of call site.

    python benchmarks/search_compare.py --corpus C S1 S2 ...     # per project, modules in all
    python benchmarks/search_compare.py --corpus C S1 --buckets  # where S1's kept flips are

Per project: the modules every directory has a result for, their .text at -Oz (the real
`clang-19 -Oz -c`, what `mlgo search` measures against), each search's best per object, its
compiles and kept flips. Per object equals linked for C; for C++ the search's own summary line
("as linking keeps it") gives the linked total.

With --buckets: the call sites LLVM inlined along the first directory's best trajectories,
grouped by the callee's users and by how far its cost is under the threshold, and the share of
each group the search flipped to "do not inline"; then how many of the sites LLVM did not
inline the search flipped to "inline". A group where that share is small is one no
rule over these two features can flip without losing more than it gains.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo.search import load_result, result_path

USER_BUCKETS = (1, 2, 3, 5, 10)  # callee users: 1, 2, 3, 4-5, 6-10, more
# threshold - cost: 10 or less (below 0: inlined over the threshold), ..., above 10,000 (the
# last-call bonus)
MARGIN_BUCKETS = (10, 50, 200, 10_000)


def _bucket(value: float, bounds: tuple[int, ...]) -> int:
    return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))


def _label(i: int, bounds: tuple[int, ...], lo: int | None) -> str:
    """Bucket i's range; `lo` None: the first bucket is open below."""
    if i == len(bounds):
        return f"> {bounds[-1]}"
    if i == 0 and lo is None:
        return f"<= {bounds[0]}"
    first = lo if i == 0 else bounds[i - 1] + 1
    return str(first) if first == bounds[i] else f"{first}-{bounds[i]}"


def compare(corpus: Corpus, searches: list[Path]) -> str:
    width = 2 + 3 * len(searches)  # modules, -Oz, then (best, compiles, kept) per search
    rows: dict[str, list[float]] = defaultdict(lambda: [0.0] * width)
    for m in corpus.modules:
        paths = [result_path(s, m.name) for s in searches]
        if not all(p.is_file() for p in paths):
            continue
        results = [load_result(p) for p in paths]
        row = rows[m.project]
        row[0] += 1
        row[1] += results[0].default_total
        for k, r in enumerate(results):
            row[2 + 3 * k] += r.policy_total
            row[3 + 3 * k] += r.extra.get("compiles", 0)
            row[4 + 3 * k] += r.extra.get("kept", 0)
    head = f"{'project':18s} {'modules':>7s} {'-Oz .text':>10s}" + "".join(
        f" | {s.name[:18]:>18s} {'compiles':>8s} {'kept':>5s}" for s in searches)
    lines, total = [head], [0.0] * width
    for name, row in sorted(rows.items()) + [("total", total)]:
        if name != "total":
            total[:] = [a + b for a, b in zip(total, row, strict=True)]
        cells = "".join(f" | {row[2 + 3 * k]:9.0f} ({100 * (row[2 + 3 * k] / row[1] - 1) if row[1] else 0.0:+6.2f}%)"
                        f" {row[3 + 3 * k]:8.0f} {row[4 + 3 * k]:5.0f}"
                        for k in range(len(searches)))
        lines.append(f"{name:18s} {row[0]:7.0f} {row[1]:10.0f}{cells}")
    return "\n".join(lines)


def buckets(corpus: Corpus, search: Path) -> str:
    sites: Counter[tuple[int, int]] = Counter()
    flips: Counter[tuple[int, int]] = Counter()
    declined = inlined_instead = 0  # call sites LLVM did not inline; of those, flipped to inline
    for m in corpus.modules:
        path = result_path(search, m.name)
        if not path.is_file():
            continue
        r = load_result(path)
        if r.actions is None:
            continue
        if "callee_users" not in r.features:
            raise SystemExit(f"{path}: no inlining features (--buckets is for inlining searches)")
        users = r.features["callee_users"].reshape(-1)
        margin = (r.features["threshold"] - r.features["cost_estimate"]).reshape(-1)
        for i in range(len(r.actions)):
            if r.default_actions[i] != 1:
                declined += 1
                inlined_instead += int(r.actions[i] == 1)
                continue
            key = (_bucket(users[i], USER_BUCKETS), _bucket(margin[i], MARGIN_BUCKETS))
            sites[key] += 1
            flips[key] += int(r.actions[i] == 0)
    cols = range(len(MARGIN_BUCKETS) + 1)
    lines = ["callee users \\ threshold - cost: " + "  ".join(
        f"{_label(j, MARGIN_BUCKETS, None):>14s}" for j in cols)]
    for i in range(len(USER_BUCKETS) + 1):
        cells = []
        for j in cols:
            n, f = sites[i, j], flips[i, j]
            cells.append(f"{f:>4d}/{n:<5d} {100 * f / n:4.1f}%" if n else f"{'':>14s}")
        lines.append(f"{_label(i, USER_BUCKETS, 1):>33s}: " + "  ".join(cells))
    lines.append(f"kept flips 1 -> 0: {sum(flips.values())} of {sum(sites.values())} inlined call "
                 f"sites; 0 -> 1: {inlined_instead} of {declined} call sites LLVM did not inline")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("searches", nargs="+", type=Path, help="mlgo search output directories")
    p.add_argument("--buckets", action="store_true", help="the first search's kept flips by kind")
    args = p.parse_args()
    corpus = Corpus.load(args.corpus)
    for s in args.searches:
        if not (s / "search.json").is_file():
            raise SystemExit(f"{s}: not an `mlgo search` directory (no search.json)")
    print(compare(corpus, args.searches))
    if args.buckets:
        print()
        print(buckets(corpus, args.searches[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
