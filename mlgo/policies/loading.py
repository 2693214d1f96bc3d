"""Policies for workers: a policy directory (plus, optionally, parameters sent with the task)
as a NumpyPolicy. Numpy only: importing this never imports TensorFlow."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlgo.policies.network import PolicyNetwork
from mlgo.policies.policy import NumpyPolicy
from mlgo.policies.policy_dir import POLICY_JSON, PolicyFormatError, check_finite, load_policy


@functools.lru_cache(maxsize=1)  # one live policy per worker is the common case
def _load(path: str, *version: Any) -> tuple[PolicyNetwork, np.ndarray]:
    """`version` (resolved path, inode, mtime) is only part of the cache key."""
    network, params, _ = load_policy(path)
    return network, params


def load_network(policy_dir: Path | str, problem: str | None = None) -> tuple[PolicyNetwork, np.ndarray]:
    """(network, params) of a policy directory, cached by the identity of its policy.json:
    workers compile many modules with the same policy directory."""
    policy_dir = Path(policy_dir)
    try:
        st = os.stat(policy_dir / POLICY_JSON)
    except FileNotFoundError:
        network, params, _ = load_policy(policy_dir, problem=problem)  # says what is wrong
        return network, params
    network, params = _load(str(policy_dir), str(policy_dir.resolve()), st.st_ino,
                            st.st_mtime_ns)
    if problem is not None and network.problem != problem:
        raise PolicyFormatError(f"{policy_dir}: the policy is for problem {network.problem!r}, "
                                f"not {problem!r}")
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
