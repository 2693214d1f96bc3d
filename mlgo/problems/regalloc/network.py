"""The eviction policy network: score each of the K = 33 candidate positions with one MLP
shared across positions, then a softmax over the positions the compiler allows (mask == 1).

    c_k            per-candidate input of position k: column k of every [1, K] feature, plus
                   every scalar feature (e.g. progress) broadcast to all positions
    transform      bounded features (flags, *_by_max ratios, progress) pass through, clipped
                   to [-PASSTHROUGH_CLIP, PASSTHROUGH_CLIP]; unbounded ones (counts, sizes,
                   densities, stages) become sign(v) log1p(|v|). Before that, NaN -> 0 and
                   everything is clipped to +-1e30: masked positions may carry garbage, and a
                   NaN there would poison the gradient even though its logit is replaced.
    logit_k        MLP(c_k) if mask_k == 1 else INVALID_LOGIT

Sharing the scorer across positions makes the policy independent of which physical register
sits at which position, and the parameter count independent of K.

With `residual`, LLVM's default eviction as restated by `default-rule` (builtins.default_rule,
composed into the same graph) anchors the scores: r = the rule's position, and

    logit_k        MLP(c_k) + anchor * [k == r] (+ the anchor layer's bias, the same for all k)
                   if mask_k == 1 or k == r, else INVALID_LOGIT

so the greedy decision is the rule's unless another candidate's score beats the rule's own by
more than the anchor. A fresh residual network has its scorer's output weights at zero (every
score equal) and the anchor at `anchor_prior`: it IS the rule, on every observation, and
imitation only has to learn where to leave it. A flip margin m raises the anchor by m
(mlgo/policies/margin.py). The rule's position stays valid even where the mask says no (the
rule evicts nothing when nothing is eligible), so the network never decides other than the
rule by accident of a mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gin
import numpy as np

from mlgo.checks import check_float, check_layer_sizes
from mlgo.policies.builtins import default_rule
from mlgo.policies.network import (
    INVALID_LOGIT,
    MLP,
    FeatureMismatchError,
    PolicyNetwork,
    as_specs,
)
from mlgo.policies.ops import Graph
from mlgo.protocol import llvm19
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

ADVICE = llvm19.ADVICE["regalloc"]
MASK = "mask"
PASSTHROUGH_CLIP = 100.0
FINITE_CAP = 1e30
RULE_FEATURES = ("mask", "use_def_density", "nr_broken_hints", "is_hint")  # default_rule reads these
ANCHOR_W, ANCHOR_B = "anchor/w", "anchor/b"  # a residual network's anchor layer


@gin.configurable(module="regalloc")
@dataclass(frozen=True)
class RegallocNetworkConfig:
    hidden_sizes: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    # Features already in a small range; every other feature gets sign(v) log1p(|v|).
    passthrough_names: tuple[str, ...] = ("mask", "is_free", "is_hint", "is_local", "progress")
    passthrough_suffixes: tuple[str, ...] = ("_by_max",)
    output_scale: float = 0.01
    residual: bool = False  # default-rule's choice plus learned per-candidate scores
    anchor_prior: float = 4.0  # residual: the rule's initial lead over every other candidate

    def __post_init__(self) -> None:
        check_layer_sizes("regalloc.RegallocNetworkConfig.hidden_sizes", self.hidden_sizes)
        check_float("regalloc.RegallocNetworkConfig.output_scale", self.output_scale, lo=0.0,
                    lo_open=True)
        check_float("regalloc.RegallocNetworkConfig.anchor_prior", self.anchor_prior, lo=0.0,
                    lo_open=True)

    def passthrough(self, name: str) -> bool:
        return name in self.passthrough_names or name.endswith(self.passthrough_suffixes)


class RegallocNetwork(PolicyNetwork):
    problem = "regalloc"
    advice_name = ADVICE
    config_class = RegallocNetworkConfig

    def __init__(self, features: Sequence[TensorSpec] | Any, config: RegallocNetworkConfig | None = None,
                 vocab: Mapping[str, np.ndarray] | None = None, advice: TensorSpec | None = None) -> None:
        super().__init__(features, advice)
        self.config = config or RegallocNetworkConfig()
        if vocab:
            raise MlgoError("the regalloc network does not use a vocab")
        if MASK not in self._spec:
            raise FeatureMismatchError("regalloc network: the header has no 'mask' feature")
        self.num_candidates = self._spec[MASK].num_elements
        odd = [f"{f.name} {list(f.shape)}" for f in self.features
               if f.num_elements not in (1, self.num_candidates)]
        if odd:
            raise FeatureMismatchError(
                f"regalloc network: features must have 1 or {self.num_candidates} elements; "
                f"got {', '.join(odd)}")
        missing = [n for n in RULE_FEATURES if n not in self._spec]
        if self.config.residual and missing:
            raise FeatureMismatchError(f"regalloc network: a residual network reads "
                                       f"{', '.join(missing)}, which the header lacks")
        # Column order of c_k: header order. Which columns pass through, which get log1p:
        self.columns = list(self.features)
        self._passthrough = [self.config.passthrough(f.name) for f in self.columns]
        self.mlp = MLP("scorer", (len(self.columns), *self.config.hidden_sizes, 1),
                       self.config.activation)

    @property
    def num_actions(self) -> int:
        return self.num_candidates

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        anchor = [(ANCHOR_W, (1, 1)), (ANCHOR_B, (1,))] if self.config.residual else []
        return self.mlp.param_shapes() + anchor

    def init_arrays(self, seed: int = 0) -> dict[str, np.ndarray]:
        arrays = super().init_arrays(seed)
        if self.config.residual:
            # every score equal: only the anchor decides, so a fresh network is the rule exactly
            arrays[self.mlp.output_param("w")] *= 0.0
            arrays[ANCHOR_W] = np.full((1, 1), self.config.anchor_prior)
            arrays[ANCHOR_B] = np.zeros(1)
        return arrays

    def flip_margin_position(self) -> int | None:
        """The anchor: raising it by m keeps the rule unless a candidate leads it by m."""
        return self.param_offset(ANCHOR_W) if self.config.residual else None

    def build_graph(self) -> Graph:
        g = Graph(self.features)
        v = g.stack([f.name for f in self.columns], rows=self.num_candidates)  # c_k is row k
        v = g.apply("clip", g.apply("nan_to_zero", v), lo=-FINITE_CAP, hi=FINITE_CAP)
        v = g.apply("slog", v, cols=tuple(not p for p in self._passthrough))
        v = g.apply("cast_f32", g.apply("clip", v, lo=-PASSTHROUGH_CLIP, hi=PASSTHROUGH_CLIP))
        scores = self.mlp.build(g, v)  # [K, 1]
        valid = g.input(MASK)
        if self.config.residual:
            rule, position = default_rule(g), g.iota(self.num_candidates)
            zero, one = g.const(0), g.const(1)
            at_rule = g.apply("where", g.apply("less", position, rule), zero,
                              g.apply("where", g.apply("less", rule, position), zero, one))
            anchor = g.dense(g.apply("cast_f32", at_rule), ANCHOR_W, ANCHOR_B, 1)
            scores = g.apply("add", scores, anchor)
            valid = g.apply("where", at_rule, at_rule, valid)
        g.outputs["logits"] = logits = g.apply("where", valid, scores, g.const(INVALID_LOGIT, "f32"))
        g.outputs[self.advice.name] = g.index(logits, "max")
        return g


def build_network(header_or_specs: Any, vocab_dir: Path | str | None = None,
                  config: RegallocNetworkConfig | None = None) -> RegallocNetwork:
    """The network for the compiler's header (`vocab_dir` is accepted for a uniform call and
    ignored: eviction features are normalized by fixed transforms)."""
    return RegallocNetwork(as_specs(header_or_specs), config or RegallocNetworkConfig(),
                           None, getattr(header_or_specs, "advice", None))
