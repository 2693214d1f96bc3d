"""Relative change, the one convention every report and reward uses.

    relative_change(base, new) = (new - base) / base

Negative means `new` is smaller than `base` (for .text size or executed instructions: better);
a reward is its negation. A base of 0 (a module with no code, a project whose modules all
failed) has no ratio: the change is then counted in units, new - base, so it stays finite,
is 0 when nothing changed, and still grows with what appeared out of nothing.
"""

from __future__ import annotations


def relative_change(base: float, new: float) -> float:
    """(new - base) / base; new - base when base is 0 (see the module docstring)."""
    if base == 0:
        return float(new - base)
    return (new - base) / base
