"""Policies for workers: a policy directory (plus, optionally, parameters sent with the task)
as a NumpyPolicy. Numpy only: importing this never imports TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mlgo.policies.network import PolicyNetwork
from mlgo.policies.policy import NumpyPolicy
from mlgo.policies.policy_dir import POLICY_JSON, check_finite, load_policy

# Workers compile many modules with the same policy directory: parse it once per version.
_CACHE: dict[tuple[str, int, int], tuple[PolicyNetwork, np.ndarray]] = {}


def load_network(policy_dir: Path | str, problem: str | None = None) -> tuple[PolicyNetwork, np.ndarray]:
    """(network, params) of a policy directory, cached by the identity of its policy.json."""
    policy_dir = Path(policy_dir)
    try:
        st = os.stat(policy_dir / POLICY_JSON)
        key = (str(policy_dir.resolve()), st.st_ino, st.st_mtime_ns)
    except FileNotFoundError:
        key = None
    if key is None or key not in _CACHE:
        network, params, _ = load_policy(policy_dir, problem=problem)
        if key is None:
            return network, params
        _CACHE.clear()  # one live policy per worker is the common case; keep memory flat
        _CACHE[key] = (network, params)
    network, params = _CACHE[key]
    if problem is not None and network.problem != problem:
        from mlgo.policies.policy_dir import PolicyFormatError

        raise PolicyFormatError(f"{policy_dir}: the policy is for problem {network.problem!r}, not {problem!r}")
    return network, params


def numpy_policy(problem: Any, policy_dir: Path | str, params: np.ndarray | None = None,
                 greedy: bool = True, seed: int = 0) -> NumpyPolicy:
    """The policy in `policy_dir`, with its own params.npy or with `params` (same network)
    instead. `problem` is a Problem instance or a problem name."""
    name = problem if isinstance(problem, str) or problem is None else problem.name
    network, saved = load_network(policy_dir, name)
    if params is not None:
        check_finite(params, f"{policy_dir} (parameters sent with the task)")
    return NumpyPolicy(network, saved if params is None else params, greedy=greedy, seed=seed)
