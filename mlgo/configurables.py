"""Every gin-configurable in mlgo, imported in one place so bindings always find their target.

Workers import only the compile-side ones (problems, networks: no TensorFlow); the trainer
imports all of them before parsing gin files and bindings (`parse_gin`)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from mlgo.errors import MlgoError

COMPILE_SIDE = (
    "mlgo.problems.inlining.problem",
    "mlgo.problems.regalloc.problem",
    "mlgo.problems.inlining.network",
    "mlgo.problems.regalloc.network",
)
TRAINING_SIDE = ("mlgo.training.bc", "mlgo.training.ppo", "mlgo.training.es",
                 "mlgo.training.imitation")


def import_configurables(training: bool = True) -> None:
    for name in COMPILE_SIDE + (TRAINING_SIDE if training else ()):
        importlib.import_module(name)


def default_gin_file(problem: str, algorithm: str) -> Path | None:
    """The problem's own defaults for an algorithm: mlgo/problems/<problem>/<algorithm>.gin."""
    path = Path(str(files("mlgo.problems") / problem / f"{algorithm}.gin"))
    return path if path.is_file() else None


def parse_gin(gin_files: Sequence[Path], bindings: Sequence[str]) -> str:
    """Replace the process's gin configuration with these files and bindings (later ones
    override earlier ones); return the configuration text for workers to replay."""
    import gin

    import_configurables(training=True)
    for f in gin_files:
        if not Path(f).is_file():
            raise MlgoError(f"{f}: gin file not found")
    gin.clear_config()  # one configuration per command, even when called in-process repeatedly
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
