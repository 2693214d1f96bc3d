"""Regalloc eviction's decisions for the flip search (mlgo/search.py): the anchor is the
`default-rule` (interactive mode sends no default choice), the alternatives are evicting nothing
and the next candidate in the rule's order, and the `progress` feature guesses which function a
position belongs to."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgo.problems.search_space import DecisionSpace, scalar


class RegallocSpace(DecisionSpace):
    name = "regalloc"

    def __init__(self) -> None:
        from mlgo.problems import get_problem
        from mlgo.problems.regalloc.problem import default_rule

        self.problem = self.plain = get_problem("regalloc")
        self._anchor = default_rule

    def anchor(self, obs: Any) -> int:
        return self._anchor(obs)

    def alternatives(self, obs: Any, action: int) -> list[int]:
        """Evict nothing (when allowed), then the next candidate in the default's order
        (fewest broken hints, then lightest, then first)."""
        from mlgo.problems.regalloc.problem import NO_EVICTION

        mask = np.asarray(obs["mask"]).reshape(-1)
        weight = np.asarray(obs["use_def_density"], dtype=np.float64).reshape(-1)
        broken = np.asarray(obs["nr_broken_hints"], dtype=np.float64).reshape(-1)
        out = [NO_EVICTION] if action != NO_EVICTION and mask[NO_EVICTION] else []
        others = sorted((broken[i], weight[i], i) for i in range(NO_EVICTION)
                        if mask[i] and i != action)
        return out + [int(others[0][2])] if others else out

    def key(self, obs: Any) -> tuple[float, ...]:
        return (scalar(obs, "progress"),)
