"""Problems: one folder each (features, compile command, reward, default proxy, network, gin)."""

from __future__ import annotations

from mlgo.problems.base import Measurement, Problem
from mlgo_base.errors import MlgoError

PROBLEMS = ("inlining", "regalloc")


def get_problem(name: str) -> Problem:
    """A problem instance by name, with gin bindings applied."""
    if name == "inlining":
        from mlgo.problems.inlining.problem import InliningForSize

        return InliningForSize()
    if name == "regalloc":
        from mlgo.problems.regalloc.problem import RegallocEviction

        return RegallocEviction()
    raise MlgoError(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}")


__all__ = ["PROBLEMS", "Measurement", "Problem", "get_problem"]
