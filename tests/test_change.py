"""One relative-change convention (mlgo_base/change.py) for reports and rewards."""

from __future__ import annotations

import pytest

from mlgo.evaluate import EvalReport
from mlgo.problems import get_problem
from mlgo.problems.base import Measurement
from mlgo_base.change import relative_change


def test_negative_means_smaller():
    assert relative_change(200.0, 150.0) == pytest.approx(-0.25)
    assert relative_change(200.0, 250.0) == pytest.approx(0.25)
    assert relative_change(200.0, 200.0) == 0.0


def test_a_base_of_zero_counts_the_change_in_units():
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0, 12) == 12.0


def test_reward_is_minus_the_change_also_from_nothing():
    problem = get_problem("inlining")
    for default, policy in ((100.0, 90.0), (100.0, 120.0), (0.0, 0.0), (0.0, 8.0)):
        reward = problem.reward(Measurement(policy), Measurement(default))
        assert reward == pytest.approx(-relative_change(default, policy))


def test_an_eval_report_with_no_default_code_does_not_hide_what_the_policy_added():
    rep = EvalReport("inlining", "p", ".text", modules=[
        {"module": "a/x.c", "project": "a", "policy": 16.0, "default": 0.0}])
    assert rep.relative_change == 16.0
    assert rep.per_project()["a"]["relative_change"] == 16.0
