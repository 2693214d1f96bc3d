"""The inlining policy network: one call site's features -> P(inline).

    x_f          raw int64 feature f (every header feature except the ignored ones)
    q_f          quantile of x_f in the vocab (mlgo/policies/vocab.py), in [0, 1]
    input        concat_f [q_f, sqrt(q_f), q_f^2 (, sign(x_f) log1p|x_f|)]
    logits [2]   MLP(input): logit 0 = do not inline, logit 1 = inline (a Bernoulli head
                 written as two logits so it shares the softmax code path with regalloc)

With `residual`, the MLP's two outputs are [keep, flip] and LLVM's rule decides which action
each one scores: r = cost_estimate < threshold (builtins.cost_threshold), and

    logits       [where(r, flip, keep), where(r, keep, flip)]

so the greedy decision is the rule unless the flip logit wins. The output bias starts at
[keep_prior, 0]: a fresh residual policy is the rule, and imitation only has to learn where to
leave it (the rule gives LLVM's own decision at 99.86% of call sites, which a plain network
re-learns imperfectly: benchmarks/results-archive-2026.md, "Search + imitation at corpus
scale"). Every algorithm sees the action logits alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gin
import numpy as np

from mlgo.checks import check_float, check_layer_sizes
from mlgo.policies import vocab as V
from mlgo.policies.builtins import cost_threshold
from mlgo.policies.network import MLP, FeatureMismatchError, PolicyNetwork, as_specs
from mlgo.policies.ops import Graph
from mlgo.protocol import llvm19
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

ADVICE = llvm19.ADVICE["inlining"]
RULE_FEATURES = ("cost_estimate", "threshold")  # builtins.cost_threshold reads these
KEEP, FLIP = 0, 1  # a residual network's MLP outputs


@gin.configurable(module="inlining")
@dataclass(frozen=True)
class InliningNetworkConfig:
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    log_features: bool = False  # add sign(x) log1p(|x|) per feature
    # LLVM 19 sends inlining_default as 0 always (see LLVM19_DEFAULT_DECISION_SLOT in
    # problem.py): learning from it is noise.
    ignored_features: tuple[str, ...] = ("inlining_default",)
    output_scale: float = 0.01  # the output layer starts small: a near-uniform first policy
    residual: bool = False  # the rule cost_estimate < threshold plus a learned flip
    keep_prior: float = 4.0  # residual: the keep logit's initial lead (P(keep) = 0.98)

    def __post_init__(self) -> None:
        check_layer_sizes("inlining.InliningNetworkConfig.hidden_sizes", self.hidden_sizes)
        check_float("inlining.InliningNetworkConfig.output_scale", self.output_scale, lo=0.0,
                    lo_open=True)
        check_float("inlining.InliningNetworkConfig.keep_prior", self.keep_prior, lo=0.0)
        if self.residual and set(RULE_FEATURES) & set(self.ignored_features):
            raise MlgoError("inlining.InliningNetworkConfig: a residual network reads "
                            f"{' and '.join(RULE_FEATURES)}; do not list them in ignored_features")


class InliningNetwork(PolicyNetwork):
    problem = "inlining"
    advice_name = ADVICE
    config_class = InliningNetworkConfig

    def __init__(self, features: Sequence[TensorSpec] | Any, config: InliningNetworkConfig | None = None,
                 vocab: Mapping[str, np.ndarray] | None = None, advice: TensorSpec | None = None) -> None:
        super().__init__(features, advice)
        self.config = config or InliningNetworkConfig()
        self.inputs = [f for f in self.features if f.name not in self.config.ignored_features]
        vocab = dict(vocab or {})
        missing = [f.name for f in self.inputs if f.name not in vocab]
        if missing:
            raise V.VocabError(f"inlining network: no vocab boundaries for {', '.join(missing)}")
        self._vocab = {f.name: np.asarray(vocab[f.name], dtype=np.float64) for f in self.inputs}
        odd = [f"{f.name} {list(f.shape)}" for f in self.inputs if f.num_elements != 1]
        if odd:  # LLVM's inliner features are all scalars
            raise FeatureMismatchError(f"inlining network: inputs must be scalars, got {', '.join(odd)}")
        per_column = 4 if self.config.log_features else 3
        self.mlp = MLP("mlp", (len(self.inputs) * per_column, *self.config.hidden_sizes, 2),
                       self.config.activation)

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def vocab(self) -> dict[str, np.ndarray]:
        return dict(self._vocab)

    def build_graph(self) -> Graph:
        g = Graph(self.inputs)  # the ignored features are no inputs of the policy
        names = [f.name for f in self.inputs]
        x = g.stack(names, rows=1)
        q = g.quantile(x, [self._vocab[n] for n in names])
        parts = [q, g.apply("sqrt", q), g.apply("mul", q, q)]
        if self.config.log_features:
            parts.append(g.apply("cast_f32", g.apply("slog", x)))
        out = self.mlp.build(g, g.interleave(*parts))
        if self.config.residual:
            rule = cost_threshold(g)
            keep, flip = g.take(out, g.const(KEEP)), g.take(out, g.const(FLIP))
            out = g.interleave(g.apply("where", rule, flip, keep), g.apply("where", rule, keep, flip))
        g.outputs["logits"] = out
        g.outputs[self.advice.name] = g.index(out, "max")
        return g

    def init_arrays(self, seed: int = 0) -> dict[str, np.ndarray]:
        arrays = super().init_arrays(seed)
        if self.config.residual:
            arrays[self.mlp.output_param("b")][KEEP] = self.config.keep_prior
        return arrays

    def flip_margin_position(self) -> int | None:
        """The keep logit's bias: raising it by m keeps the rule unless the flip leads by m."""
        if not self.config.residual:
            return None
        return self.param_offset(self.mlp.output_param("b")) + KEEP


def build_network(header_or_specs: Any, vocab_dir: Path | str | None,
                  config: InliningNetworkConfig | None = None) -> InliningNetwork:
    """The network for the compiler's header, normalized by the vocab in `vocab_dir`; the
    config defaults to gin's bindings of InliningNetworkConfig."""
    specs = as_specs(header_or_specs)
    advice = getattr(header_or_specs, "advice", None)
    config = config or InliningNetworkConfig()
    used = [f.name for f in specs if f.name not in config.ignored_features]
    if vocab_dir is None:
        raise MlgoError("the inlining network needs a vocab directory (`mlgo vocab`)")
    return InliningNetwork(specs, config, V.load_vocab(vocab_dir, used), advice)
