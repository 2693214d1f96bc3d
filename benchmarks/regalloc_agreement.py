"""How close does a rule over the features LLVM 19's interactive mode sends come to the default
eviction advisor? Interactive mode sends no default choice, so agreement is measured on the
compiled code: per hot module of the profiled training programs, the module is compiled with
the default advisor (plain clang-19) and answering each rule, and a profiled function counts as
agreeing when its trace cost (mlgo/problems/regalloc/profile.py) equals the default's. Also
printed: the module's trace cost change vs the default, and the executed-instruction-weighted
share of agreeing functions (the profile's instructions in those functions).

Usage: python benchmarks/regalloc_agreement.py CORPUS PROFILE [--rule R]... [--min-share 0.05]
"""

from __future__ import annotations

import argparse
import json

from corpus_tools.corpus import Corpus
from mlgo.compiler.cache import BaselineCache
from mlgo.env import CompilerEnv, run_episode
from mlgo.problems.regalloc.problem import RegallocEviction
from mlgo.problems.regalloc.profile import load_profile
from mlgo_base.change import relative_change


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("profile")
    ap.add_argument("--rule", action="append", default=None)
    ap.add_argument("--min-share", type=float, default=0.05,
                    help="modules with at least this share of their program's profiled instructions")
    ap.add_argument("--json")
    args = ap.parse_args()
    rules = args.rule or ["proxy", "default-rule"]
    profile = load_profile(args.profile)
    executed = {m: {fn: sum(b.executed for b in blocks.values()) for fn, blocks in fns.items()}
                for m, fns in profile.items()}
    per_program: dict[str, int] = {}
    for m, fns in executed.items():
        per_program[m.split("/")[0]] = per_program.get(m.split("/")[0], 0) + sum(fns.values())
    corpus = Corpus.load(args.corpus)
    problem = RegallocEviction(profile=args.profile)
    cache = BaselineCache()
    hot = [m for m in corpus.modules if m.name in executed
           and sum(executed[m.name].values()) >= args.min_share * per_program[m.name.split("/")[0]]]
    out = []
    totals = {r: [0, 0, 0.0, 0.0] for r in rules}  # functions agreeing, functions, weight agreeing, weight
    print(f"{'module':32s} {'rule':14s} {'decisions':>9s} {'functions':>9s} {'agree':>6s} "
          f"{'agree(w)':>8s} {'trace vs default':>16s}")
    for m in hot:
        default = problem.baseline(m, cache)
        for r in rules:
            res = run_episode(CompilerEnv(problem, m, cache=cache, record=False), problem.heuristic(r))
            fns = [fn for fn, w in executed[m.name].items() if w > 0 and fn in default.per_function]
            same = [fn for fn in fns if res.measurement.per_function.get(fn) == default.per_function[fn]]
            w_all = sum(executed[m.name][fn] for fn in fns)
            w_same = sum(executed[m.name][fn] for fn in same)
            change = relative_change(default.total, res.measurement.total)
            t = totals[r]
            t[0] += len(same)
            t[1] += len(fns)
            t[2] += w_same
            t[3] += w_all
            out.append({"module": m.name, "rule": r, "decisions": res.num_decisions,
                        "functions": len(fns), "agree": len(same), "agree_weighted": w_same / w_all,
                        "default": default.total, "rule_total": res.measurement.total})
            print(f"{m.name:32s} {r:14s} {res.num_decisions:9d} {len(fns):9d} {len(same):6d} "
                  f"{100 * w_same / w_all:7.1f}% {100 * change:+15.3f}%", flush=True)
    for r, (a, n, wa, w) in totals.items():
        print(f"{r}: {a}/{n} executed functions compiled as the default does "
              f"({100 * wa / w:.1f}% of their executed instructions)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
