"""The compile-side gin configurables (problems, networks: no TensorFlow), imported in one
place so a worker's bindings always find their target, and each problem's gin defaults.

The trainer also registers the training algorithms' configurables before it parses gin files
and bindings: mlgo/training/gin_config.py (`parse_gin`)."""

from __future__ import annotations

import importlib
from importlib.resources import files
from pathlib import Path

COMPILE_SIDE = (
    "mlgo.problems.inlining.problem",
    "mlgo.problems.regalloc.problem",
    "mlgo.problems.inlining.network",
    "mlgo.problems.regalloc.network",
)


def import_configurables() -> None:
    for name in COMPILE_SIDE:
        importlib.import_module(name)


def default_gin_file(problem: str, algorithm: str) -> Path | None:
    """The problem's own defaults for an algorithm: mlgo/problems/<problem>/<algorithm>.gin."""
    path = Path(str(files("mlgo.problems") / problem / f"{algorithm}.gin"))
    return path if path.is_file() else None
