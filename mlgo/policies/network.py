"""The network seam: a policy is a function (flat parameter vector, observations) -> logits.

A flat float vector is the one currency every algorithm shares: ES perturbs it, PPO and BC
differentiate it with TensorFlow, workers evaluate it with numpy, checkpoints store it as
`params.npy`. A network only says how to cut that vector into named arrays
(`param_shapes`) and how to compute logits from them, twice:

    logits_numpy(flat, batch) -> np.ndarray [B, num_actions]   (workers: no TensorFlow)
    logits_tf(flat, batch)    -> tf.Tensor  [B, num_actions]   (training and export)

Both must compute the same function (tests compare them). Invalid actions get INVALID_LOGIT,
a large finite negative number: softmax gives them probability exactly 0 in float32, and
unlike -inf it keeps log-probabilities and their gradients finite.

A batch maps feature name -> array [B, *spec.shape] (a single observation of shape
spec.shape also works: B = 1). Networks are built from the compiler header's feature specs
(never a hard-coded list) and keep them, so a later header can be checked against them.
"""

from __future__ import annotations

import functools
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

INVALID_LOGIT = np.float32(-1e9)

Batch = Mapping[str, np.ndarray]
ParamShapes = list[tuple[str, tuple[int, ...]]]


class FeatureMismatchError(MlgoError):
    """The features a network was built for differ from the ones offered now."""


def as_specs(header_or_specs: Any) -> tuple[TensorSpec, ...]:
    """Feature specs from a protocol Header (its .features) or a sequence of TensorSpec."""
    specs = getattr(header_or_specs, "features", header_or_specs)
    return tuple(specs)


def feature_differences(expected: Sequence[TensorSpec], actual: Sequence[TensorSpec]) -> list[str]:
    """Human-readable differences by feature name (order is irrelevant: inputs go by name)."""
    want = {s.name: s for s in expected}
    have = {s.name: s for s in actual}
    diffs = [f"missing {n} ({want[n].type} {list(want[n].shape)})" for n in want if n not in have]
    diffs += [f"unexpected {n} ({have[n].type} {list(have[n].shape)})" for n in have if n not in want]
    for n in want:
        if n in have and (want[n].type, want[n].shape) != (have[n].type, have[n].shape):
            diffs.append(f"{n}: expected {want[n].type} {list(want[n].shape)}, "
                         f"got {have[n].type} {list(have[n].shape)}")
    return diffs


# -- activations, identical in numpy and TensorFlow -------------------------------------------
def _np_activation(name: str):
    return {"relu": lambda x: np.maximum(x, np.float32(0)), "tanh": np.tanh,
            "linear": lambda x: x}[name]


def _tf_activation(name: str):
    import tensorflow as tf

    return {"relu": tf.nn.relu, "tanh": tf.tanh, "linear": lambda x: x}[name]


ACTIVATIONS = ("relu", "tanh", "linear")


