"""Inlining for size: the inliner asks, per call site, whether to inline; the objective is the
.text size of the module's object file at -Oz."""

from __future__ import annotations

from pathlib import Path

import gin

from mlgo.compiler.measure import text_size
from mlgo.problems.base import Heuristic, Measurement, Observation, Problem
from mlgo.protocol import Header

ADVICE = "inlining_decision"
# LLVM 19 sends this feature in interactive mode but always as 0 (DESIGN.md 1.1): never learn from it.
IGNORED_FEATURES = ("inlining_default",)


def cost_threshold(obs: Observation) -> int:
    """The default inliner's rule as the interactive features expose it: inline when the
    estimated cost is below the threshold. Within 0.7% of plain -Oz on lua5.4, zlib, lz4 and
    libyaml, but not everywhere (bzip2 -8.6%): LLVM's ML advisor, which serves these
    decisions, differs from the default advisor beyond this rule (benchmarks/RESULTS.md)."""
    return int(obs["cost_estimate"].item(0) < obs["threshold"].item(0))


@gin.configurable(module="inlining")
class InliningForSize(Problem):
    name = "inlining"
    objective = ".text bytes"
    advice_name = ADVICE
    required_features = ("cost_estimate", "threshold")

    def __init__(self, opt_level: str = "-Oz", extra_flags: tuple[str, ...] = ()) -> None:
        super().__init__(opt_level, extra_flags)

    def channel_flags(self, channel_base: Path) -> list[str]:
        return [
            "-mllvm", "-enable-ml-inliner=release",
            "-mllvm", f"-inliner-interactive-channel-base={channel_base}",
        ]

    def measure(self, workdir: Path, name: str) -> Measurement:
        return Measurement(float(text_size(workdir / "out.o")))

    def heuristics(self) -> dict[str, Heuristic | None]:
        return {
            "default": None,
            "cost-threshold": cost_threshold,
            "never": lambda obs: 0,
            "always": lambda obs: 1,
        }

    def build_network(self, header: Header, vocab_dir: Path | None):
        """A fresh policy network for this header (hyperparameters from gin)."""
        from mlgo.problems.inlining.network import build_network

        return build_network(header, vocab_dir)

    def default_proxy(self, obs: Observation) -> int:
        return cost_threshold(obs)
