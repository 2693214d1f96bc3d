"""The shipped policies against the compiler installed now: each one's features (name, type,
shape, order) and advice are exactly what clang-19 sends for its problem today, and its
manifest says the same. A clang-19 update that changes the features fails here, not in a
user's build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgo.policies.policy_dir import load_policy, read_policy_json
from mlgo.policies.shipped import resolve, shipped_names
from mlgo.problems import get_problem


def test_both_problems_ship_a_policy() -> None:
    problems = {read_policy_json(Path(resolve(n)))["problem"] for n in shipped_names()}
    assert problems == {"inlining", "regalloc"}


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_policy_matches_the_live_compiler_header(name: str) -> None:
    policy_dir = Path(resolve(name))
    net, params, _ = load_policy(policy_dir)
    header = get_problem(net.problem).header()  # probed from clang-19 now
    net.check_features(header)  # by name, type and shape
    # Inputs bind by name; the order is the header's all the same (what training saw).
    assert [f.to_json() for f in net.features] == [f.to_json() for f in header.features]
    assert params.shape == (net.num_params,)
    manifest = json.loads((policy_dir.parent / "manifest.json").read_text())
    assert manifest["problem"] == net.problem
    assert manifest["features"] == [f.to_json() for f in header.features]
    assert manifest["advice"] == header.advice.to_json()
