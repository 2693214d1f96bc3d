"""What the flip search (mlgo/search.py) needs to know about a problem's decisions: the anchor
decision at a position, the alternatives to try there and what orders the flips. Each problem
defines its own beside it (inlining/search_space.py, regalloc/search_space.py)."""

from __future__ import annotations

from typing import Any

import numpy as np


class DecisionSpace:
    """A problem's decisions as the search sees them."""

    name: str
    problem: Any  # compiles the search's candidates
    plain: Any  # the compile a policy sees in release (features to record)

    def anchor(self, obs: Any) -> int:
        raise NotImplementedError

    def alternatives(self, obs: Any, action: int) -> list[int]:
        raise NotImplementedError

    def key(self, obs: Any) -> tuple[float, ...]:
        """Per position, what the flip order reads (the search's Candidate.margins)."""
        raise NotImplementedError


def scalar(obs: Any, name: str) -> float:
    """A scalar feature of one observation."""
    return float(np.asarray(obs[name]).reshape(-1)[0])
