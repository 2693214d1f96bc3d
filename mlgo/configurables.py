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


def check_bound_values() -> None:
    """Build each configuration dataclass once under the current gin bindings, so values out
    of range (each checks its own in __post_init__) are refused before any work starts."""
    from mlgo.errors import MlgoError
    from mlgo.problems.inlining.network import InliningNetworkConfig
    from mlgo.problems.regalloc.network import RegallocNetworkConfig
    from mlgo.training.bc import BCConfig
    from mlgo.training.es import ESConfig
    from mlgo.training.ppo import PPOConfig

    for cls in (BCConfig, PPOConfig, ESConfig, InliningNetworkConfig, RegallocNetworkConfig):
        try:
            cls()
        except MlgoError as e:
            # gin appends "In call to configurable ..." lines; the first line says it all.
            raise MlgoError(str(e).splitlines()[0]) from None
