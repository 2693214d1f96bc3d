"""Inlining's decisions for the flip search (mlgo/search.py): the anchor is LLVM's own decision
(sent with -inliner-interactive-include-default, see problem.py), the one alternative is the
other answer, and the "marginal" flip order reads how close a call site's cost was to the
threshold."""

from __future__ import annotations

from typing import Any

from mlgo.problems.search_space import DecisionSpace, scalar


class InliningSpace(DecisionSpace):
    name = "inlining"

    def __init__(self) -> None:
        from mlgo.problems import get_problem
        from mlgo.problems.inlining.problem import LLVM_DEFAULT

        self.problem = get_problem("inlining").for_policy(LLVM_DEFAULT)
        self.plain = self.problem.plain

    def anchor(self, obs: Any) -> int:
        from mlgo.problems.inlining.problem import llvm_default

        return llvm_default(obs)

    def alternatives(self, obs: Any, action: int) -> list[int]:
        return [1 - action]

    def key(self, obs: Any) -> tuple[float, ...]:
        # (threshold - cost_estimate, -callee_users): the "marginal" flip order
        return (scalar(obs, "threshold") - scalar(obs, "cost_estimate"),
                -scalar(obs, "callee_users"))
