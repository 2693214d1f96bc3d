"""The inlining policy network: one call site's features -> P(inline).

    x_f          raw int64 feature f (every header feature except the ignored ones)
    q_f          quantile of x_f in the vocab (mlgo/policies/vocab.py), in [0, 1]
    input        concat_f [q_f, sqrt(q_f), q_f^2 (, sign(x_f) log1p|x_f|)]
    logits [2]   MLP(input): logit 0 = do not inline, logit 1 = inline (a Bernoulli head
                 written as two logits so it shares the softmax code path with regalloc)
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
from mlgo.policies.network import MLP, FeatureMismatchError, PolicyNetwork, as_specs
from mlgo.policies.ops import Graph
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

ADVICE = "inlining_decision"


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

    def __post_init__(self) -> None:
        check_layer_sizes("inlining.InliningNetworkConfig.hidden_sizes", self.hidden_sizes)
        check_float("inlining.InliningNetworkConfig.output_scale", self.output_scale, lo=0.0,
                    lo_open=True)


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
        g.outputs["logits"] = logits = self.mlp.build(g, g.interleave(*parts))
        g.outputs[self.advice.name] = g.index(logits, "max")
        return g


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
