"""Inlining for size: the inliner asks, per call site, whether to inline; the objective is the
.text size of the module's object file at -Oz."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gin

from mlgo.compiler import plugin_env
from mlgo.compiler.measure import (
    FUNCTION_PREFIX,
    comdat_breakdown,
    comdat_objective,
    function_sizes,
    text_sections,
)
from mlgo.policies import builtins
from mlgo.problems.base import Heuristic, Measurement, Problem
from mlgo.protocol import FeatureValues, Header, for_llvm, llvm19, llvm22
from mlgo_base import toolchain
from mlgo_base.change import relative_change
from mlgo_base.errors import MlgoError, ProtocolError

ADVICE = llvm19.ADVICE["inlining"]  # the same in every LLVM version mlgo runs on
# Sent only under -inliner-interactive-include-default, which no release compile has: never
# learn from it (on LLVM 19 it is always 0, the decision going to another slot, below).
IGNORED_FEATURES = ("inlining_default",)
# Where LLVM 19 puts the default decision: over callee_basic_block_count (see llvm19.py), whose
# real value is then lost for the whole compile. LLVM 22 gives it its own slot.
LLVM19_DEFAULT_DECISION_SLOT = llvm19.DEFAULT_DECISION_SLOT
LLVM_DEFAULT = "llvm-default"


# The default inliner's rule as the interactive features expose it: inline when the estimated
# cost is below the threshold (defined once, in mlgo/policies/builtins.py, for Python and C). On
# -Oz IR it gives LLVM's own decision (see llvm_default) at 99.86% of the call sites along
# LLVM's path on the held-out projects (benchmarks/RESULTS.md, "The environment measures the
# real build"), so cloning it nearly clones -Oz.
cost_threshold = builtins.heuristic("inlining", "cost-threshold")


def llvm_default(obs: FeatureValues, llvm_major: int | None = None) -> int:
    """LLVM's own -Oz inliner decision (DefaultInlineAdvisor: InlineCost with its bonuses,
    deferral, profile-based thresholds) for this call site, as the compiler computed it, read
    from where LLVM `llvm_major` (default: the one mlgo is set to) puts it. Only present when
    the compile ran with -inliner-interactive-include-default, i.e. with
    `problem.for_policy("llvm-default")`."""
    if plugin_env.from_plugin(obs):  # the plugin sends it in its own slot
        return plugin_env.llvm_default(obs)
    major = toolchain.llvm_major() if llvm_major is None else llvm_major
    slot = for_llvm(major).DEFAULT_DECISION_SLOT
    if "inlining_default" not in obs:
        raise ProtocolError(
            "the llvm-default policy needs the compiler's default decisions: run it on "
            "problem.for_policy('llvm-default') (mlgo eval does), which adds "
            "-inliner-interactive-include-default")
    decision = int(obs[slot].item(0))
    if decision not in (0, 1):
        raise ProtocolError(
            f"expected LLVM {major}'s default decision (0 or 1) in {slot!r}, got {decision}: "
            f"this compiler does not lay out -inliner-interactive-include-default as LLVM "
            f"{major} does")
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
                 include_default: bool = False, comdat_weights: str = "",
                 ir2vec_vocab: str = "", plugin: str = "") -> None:
        super().__init__(opt_level, extra_flags)
        # Ask LLVM for its default decision per call site: only the llvm-default policy reads
        # it, and on LLVM 19 it costs callee_basic_block_count (LLVM19_DEFAULT_DECISION_SLOT).
        self.include_default = include_default
        # A JSON file {"comdat:<signature>": weight} (`mlgo search --comdat-aware` writes one):
        # the reward then charges each COMDAT text group its weight, 1/n of the modules that
        # define it, so removing a copy the linker merges anyway earns about nothing.
        self.comdat_weights = comdat_weights
        # The inliner plugin with no policy (`--env plugin` binds it): decisions then go through
        # its channel (mlgo/compiler/plugin_env.py) instead of LLVM's interactive mode.
        self.plugin = plugin
        # An IR2Vec vocabulary (`mlgo vocab --ir2vec`, LLVM 22 only): the compiler then also
        # sends callee_embedding and caller_embedding (mlgo/protocol/llvm22.py).
        self.ir2vec_vocab = ir2vec_vocab
        # Measure each function's bytes too (FUNCTION_PREFIX keys of per_function): the strong
        # search's batched flips attribute a compile's changes to the call sites it changed.
        self.function_sizes = False
        if ir2vec_vocab and self.llvm_major < 22:
            raise MlgoError(f"inlining.InliningForSize.ir2vec_vocab={ir2vec_vocab!r}: IR2Vec "
                            f"embeddings need LLVM 22, mlgo is set to LLVM {self.llvm_major} "
                            f"(set {toolchain.VERSION_VARIABLE}=22)")
        if ir2vec_vocab and not Path(ir2vec_vocab).is_file():
            raise MlgoError(f"{ir2vec_vocab}: no such IR2Vec vocabulary file "
                            "(inlining.InliningForSize.ir2vec_vocab)")

    def reward(self, policy: Measurement, default: Measurement) -> float:
        if not self.comdat_weights:
            return super().reward(policy, default)
        objective = comdat_objective(_load_weights(self.comdat_weights))
        return -relative_change(objective(default), objective(policy))

    @property
    def variant(self) -> str:
        parts = ["plugin"] if self.plugin else []
        parts += ["include-default"] if self.include_default else []
        if self.ir2vec_vocab:  # the embeddings' width is the vocabulary's
            parts.append(f"ir2vec:{Path(self.ir2vec_vocab).resolve()}")
        return ",".join(parts)

    @property
    def llvm_major(self) -> int:
        # Read when used, as compile_argv finds the compiler: the two always agree.
        return toolchain.llvm_major()

    @property
    def overwritten_features(self) -> tuple[str, ...]:
        # The plugin sends LLVM's decision in a slot of its own.
        if not self.include_default or self.llvm_major != 19 or self.plugin:
            return ()
        return (LLVM19_DEFAULT_DECISION_SLOT,)

    def for_policy(self, builtin: str | None) -> InliningForSize:
        if builtin != LLVM_DEFAULT or self.include_default:
            return self
        variant = InliningForSize(self.opt_level, self.extra_flags, include_default=True,
                                  comdat_weights=self.comdat_weights,
                                  ir2vec_vocab=self.ir2vec_vocab, plugin=self.plugin)
        variant.plain = self
        return variant

    def compile_argv(self, module, workdir: Path, channel_base: Path | None) -> list[str]:
        argv = super().compile_argv(module, workdir, channel_base)
        cc1 = module.args()[:1] == ["-cc1"]
        return plugin_env.for_cc1(argv) if self.plugin and channel_base and cc1 else argv

    def channel_flags(self, channel_base: Path) -> list[str]:
        if self.plugin:
            return plugin_env.channel_flags(self.plugin, channel_base,
                                            include_default=self.include_default)
        flags = [
            "-mllvm", "-enable-ml-inliner=release",
            "-mllvm", f"-inliner-interactive-channel-base={channel_base}",
        ]
        if self.include_default:
            flags += ["-mllvm", "-inliner-interactive-include-default"]
        if self.ir2vec_vocab:
            flags += [f for option in llvm22.IR2VEC_VOCAB_OPTIONS
                      for f in ("-mllvm", f"{option}={self.ir2vec_vocab}")]
        return flags

    # per_function holds the bytes of each COMDAT text group (measure.comdat_breakdown), for
    # dedup-aware reports and rewards; version 2 of the measurement, so older cached
    # baselines without it are not reused.
    @property
    def measurement_version(self) -> str:
        return "2,functions" if self.function_sizes else "2"

    def measure(self, workdir: Path, name: str) -> Measurement:
        sections = text_sections(workdir / "out.o")
        per_function = comdat_breakdown(sections)
        if self.function_sizes:
            per_function.update({FUNCTION_PREFIX + f: float(n)
                                 for f, n in function_sizes(workdir / "out.o").items()})
        return Measurement(float(sum(s.size for s in sections)), per_function)

    def heuristics(self) -> dict[str, Heuristic | None]:
        return {
            "default": None,
            "cost-threshold": cost_threshold,
            LLVM_DEFAULT: functools.partial(llvm_default, llvm_major=self.llvm_major),
            "never": builtins.heuristic("inlining", "never"),
            "always": builtins.heuristic("inlining", "always"),
        }

    def build_network(self, header: Header, vocab_dir: Path | None):
        """A fresh policy network for this header (hyperparameters from gin)."""
        from mlgo.problems.inlining.network import build_network

        return build_network(header, vocab_dir)

    def default_proxy(self, obs: FeatureValues) -> int:
        # With the compiler's own decisions at hand, they are the label.
        if self.include_default:
            return llvm_default(obs, self.llvm_major)
        return cost_threshold(obs)
