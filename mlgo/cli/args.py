"""argparse `type=` converters built on mlgo/checks.py's range checks: a flag with no sensible
meaning (`--workers -1`, `--timeout inf`) is refused by argparse with one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mlgo.checks import MAX_TIMEOUT, MAX_WORKERS, float_problem, int_problem


def _argtype(parse: Callable[[str], object], problem: Callable[[object], str | None]):
    """An argparse `type=` that parses, then range-checks; argparse prints the one line
    `argument --NAME: must be ...` and exits with status 2."""

    def convert(text: str) -> object:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        why = problem(value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    return convert


def int_arg(*, lo: int, hi: int | None = None) -> Callable[[str], object]:
    return _argtype(int, lambda v: int_problem(v, lo, hi))


def float_arg(*, lo: float, hi: float | None = None, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], object]:
    return _argtype(float, lambda v: float_problem(v, lo, hi, lo_open, hi_open))


# The flags several commands share.
workers_arg = int_arg(lo=1, hi=MAX_WORKERS)
timeout_arg = float_arg(lo=0.0, hi=MAX_TIMEOUT, lo_open=True)
