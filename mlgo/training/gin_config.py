"""The trainer's gin configuration: every configurable registered (the compile side's and the
training algorithms'), then one command's gin files and bindings, checked before any work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gin

from mlgo.configurables import import_configurables
from mlgo.problems.inlining.network import InliningNetworkConfig
from mlgo.problems.regalloc.network import RegallocNetworkConfig
from mlgo.training import imitation  # noqa: F401  (registers its configurable with gin)
from mlgo.training.bc import BCConfig
from mlgo.training.es import ESConfig
from mlgo.training.ppo import PPOConfig
from mlgo.workers.tasks import forget_applied_gin
from mlgo_base.errors import MlgoError


def parse_gin(gin_files: Sequence[Path], bindings: Sequence[str]) -> str:
    """Replace the process's gin configuration with these files and bindings (later ones
    override earlier ones); return the configuration text for workers to replay."""
    import_configurables()
    for f in gin_files:
        if not Path(f).is_file():
            raise MlgoError(f"{f}: gin file not found")
    gin.clear_config()  # one configuration per command, even when called in-process repeatedly
    forget_applied_gin()
    try:
        gin.parse_config_files_and_bindings([str(f) for f in gin_files], list(bindings),
                                            finalize_config=False)
    except Exception as e:  # gin raises ValueError/KeyError/SyntaxError-alikes
        where = ", ".join([*map(str, gin_files), *bindings]) or "gin"
        raise MlgoError(f"bad gin configuration ({where}): {e}") from e
    check_bound_values()
    return gin.config_str()


def check_bound_values() -> None:
    """Build each configuration dataclass once under the current gin bindings, so values out
    of range (each checks its own in __post_init__) are refused before any work starts."""
    for cls in (BCConfig, PPOConfig, ESConfig, InliningNetworkConfig, RegallocNetworkConfig):
        try:
            cls()
        except MlgoError as e:
            # gin appends "In call to configurable ..." lines; the first line says it all.
            raise MlgoError(str(e).splitlines()[0]) from None
