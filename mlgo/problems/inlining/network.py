"""The inlining policy network: one call site's features -> P(inline).

    x_f          raw int64 feature f (every header feature except the ignored ones)
    q_f          quantile of x_f in the vocab (mlgo/policies/vocab.py), in [0, 1]
    input        concat_f [q_f, sqrt(q_f), q_f^2 (, sign(x_f) log1p|x_f|)], the scalar
                 features first, then each vector feature's components in turn
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

Vector features (LLVM 22's callee_embedding and caller_embedding, float [D], sent when the
inliner is given an IR2Vec vocabulary) are inputs like the scalars: component c of a vector v
is normalized like a scalar feature, [q, sqrt(q), q^2 (, slog)], q its quantile in the vocab's
own boundary list for that component (`v.c`, mlgo/policies/vocab.py; a NaN component counts
as 0, an infinite one as the largest float). Quantiles rather than a mean and standard
deviation per component: a function's embedding is a sum over its instructions, so its
magnitude grows with the function's size (at the 2,482 call sites of lua5.4's 34 modules on
clang-22, with a 64-wide vocabulary `mlgo vocab --ir2vec` trained on them, the largest
callee_embedding norm is 36 times the median, one component 28 standard deviations from its
mean), a tail that squeezes everything else near the mean once divided by the standard
deviation, and quantiles keep the vocab as policy directories store and check it. A network
without vector features builds the very graph it built before they existed.
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
FLOAT_MAX = float(np.finfo(np.float32).max)


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
        names = [key for f in self.inputs for key in V.vocab_names(f.name, f.num_elements)]
        missing = [key for key in names if key not in vocab]
        if missing:
            raise V.VocabError(f"inlining network: no vocab boundaries for {', '.join(missing)}")
        self._vocab = {key: np.asarray(vocab[key], dtype=np.float64) for key in names}
        odd = [f"{f.name} {list(f.shape)}" for f in self.inputs
               if f.num_elements != 1 and len(f.shape) != 1]
        if odd:
            raise FeatureMismatchError(f"inlining network: inputs must be scalars or vectors, got "
                                       f"{', '.join(odd)}")
        per_column = 4 if self.config.log_features else 3
        self.mlp = MLP("mlp", (sum(f.num_elements for f in self.inputs) * per_column,
                               *self.config.hidden_sizes, 2), self.config.activation)

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def vocab(self) -> dict[str, np.ndarray]:
        return dict(self._vocab)

    def build_graph(self) -> Graph:
        g = Graph(self.inputs)  # the ignored features are no inputs of the policy
        scalars = [f.name for f in self.inputs if f.num_elements == 1]
        rows = [self._normalized(g, g.stack(scalars, rows=1), scalars)] if scalars else []
        for f in self.inputs:
            if f.num_elements != 1:  # one row of its components (float: NaN and inf cleaned)
                x = g.concat(g.stack([f.name], rows=f.num_elements))
                x = g.apply("clip", g.apply("nan_to_zero", x), lo=-FLOAT_MAX, hi=FLOAT_MAX)
                rows.append(self._normalized(g, x, V.vocab_names(f.name, f.num_elements)))
        out = self.mlp.build(g, rows[0] if len(rows) == 1 else g.concat(*rows))
        if self.config.residual:
            rule = cost_threshold(g)
            keep, flip = g.take(out, g.const(KEEP)), g.take(out, g.const(FLIP))
            out = g.interleave(g.apply("where", rule, flip, keep), g.apply("where", rule, keep, flip))
        g.outputs["logits"] = out
        g.outputs[self.advice.name] = g.index(out, "max")
        return g

    def _normalized(self, g: Graph, x: int, names: list[str]) -> int:
        """[1, len(names) * k]: the k normalized columns of each column of the row `x`, whose
        boundaries are the vocab's `names`."""
        q = g.quantile(x, [self._vocab[n] for n in names])
        parts = [q, g.apply("sqrt", q), g.apply("mul", q, q)]
        if self.config.log_features:
            parts.append(g.apply("cast_f32", g.apply("slog", x)))
        return g.interleave(*parts)

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
    used = [key for f in specs if f.name not in config.ignored_features
            for key in V.vocab_names(f.name, f.num_elements)]
    if vocab_dir is None:
        raise MlgoError("the inlining network needs a vocab directory (`mlgo vocab`)")
    return InliningNetwork(specs, config, V.load_vocab(vocab_dir, used), advice)
