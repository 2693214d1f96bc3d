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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gin
import numpy as np

from mlgo.checks import check_float, check_layer_sizes
from mlgo.policies.network import (
    INVALID_LOGIT,
    MLP,
    Batch,
    FeatureMismatchError,
    ParamShapes,
    PolicyNetwork,
    as_specs,
)
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

ADVICE = "index_to_evict"
MASK = "mask"
PASSTHROUGH_CLIP = 100.0
FINITE_CAP = 1e30


@gin.configurable(module="regalloc")
@dataclass(frozen=True)
class RegallocNetworkConfig:
    hidden_sizes: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    # Features already in a small range; every other feature gets sign(v) log1p(|v|).
    passthrough_names: tuple[str, ...] = ("mask", "is_free", "is_hint", "is_local", "progress")
    passthrough_suffixes: tuple[str, ...] = ("_by_max",)
    output_scale: float = 0.01

    def __post_init__(self) -> None:
        check_layer_sizes("regalloc.RegallocNetworkConfig.hidden_sizes", self.hidden_sizes)
        check_float("regalloc.RegallocNetworkConfig.output_scale", self.output_scale, lo=0.0,
                    lo_open=True)

    def passthrough(self, name: str) -> bool:
        return name in self.passthrough_names or name.endswith(self.passthrough_suffixes)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RegallocNetworkConfig:
        return cls(hidden_sizes=tuple(int(h) for h in d["hidden_sizes"]),
                   activation=str(d["activation"]),
                   passthrough_names=tuple(d["passthrough_names"]),
                   passthrough_suffixes=tuple(d["passthrough_suffixes"]),
                   output_scale=float(d.get("output_scale", 0.01)))


class RegallocNetwork(PolicyNetwork):
    problem = "regalloc"
    advice_name = ADVICE

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
        # Column order of c_k: header order. Which columns pass through, which get log1p:
        self.columns = list(self.features)
        self._passthrough = np.array([self.config.passthrough(f.name) for f in self.columns])
        self.mlp = MLP("scorer", (len(self.columns), *self.config.hidden_sizes, 1),
                       self.config.activation)

    @property
    def num_actions(self) -> int:
        return self.num_candidates

    def param_shapes(self) -> ParamShapes:
        return self.mlp.param_shapes()

    def _init_arrays(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.mlp.init(rng, self.config.output_scale)

    # -- numpy ---------------------------------------------------------------------------------
    def _candidates_numpy(self, batch: Batch) -> np.ndarray:
        """[B, K, C] float32 per-candidate inputs."""
        b = np.asarray(batch[MASK]).size // self.num_candidates
        v = np.empty((b, len(self.columns), self.num_candidates), dtype=np.float64)
        for j, f in enumerate(self.columns):
            # assignment converts the dtype and broadcasts scalar features over positions
            v[:, j, :] = np.asarray(batch[f.name]).reshape(b, f.num_elements)
        v[np.isnan(v)] = 0.0
        np.clip(v, -FINITE_CAP, FINITE_CAP, out=v)
        free = v[:, ~self._passthrough, :]
        v[:, ~self._passthrough, :] = np.sign(free) * np.log1p(np.abs(free))
        np.clip(v, -PASSTHROUGH_CLIP, PASSTHROUGH_CLIP, out=v)  # no-op on log1p'd values (<= 70)
        return v.transpose(0, 2, 1).astype(np.float32)

    def _logits_numpy(self, p: dict[str, np.ndarray], batch: Batch) -> np.ndarray:
        c = self._candidates_numpy(batch)
        b, k, n = c.shape
        scores = self.mlp.numpy(p, c.reshape(b * k, n)).reshape(b, k)
        valid = self.rows(batch, MASK) != 0
        return np.where(valid, scores, INVALID_LOGIT).astype(np.float32)

    # -- TensorFlow ----------------------------------------------------------------------------
    def _candidates_tf(self, batch: Batch):
        import tensorflow as tf

        k = self.num_candidates
        cols = []
        for f in self.columns:
            v = tf.cast(self.rows_tf(batch, f.name), tf.float64)
            cols.append(tf.broadcast_to(v, [tf.shape(v)[0], k]) if f.num_elements == 1 else v)
        v = tf.stack(cols, axis=-1)
        v = tf.where(tf.math.is_nan(v), tf.zeros_like(v), v)
        v = tf.clip_by_value(v, -FINITE_CAP, FINITE_CAP)
        v = tf.where(tf.constant(self._passthrough), v, tf.sign(v) * tf.math.log1p(tf.abs(v)))
        v = tf.clip_by_value(v, -PASSTHROUGH_CLIP, PASSTHROUGH_CLIP)
        return tf.cast(v, tf.float32)

    def _logits_tf(self, p: dict[str, Any], batch: Batch):
        import tensorflow as tf

        c = self._candidates_tf(batch)
        k, n = self.num_candidates, len(self.columns)
        scores = tf.reshape(self.mlp.tf(p, tf.reshape(c, [-1, n])), [-1, k])
        valid = tf.not_equal(self.rows_tf(batch, MASK), 0)
        return tf.where(valid, scores, tf.fill(tf.shape(scores), INVALID_LOGIT))

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_json(cls, features: Sequence[TensorSpec], config: Mapping[str, Any],
                  vocab: Mapping[str, np.ndarray], advice: TensorSpec | None) -> RegallocNetwork:
        return cls(features, RegallocNetworkConfig.from_json(config), vocab, advice)


def build_network(header_or_specs: Any, vocab_dir: Path | str | None = None,
                  config: RegallocNetworkConfig | None = None) -> RegallocNetwork:
    """The network for the compiler's header (`vocab_dir` is accepted for a uniform call and
    ignored: eviction features are normalized by fixed transforms)."""
    return RegallocNetwork(as_specs(header_or_specs), config or RegallocNetworkConfig(),
                           None, getattr(header_or_specs, "advice", None))
