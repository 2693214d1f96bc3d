"""A residual policy (inlining.InliningNetworkConfig.residual or
regalloc.RegallocNetworkConfig.residual) at several flip margins, each written as its own policy
directory for `mlgo eval` (to be chosen on validation only):

    python benchmarks/flip_margin.py POLICY_DIR OUT 0 1 2 4     # -> OUT/margin-0 ... margin-4
    python benchmarks/flip_margin.py POLICY_DIR OUT 2 --validation J   # record J as validation

A margin m raises the rule's lead by m (inlining's keep logit, regalloc's anchor), so the policy
leaves its rule only where the network prefers another action by more than m
(mlgo/policies/margin.py). `--validation J` (one
margin) records the `mlgo eval --json` report J of the shifted policy on the validation modules
as its validation figure, which the export gate (mlgo/export/bundle.py) reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlgo.policies.margin import validation_from_report, write_margin_policy
from mlgo.policies.policy_dir import load_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("margins", type=float, nargs="+")
    ap.add_argument("--validation", type=Path, help="mlgo eval report of the shifted policy")
    args = ap.parse_args()
    if args.validation and len(args.margins) != 1:
        raise SystemExit("--validation takes one margin: the report is of one policy")
    problem = load_policy(args.policy)[0].problem
    val = (validation_from_report(json.loads(args.validation.read_text()), args.validation, problem)
           if args.validation else None)
    for m in args.margins:
        print(write_margin_policy(args.policy, args.out / f"margin-{m:g}", m, val))


if __name__ == "__main__":
    main()
