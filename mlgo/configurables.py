"""Every gin-configurable in mlgo, imported in one place so bindings always find their target.

Workers import only the compile-side ones (problems, networks: no TensorFlow); the CLI
imports all of them before parsing --gin_file/--gin_bindings."""

from __future__ import annotations

import importlib

COMPILE_SIDE = (
    "mlgo.problems.inlining.problem",
    "mlgo.problems.regalloc.problem",
    "mlgo.problems.inlining.network",
    "mlgo.problems.regalloc.network",
)
TRAINING_SIDE = ("mlgo.training.bc", "mlgo.training.ppo", "mlgo.training.es")


def import_configurables(training: bool = True) -> None:
    for name in COMPILE_SIDE + (TRAINING_SIDE if training else ()):
        importlib.import_module(name)
