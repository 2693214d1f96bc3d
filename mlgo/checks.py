"""Range checks for numbers from the command line and from gin, so that a value with no
sensible meaning (`--workers -1`, `--timeout inf`, `sigma = 0`) is refused before any work
starts, with one line naming the setting, instead of hanging or training on NaN."""

from __future__ import annotations

import math

from mlgo_base.errors import MlgoError

# Upper bounds: beyond them a value is a typo, not a plan. A compile that needs more than a
# day, or a local pool of more than 1024 processes, is not something these tools can manage.
MAX_TIMEOUT = 86400.0
MAX_WORKERS = 1024


def int_problem(value: object, lo: int, hi: int | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {value!r}"
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        return f"must be {bound}, not {value}"
    return None


def float_problem(value: object, lo: float, hi: float | None, lo_open: bool,
                   hi_open: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {value!r}"
    v = float(value)
    if not math.isfinite(v):
        return f"must be a finite number, not {value}"
    if (v <= lo if lo_open else v < lo) or (hi is not None and (v >= hi if hi_open else v > hi)):
        if hi is None:
            span = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
        else:
            span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        return f"must be {span}, not {value}"
    return None


def check_int(name: str, value: object, *, lo: int, hi: int | None = None) -> int:
    """`value`, an int in [lo, hi]; MlgoError naming `name` otherwise."""
    problem = int_problem(value, lo, hi)
    if problem:
        raise MlgoError(f"{name} {problem}")
    return int(value)  # type: ignore[call-overload]


def check_float(name: str, value: object, *, lo: float, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """`value` as a finite float in the range (open or closed at each end)."""
    problem = float_problem(value, lo, hi, lo_open, hi_open)
    if problem:
        raise MlgoError(f"{name} {problem}")
    return float(value)  # type: ignore[arg-type]


MAX_LAYER_WIDTH = 65536


def check_layer_sizes(name: str, sizes: object) -> tuple[int, ...]:
    """A tuple of positive layer widths (a zero-width layer makes a network that cannot learn;
    a huge one runs every worker out of memory)."""
    if not isinstance(sizes, (tuple, list)):
        raise MlgoError(f"{name} must be a tuple of layer widths, not {sizes!r}")
    for s in sizes:
        check_int(f"{name}: every width", s, lo=1, hi=MAX_LAYER_WIDTH)
    return tuple(sizes)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise MlgoError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)
