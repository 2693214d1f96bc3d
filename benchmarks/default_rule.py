"""Does the interactive environment reproduce clang-19 -Oz, and how close is the cost-threshold
rule to LLVM's own inliner, decision by decision?

For every module of CORPUS, one interactive compile at -Oz under the `llvm-default` policy:
with -inliner-interactive-include-default LLVM 19 sends, per call site, its default advisor's
decision (mlgo.problems.inlining.problem.llvm_default) and mlgo answers with it. Reports
  - total .text of those compiles vs plain `clang-19 -Oz` (equal when the environment adds
    nothing of its own), per project and in total;
  - on the same call sites, how often `cost_estimate < threshold` (the cost-threshold rule and
    the warm-start label) gives LLVM's answer: agreement and confusion matrix per project.
Usage: python benchmarks/default_rule.py CORPUS [CORPUS ...] [--workers N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from corpus_tools.corpus import Corpus
from mlgo.workers.pool import make_pool
from mlgo.workers.tasks import ModuleTask, PolicySpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="+", type=Path)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    modules = [m for c in args.corpora for m in Corpus.load(c).modules]
    project = {m.name: m.project for m in modules}  # the corpus's own project mapping
    tasks = [ModuleTask("inlining", m, PolicySpec(builtin="llvm-default"), record=True, timeout=600)
             for m in modules]
    rows: dict[str, dict] = defaultdict(lambda: {"modules": 0, "env": 0.0, "oz": 0.0,
                                                 "confusion": np.zeros((2, 2), np.int64)})
    failed = []
    pool = make_pool(args.workers)
    try:
        for out in pool.run(tasks):
            if not out.ok:
                failed.append((out.module, out.error.splitlines()[0]))
                continue
            r = rows[project[out.module]]
            r["modules"] += 1
            r["env"] += out.policy_total
            r["oz"] += out.default_total
            if out.actions is not None and len(out.actions):
                # rows: LLVM's decision; columns: cost_estimate < threshold, computed here from
                # the recorded features (the outcome's default_actions are the variant's own
                # proxy, which under include-default is LLVM's decision itself).
                rule = (out.features["cost_estimate"].reshape(-1)
                        < out.features["threshold"].reshape(-1)).astype(np.int64)
                np.add.at(r["confusion"], (out.actions, rule), 1)
    finally:
        pool.close()

    total = {"modules": 0, "env": 0.0, "oz": 0.0, "confusion": np.zeros((2, 2), np.int64)}
    print(f"{'project':<22}{'modules':>8}{'-Oz .text':>12}{'env':>12}{'diff':>9}"
          f"{'decisions':>11}{'agree':>8}{'llvm1/rule0':>13}{'llvm0/rule1':>13}")

    def line(name: str, r: dict) -> dict:
        c = r["confusion"]
        n = int(c.sum())
        agree = (c[0, 0] + c[1, 1]) / n if n else float("nan")
        diff = (r["env"] - r["oz"]) / r["oz"] if r["oz"] else 0.0
        print(f"{name:<22}{r['modules']:>8}{int(r['oz']):>12}{int(r['env']):>12}{diff:>+9.3%}"
              f"{n:>11}{agree:>8.2%}{int(c[1, 0]):>13}{int(c[0, 1]):>13}")
        return {"modules": r["modules"], "oz_text": r["oz"], "env_text": r["env"],
                "relative_diff": diff, "decisions": n, "agreement": agree,
                "confusion_llvm_by_rule": c.tolist()}

    report = {}
    for name in sorted(rows):
        report[name] = line(name, rows[name])
        for k in ("modules", "env", "oz"):
            total[k] += rows[name][k]
        total["confusion"] += rows[name]["confusion"]
    report["total"] = line("total", total)
    for m, e in failed:
        print(f"FAILED {m}: {e}")
    if args.json:
        args.json.write_text(json.dumps({"projects": report, "failed": failed}, indent=1))


if __name__ == "__main__":
    main()
