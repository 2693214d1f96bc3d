"""Parity of the two environments: `--env plugin` (mlgo's inliner plugin and its channel) against
`--env interactive` (LLVM's interactive mode), module by module, under the same policy.

For every module of each CORPUS and every POLICY (built-in heuristics: cost-threshold,
llvm-default, always, never), two compiles at -Oz, each decision made in Python by the same
heuristic; compared: the decision sequences, LLVM's features at every decision (but the slot LLVM
19 overwrites in include-default mode), and the object files' bytes. Compiles run one at a time.
Exit status 1 if any module differs.
Usage: python benchmarks/env_parity.py CORPUS [CORPUS ...] --policy P [--policy P ...]
       [--max-modules N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from corpus_tools.corpus import Corpus
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.problems import get_problem
from mlgo.protocol import llvm19
from mlgo.serving.plugin import channel_plugin


def compile_once(problem, module, policy: str, same: list[str]):
    """(object bytes, decisions, the features `same` per decision) of one compile."""
    problem = problem.for_policy(policy)
    decide = problem.heuristic(policy)
    workdir = make_workdir()
    try:
        base = workdir / "channel"
        argv = problem.compile_argv(module, workdir, base)
        actions, features = [], []
        with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=600) as c:
            while (obs := c.next_observation()) is not None:
                actions.append(int(decide(obs.features)))
                features.append([int(np.asarray(obs.features[n]).reshape(-1)[0]) for n in same])
                c.answer(actions[-1])
            c.finish()
        return (workdir / "out.o").read_bytes(), actions, features
    finally:
        remove_workdir(workdir)


def language(module) -> str:
    args = " ".join(module.args())
    cxx = any(module.name.endswith(s) for s in (".cpp", ".cc", ".cxx", ".C")) or "c++" in args
    return "C++" if cxx else "C"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+", type=Path)
    ap.add_argument("--policy", action="append", required=True)
    ap.add_argument("--max-modules", type=int, default=0, help="per corpus (0: all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    plugin = str(channel_plugin())
    interactive = get_problem("inlining")
    over_plugin = get_problem("inlining")
    over_plugin.plugin = plugin
    modules = []
    for path in args.corpus:
        corpus = Corpus.load(path)
        modules += corpus.modules[: args.max_modules] if args.max_modules else corpus.modules
    rows, t0 = [], time.monotonic()
    for policy in args.policy:
        # LLVM's features but the slot interactive mode overwrites for this policy.
        overwritten = interactive.for_policy(policy).overwritten_features
        same = [n for n in llvm19.INLINE_FEATURES if n not in overwritten]
        for module in modules:
            obj_i, act_i, feat_i = compile_once(interactive, module, policy, same)
            obj_p, act_p, feat_p = compile_once(over_plugin, module, policy, same)
            rows.append({"policy": policy, "module": module.name, "language": language(module),
                         "decisions": len(act_i), "same_decisions": act_i == act_p,
                         "same_features": feat_i == feat_p, "same_object": obj_i == obj_p})
            if not (act_i == act_p and feat_i == feat_p and obj_i == obj_p):
                print(f"DIFFERS {policy} {module.name}: decisions {act_i == act_p}, features "
                      f"{feat_i == feat_p}, object {obj_i == obj_p}", flush=True)
    bad = [r for r in rows if not (r["same_decisions"] and r["same_features"] and r["same_object"])]
    for policy in args.policy:
        for lang in ("C", "C++"):
            mine = [r for r in rows if r["policy"] == policy and r["language"] == lang]
            if mine:
                ok = sum(r["same_decisions"] and r["same_features"] and r["same_object"] for r in mine)
                print(f"{policy:15} {lang:4} modules {len(mine):4}  identical {ok:4}  decisions "
                      f"{sum(r['decisions'] for r in mine):6}")
    print(f"{len(rows) - len(bad)} of {len(rows)} (module, policy) pairs identical "
          f"in {time.monotonic() - t0:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.node(), "plugin": plugin,
                                         "corpora": [str(c) for c in args.corpus],
                                         "rows": rows}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