@dataclass(frozen=True)
class MLP:
    """Dense layers sizes[0] -> sizes[1] -> ... -> sizes[-1]; activation between layers, none
    after the last. Parameters are named `<prefix>/<layer>/w` [in, out] and `.../b` [out]."""

    prefix: str
    sizes: tuple[int, ...]
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise MlgoError(f"unknown activation {self.activation!r}; choose one of {ACTIVATIONS}")

    def param_shapes(self) -> ParamShapes:
        shapes: ParamShapes = []
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            shapes += [(f"{self.prefix}/{i}/w", (n_in, n_out)), (f"{self.prefix}/{i}/b", (n_out,))]
        return shapes

    def init(self, rng: np.random.Generator, output_scale: float) -> dict[str, np.ndarray]:
        """He-normal hidden weights (suits relu); the output layer scaled by `output_scale` so
        a fresh policy is close to uniform and early updates are not dominated by noise."""
        out = {}
        last = len(self.sizes) - 2
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            w = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
            out[f"{self.prefix}/{i}/w"] = w * (output_scale if i == last else 1.0)
            out[f"{self.prefix}/{i}/b"] = np.zeros(n_out)
        return out

    def numpy(self, p: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        act = _np_activation(self.activation)
        last = len(self.sizes) - 2
        for i in range(last + 1):
            x = x @ p[f"{self.prefix}/{i}/w"] + p[f"{self.prefix}/{i}/b"]
            if i < last:
                x = act(x)
        return x

    def tf(self, p: Mapping[str, Any], x):
        import tensorflow as tf

        act = _tf_activation(self.activation)
        last = len(self.sizes) - 2
        for i in range(last + 1):
            x = tf.matmul(x, p[f"{self.prefix}/{i}/w"]) + p[f"{self.prefix}/{i}/b"]
            if i < last:
                x = act(x)
        return x


class PolicyNetwork(ABC):
    """Base of every problem's network. Subclasses set `problem` and `advice_name`, implement
    the abstract methods, and take (features, config, vocab, advice) in their constructor so
    a checkpoint can rebuild them."""

    problem: ClassVar[str]
    advice_name: ClassVar[str]

    def __init__(self, features: Sequence[TensorSpec] | Any, advice: TensorSpec | None = None) -> None:
        self.features: tuple[TensorSpec, ...] = as_specs(features)
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise FeatureMismatchError(f"{self.problem}: duplicate feature names in {names}")
        self.advice = advice or TensorSpec(self.advice_name, "int64_t", (1,))
        self._spec = {f.name: f for f in self.features}
        self._names = frozenset(self._spec)

    # -- what subclasses define ----------------------------------------------------------------
    @property
    @abstractmethod
    def num_actions(self) -> int: ...

    @abstractmethod
    def param_shapes(self) -> ParamShapes:
        """Ordered (name, shape) pairs: the layout of the flat vector."""

    @abstractmethod
    def _init_arrays(self, rng: np.random.Generator) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _logits_numpy(self, p: dict[str, np.ndarray], batch: Batch) -> np.ndarray: ...

    @abstractmethod
    def _logits_tf(self, p: dict[str, Any], batch: Batch): ...

    @abstractmethod
    def config_json(self) -> dict[str, Any]:
        """The network's hyperparameters as JSON (the constructor's `config` rebuilt from it)."""

    @classmethod
    @abstractmethod
    def from_json(cls, features: Sequence[TensorSpec], config: Mapping[str, Any],
                  vocab: Mapping[str, np.ndarray], advice: TensorSpec | None) -> PolicyNetwork:
        """Rebuild from `config_json()`'s output (as checkpoints do)."""

    @property
    def vocab(self) -> dict[str, np.ndarray]:
        """Feature boundaries the network depends on (saved with the policy); none by default."""
        return {}

    # -- shared machinery ----------------------------------------------------------------------
    @functools.cached_property
    def _layout(self) -> list[tuple[str, tuple[int, ...], int, int]]:
        """(name, shape, start, end) of each array in the flat vector."""
        layout, offset = [], 0
        for name, shape in self.param_shapes():
            n = math.prod(shape)
            layout.append((name, tuple(shape), offset, offset + n))
            offset += n
        return layout

    @property
    def num_params(self) -> int:
        return self._layout[-1][3] if self._layout else 0

    def init_params(self, seed: int = 0) -> np.ndarray:
        arrays = self._init_arrays(np.random.default_rng(seed))
        return np.concatenate([np.asarray(arrays[n], np.float32).reshape(-1)
                               for n, _, _, _ in self._layout])

    def unflatten_numpy(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        flat = np.asarray(flat, dtype=np.float32).reshape(-1)
        self._check_size(flat.shape[0])
        return {name: flat[a:b].reshape(shape) for name, shape, a, b in self._layout}

    def unflatten_tf(self, flat) -> dict[str, Any]:
        import tensorflow as tf

        flat = tf.reshape(tf.cast(flat, tf.float32), [-1])
        self._check_size(int(flat.shape[0]))
        return {name: tf.reshape(flat[a:b], shape) for name, shape, a, b in self._layout}

    def bind_numpy(self, flat: np.ndarray) -> Callable[[Batch], np.ndarray]:
        """logits_numpy with the parameters cut once: batch -> logits (for per-decision use)."""
        arrays = self.unflatten_numpy(flat)

        def logits(batch: Batch) -> np.ndarray:
            self._check_batch(batch)
            return self._logits_numpy(arrays, batch)

        return logits

    def logits_numpy(self, flat: np.ndarray, batch: Batch) -> np.ndarray:
        self._check_batch(batch)
        return self._logits_numpy(self.unflatten_numpy(flat), batch)

    def logits_tf(self, flat, batch: Batch):
        """Same function as logits_numpy; `flat` may be a tf.Variable (gradients flow to it)."""
        self._check_batch(batch)
        return self._logits_tf(self.unflatten_tf(flat), batch)

    def check_features(self, header_or_specs: Any) -> None:
        """Raise FeatureMismatchError listing every feature that differs from the ones this
        network was built for (e.g. a policy trained against another compiler version)."""
        diffs = feature_differences(self.features, as_specs(header_or_specs))
        if diffs:
            raise FeatureMismatchError(
                f"{self.problem} network was built for different features than offered: "
                + "; ".join(diffs))

    def rows(self, batch: Batch, name: str) -> np.ndarray:
        """Feature `name` as [B, num_elements] (numpy)."""
        return np.asarray(batch[name]).reshape(-1, self._spec[name].num_elements)

    def rows_tf(self, batch: Batch, name: str):
        import tensorflow as tf

        return tf.reshape(batch[name], [-1, self._spec[name].num_elements])

    def _check_size(self, n: int) -> None:
        if n != self.num_params:
            raise MlgoError(f"{self.problem} network takes {self.num_params} parameters, got {n}")

    def _check_batch(self, batch: Batch) -> None:
        if not self._names.issubset(batch.keys()):
            missing = [f.name for f in self.features if f.name not in batch]
            raise FeatureMismatchError(
                f"{self.problem} network: observation lacks feature(s) {', '.join(missing)}")

    def to_json(self) -> dict[str, Any]:
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": self.config_json()}


def network_class(path: str) -> type[PolicyNetwork]:
    """The PolicyNetwork subclass named `module:Class` (as written by to_json)."""
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise MlgoError(f"unknown network class {path!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, PolicyNetwork)):
        raise MlgoError(f"{path!r} is not a policy network class")
    return cls


def last_layers_mask(network: Any, layers: int) -> np.ndarray:
    """Boolean mask over a network's flat parameter vector selecting its last `layers` dense
    layers ((w, b) pairs in `param_shapes()` order); `layers <= 0` selects every parameter."""
    shapes = network.param_shapes()
    sizes = [int(np.prod(shape)) for _, shape in shapes]
    mask = np.zeros(sum(sizes), dtype=bool)
    first = 0 if layers <= 0 else max(len(shapes) - 2 * layers, 0)
    mask[sum(sizes[:first]):] = True
    return mask
