"""Where a residual inlining policy leaves its rule in one module: compiles MODULE of CORPUS once
under POLICY through the inliner plugin (`--env plugin`), and prints each decision that differs
from the cost-threshold rule with its call site and a few of the features the policy saw, then
the module's .text under the policy against -Oz.

    python benchmarks/plugin_transfer_flips.py lua5.4/src/lvm.c VALID_CORPUS POLICY_DIR
"""

from __future__ import annotations

import sys

import numpy as np

import mlgo.env
from mlgo.policies import builtins
from mlgo.policies.loading import numpy_policy

SHOWN = ("callee_linkage", "callee_uses", "callsite_is_last_use", "callee_instruction_count",
         "caller_instruction_count", "callsite_loop_depth", "callsite_relative_freq_x1000",
         "cost_estimate", "threshold")


def main(argv: list[str]) -> int:
    module, corpus, policy_dir = argv
    policy = numpy_policy("inlining", policy_dir)
    rule = builtins.heuristic("inlining", "cost-threshold")
    env = mlgo.env.make("inlining", module, corpus=corpus, environment="plugin")
    obs, info = env.reset()
    decisions = 0
    try:
        while obs is not None:
            action = policy.act(obs)
            if action != rule(obs):
                seen = {k: int(np.asarray(obs[k]).ravel()[0]) for k in SHOWN if k in obs}
                print(f"decision {decisions}: {'inline' if action else 'no inline'} "
                      f"{info.get('call_site')} {seen}")
            obs, _, _, _, info = env.step(action)
            decisions += 1
    finally:
        env.close()
    r = env.result
    print(f"{module}: {decisions} decisions; .text {r.default.total:.0f} (-Oz) -> "
          f"{r.measurement.total:.0f} ({-100 * r.reward:+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
