"""A residual inlining policy (inlining.InliningNetworkConfig.residual) at several flip margins,
each written as its own policy directory for `mlgo eval` (to be chosen on validation only):

    python benchmarks/flip_margin.py POLICY_DIR OUT 0 1 2 4     # -> OUT/margin-0 ... margin-4

A margin m raises the keep logit by m, so the policy leaves LLVM's rule only where the network
prefers the flip by more than m (mlgo/problems/inlining/network.py: with_flip_margin).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.policies.policy_dir import load_policy, save_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("margins", type=float, nargs="+")
    args = ap.parse_args()
    net, params, meta = load_policy(args.policy, problem="inlining")
    for m in args.margins:
        dest = args.out / f"margin-{m:g}"
        save_policy(dest, net, net.with_flip_margin(params, m),
                    dict(meta, flip_margin=m, flip_margin_of=str(args.policy.resolve())))
        print(dest)


if __name__ == "__main__":
    main()
