"""Inlining for size: the inliner asks, per call site, whether to inline; the objective is the
.text size of the module's object file at -Oz."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gin

from mlgo.compiler.measure import comdat_breakdown, comdat_objective, text_sections
from mlgo.policies import builtins
from mlgo.problems.base import Heuristic, Measurement, Problem, relative_improvement
from mlgo.protocol import FeatureValues, Header
from mlgo.protocol.llvm19 import ADVICE as LLVM19_ADVICE
from mlgo_base.errors import MlgoError, ProtocolError

ADVICE = LLVM19_ADVICE["inlining"]
# LLVM 19 sends this feature (with -inliner-interactive-include-default) but always as 0, the
# decision going to LLVM19_DEFAULT_DECISION_SLOT instead (below): never learn from it.
IGNORED_FEATURES = ("inlining_default",)
# Where LLVM 19 actually puts the default advisor's decision under
# -inliner-interactive-include-default: MLInlineAdvisor::getAdviceImpl writes it to tensor
# index InlineCostFeatureIndex::NumberOfFeatures, the first feature after the InlineCost ones,
# instead of the extra `inlining_default` tensor at the end (which stays 0). That slot is
# `callee_basic_block_count`, whose real value is then lost for the whole compile.
LLVM19_DEFAULT_DECISION_SLOT = "callee_basic_block_count"
LLVM_DEFAULT = "llvm-default"


# The default inliner's rule as the interactive features expose it: inline when the estimated
# cost is below the threshold (defined once, in mlgo/policies/builtins.py, for Python and C). On
# -Oz IR it gives LLVM's own decision (see llvm_default) at 99.86% of the call sites along
# LLVM's path on the held-out projects (benchmarks/RESULTS.md, "The environment measures the
# real build"), so cloning it nearly clones -Oz.
cost_threshold = builtins.heuristic("inlining", "cost-threshold")


def llvm_default(obs: FeatureValues) -> int:
    """LLVM's own -Oz inliner decision (DefaultInlineAdvisor: InlineCost with its bonuses,
    deferral, profile-based thresholds) for this call site, as the compiler computed it. Only
    present when the compile ran with -inliner-interactive-include-default, i.e. with
    `problem.for_policy("llvm-default")`."""
    if "inlining_default" not in obs:
        raise ProtocolError(
            "the llvm-default policy needs the compiler's default decisions: run it on "
            "problem.for_policy('llvm-default') (mlgo eval does), which adds "
            "-inliner-interactive-include-default")
    decision = int(obs[LLVM19_DEFAULT_DECISION_SLOT].item(0))
    if decision not in (0, 1):
        raise ProtocolError(
            f"expected LLVM 19's default decision (0 or 1) in {LLVM19_DEFAULT_DECISION_SLOT!r}, "
            f"got {decision}: this compiler does not lay out -inliner-interactive-include-default "
            "as LLVM 19 does")
    return decision


@functools.cache
def _load_weights(path: str) -> dict[str, float]:
    try:
        weights = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MlgoError(f"{path}: cannot read COMDAT weights ({e})") from e
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in weights.items()):
        raise MlgoError(f"{path}: COMDAT weights must be a JSON object of numbers")
    return {k: float(v) for k, v in weights.items()}


# include_default is not a gin knob: the features it costs would corrupt training.
@gin.configurable(module="inlining", denylist=["include_default"])
class InliningForSize(Problem):
    name = "inlining"
    objective = ".text bytes"
    advice_name = ADVICE
    required_features = ("cost_estimate", "threshold")

    def __init__(self, opt_level: str = "-Oz", extra_flags: tuple[str, ...] = (),
                 include_default: bool = False, comdat_weights: str = "") -> None:
        super().__init__(opt_level, extra_flags)
        # Ask LLVM for its default decision per call site (see LLVM19_DEFAULT_DECISION_SLOT):
        # only the llvm-default policy reads it, and it costs callee_basic_block_count.
        self.include_default = include_default
        # A JSON file {"comdat:<signature>": weight} (`mlgo search --comdat-aware` writes one):
        # the reward then charges each COMDAT text group its weight, 1/n of the modules that
        # define it, so removing a copy the linker merges anyway earns about nothing.
        self.comdat_weights = comdat_weights

    def reward(self, policy: Measurement, default: Measurement) -> float:
        if not self.comdat_weights:
            return super().reward(policy, default)
        objective = comdat_objective(_load_weights(self.comdat_weights))
        return relative_improvement(objective(default), objective(policy))

    @property
    def variant(self) -> str:
        return "include-default" if self.include_default else ""

    @property
    def overwritten_features(self) -> tuple[str, ...]:
        return (LLVM19_DEFAULT_DECISION_SLOT,) if self.include_default else ()

    def for_policy(self, builtin: str | None) -> InliningForSize:
        if builtin != LLVM_DEFAULT or self.include_default:
            return self
        variant = InliningForSize(self.opt_level, self.extra_flags, include_default=True,
                                  comdat_weights=self.comdat_weights)
        variant.plain = self
        return variant

    def channel_flags(self, channel_base: Path) -> list[str]:
        flags = [
            "-mllvm", "-enable-ml-inliner=release",
            "-mllvm", f"-inliner-interactive-channel-base={channel_base}",
        ]
        if self.include_default:
            flags += ["-mllvm", "-inliner-interactive-include-default"]
        return flags

    # per_function holds the bytes of each COMDAT text group (measure.comdat_breakdown), for
    # dedup-aware reports and rewards; version 2 of the measurement, so older cached
    # baselines without it are not reused.
    measurement_version = "2"

    def measure(self, workdir: Path, name: str) -> Measurement:
        sections = text_sections(workdir / "out.o")
        return Measurement(float(sum(s.size for s in sections)), comdat_breakdown(sections))

    def heuristics(self) -> dict[str, Heuristic | None]:
        return {
            "default": None,
            "cost-threshold": cost_threshold,
            LLVM_DEFAULT: llvm_default,
            "never": builtins.heuristic("inlining", "never"),
            "always": builtins.heuristic("inlining", "always"),
        }

    def build_network(self, header: Header, vocab_dir: Path | None):
        """A fresh policy network for this header (hyperparameters from gin)."""
        from mlgo.problems.inlining.network import build_network

        return build_network(header, vocab_dir)

    def default_proxy(self, obs: FeatureValues) -> int:
        # With the compiler's own decisions at hand, they are the label.
        return llvm_default(obs) if self.include_default else cost_threshold(obs)
