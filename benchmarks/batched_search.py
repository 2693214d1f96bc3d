"""What batched flips add to the strong search on modules with many inlining decisions, at the
same wall time per module:

    python benchmarks/batched_search.py --corpus C [--corpus C2] [--min-decisions 64] \\
        [--seconds 120] [--modules N] [--skip K] [--json OUT]

Per module of the corpora whose anchor compile (LLVM's own answer at every call site) asks at
least --min-decisions: the strong search of mlgo/search_strategy.py runs twice from scratch for
--seconds of wall time each, once with batched flips (StrongConfig.batch_min = --min-decisions:
its batched rounds first, then the usual moves) and once without (batch_min 0: single flips
first, then group moves, pairs, perturbation), both through the plugin's compile (the
attributing oracle; its objects are the interactive mode's for the same answers). The objective
is the module's own `.text` bytes (not linked: COMDAT copies count in full). One module at a
time on one core, so run it on an otherwise idle core.

Prints per module: decisions, anchor bytes, each search's best and compiles, and when each
found its best; then totals over the modules (% vs anchor). --modules takes the first N
qualifying modules in corpus order, after the first --skip K of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo.search_strategy import ModuleOracle, StrongConfig, StrongSearch


def run_one(module, seconds: float, batch_min: int) -> dict:
    oracle = ModuleOracle(module, attribute=True)
    t0 = time.monotonic()
    state = StrongSearch(oracle, StrongConfig(seconds=seconds, batch_min=batch_min)).run()
    assert state.anchor is not None and state.best is not None
    found = next((s for c, s, b in state.history if b == state.best.objective), 0.0)
    return {"anchor": state.anchor.size, "best": state.best.size, "compiles": state.compiles,
            "found_at_s": round(found, 1), "wall_s": round(time.monotonic() - t0, 1),
            "decisions": len(state.anchor.actions)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", required=True)
    ap.add_argument("--min-decisions", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--modules", type=int, default=0)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    skipped = 0
    for path in args.corpus:
        corpus = Corpus.load(path)
        for module in corpus.modules:
            if args.modules and len(rows) >= args.modules:
                break
            anchor = ModuleOracle(module, attribute=True).run(lambda i, sig, d: d)
            if len(anchor.actions) < args.min_decisions:
                continue
            if skipped < args.skip:
                skipped += 1
                continue
            row = {"module": module.name, "decisions": len(anchor.actions),
                   "batched": run_one(module, args.seconds, args.min_decisions),
                   "single": run_one(module, args.seconds, 0)}
            rows.append(row)
            b, s = row["batched"], row["single"]
            print(f"{module.name}: {row['decisions']} decisions, anchor {b['anchor']:.0f}; "
                  f"batched {b['best'] - b['anchor']:+.0f} B in {b['compiles']} compiles "
                  f"(found at {b['found_at_s']} s); single flips first "
                  f"{s['best'] - s['anchor']:+.0f} B in {s['compiles']} compiles "
                  f"(found at {s['found_at_s']} s)", flush=True)
    if not rows:
        print(f"no module with at least {args.min_decisions} decisions", file=sys.stderr)
        return 1
    anchor = sum(r["batched"]["anchor"] for r in rows)
    for kind in ("batched", "single"):
        best = sum(r[kind]["best"] for r in rows)
        worst = max(100 * (r[kind]["best"] - r[kind]["anchor"]) / r[kind]["anchor"] for r in rows)
        print(f"{kind}: {len(rows)} modules, {anchor:.0f} -> {best:.0f} bytes "
              f"({100 * (best - anchor) / anchor:+.2f}%), worst module {worst:+.2f}%")
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
