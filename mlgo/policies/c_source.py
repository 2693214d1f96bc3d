"""C source for a trained policy, in the ABI of mlgo/serving/codegen.py (the inliner pass
plugin and the native regalloc host link it): the network's graph (mlgo/policies/ops.py) with
its weights and vocab baked in as exact hex literals, so it computes what the numpy workers
and the SavedModel compute.

    policy_c_source(policy_dir, problem) -> str
"""

from __future__ import annotations

from pathlib import Path

from mlgo.policies.policy_dir import load_policy
from mlgo.serving import codegen


def policy_c_source(policy_dir: Path | str, problem: str) -> str:
    """C source (mlgo/serving/codegen.py's ABI) of the policy in `policy_dir`."""
    network, params, meta = load_policy(policy_dir, problem=problem)
    doc = f"A trained {problem} policy ({meta.get('algorithm', 'unknown algorithm')})."
    return codegen.policy_source(network.graph, network.unflatten_numpy(params), problem, doc)
