"""The network seam: a policy is a function (flat parameter vector, observations) -> logits.

A flat float vector is the one currency every algorithm shares: ES perturbs it, PPO and BC
differentiate it with TensorFlow, workers evaluate it with numpy, checkpoints store it as
`params.npy`. A network only says how to cut that vector into named arrays
(`param_shapes`) and composes its logits and decision from the operations of
mlgo/policies/ops.py (`build_graph`), which run in numpy, TensorFlow and C alike:

    logits_numpy(flat, batch) -> np.ndarray [B, num_actions]   (workers: no TensorFlow)
    logits_tf(flat, batch)    -> tf.Tensor  [B, num_actions]   (training and export)

Invalid actions get INVALID_LOGIT, a large finite negative number: softmax gives them
probability exactly 0 in float32, and unlike -inf it keeps log-probabilities and their
gradients finite.

A batch maps feature name -> array [B, *spec.shape] (a single observation of shape
spec.shape also works: B = 1). Networks are built from the compiler header's feature specs
(never a hard-coded list) and keep them; features are read by name, so a later header only
has to offer them (see `feature_differences`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlgo.policies.ops import Graph, run_numpy, run_tf
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
    """Why a policy reading `expected` cannot bind to a compiler offering `actual`, one line per
    input. Inputs bind by name, as in the inliner plugin and mlgo-clang
    (mlgo/serving/policy_binding.h) and LLVM's release-mode model runner: an input not offered, or offered with another type or
    shape, is a difference; features offered beyond the inputs are not."""
    have = {s.name: s for s in actual}
    diffs = []
    for w in expected:
        h = have.get(w.name)
        if h is None:
            diffs.append(f"missing {w.name} ({w.type} {list(w.shape)})")
        elif (w.type, w.shape) != (h.type, h.shape):
            diffs.append(f"{w.name}: expected {w.type} {list(w.shape)}, got {h.type} {list(h.shape)}")
    return diffs


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

    def output_param(self, kind: str) -> str:
        """The name of the output layer's weights (`kind` "w") or bias ("b")."""
        return f"{self.prefix}/{len(self.sizes) - 2}/{kind}"

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

    def build(self, graph: Graph, x: int) -> int:
        """The layers as graph operations on the value `x` (each row of x goes through alone)."""
        last = len(self.sizes) - 2
        for i, n_out in enumerate(self.sizes[1:]):
            x = graph.dense(x, f"{self.prefix}/{i}/w", f"{self.prefix}/{i}/b", n_out)
            if i < last and self.activation != "linear":
                x = graph.apply(self.activation, x)
        return x


class PolicyNetwork(ABC):
    """Base of every problem's network: an MLP (`self.mlp`) inside a graph of operations, with
    hyperparameters `self.config` (a dataclass of type `config_class`). Subclasses set the
    class variables, `self.mlp` and `self.config`, define `num_actions` and `build_graph`, and
    take (features, config, vocab, advice) in their constructor so a checkpoint can rebuild
    them."""

    problem: ClassVar[str]
    advice_name: ClassVar[str]
    config_class: ClassVar[Any]
    mlp: MLP
    config: Any

    def __init__(self, features: Sequence[TensorSpec] | Any, advice: TensorSpec | None = None) -> None:
        self.features: tuple[TensorSpec, ...] = as_specs(features)
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise FeatureMismatchError(f"{self.problem}: duplicate feature names in {names}")
        self.advice = advice or TensorSpec(self.advice_name, "int64_t", (1,))
        self._spec = {f.name: f for f in self.features}

    @property
    @abstractmethod
    def num_actions(self) -> int: ...

    @abstractmethod
    def build_graph(self) -> Graph:
        """The network as operations (mlgo/policies/ops.py) on the features it reads: outputs
        `logits` ([1, num_actions] or [num_actions, 1]) and the greedy decision (their first
        argmax) under `self.advice.name`."""

    def param_shapes(self) -> ParamShapes:
        """Ordered (name, shape) pairs: the layout of the flat vector."""
        return self.mlp.param_shapes()

    def config_json(self) -> dict[str, Any]:
        """The network's hyperparameters as JSON (the constructor's `config` rebuilt from it)."""
        return dataclasses.asdict(self.config)

    @classmethod
    def from_json(cls, features: Sequence[TensorSpec], config: Mapping[str, Any],
                  vocab: Mapping[str, np.ndarray], advice: TensorSpec | None) -> PolicyNetwork:
        """Rebuild from `config_json()`'s output (as checkpoints do). Every field is passed,
        from the JSON or the dataclass's default, so gin bindings never override a checkpoint."""
        fields = dataclasses.fields(cls.config_class)
        kwargs = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        kwargs.update({f.name: tuple(config[f.name]) if isinstance(config[f.name], list)
                       else config[f.name] for f in fields if f.name in config})
        return cls(features, cls.config_class(**kwargs), vocab, advice)

    @property
    def vocab(self) -> dict[str, np.ndarray]:
        """Feature boundaries the network depends on (saved with the policy); none by default."""
        return {}

    # -- shared machinery ----------------------------------------------------------------------
    @functools.cached_property
    def graph(self) -> Graph:
        return self.build_graph()

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

    def param_offset(self, name: str) -> int:
        """Where the array `name` starts in the flat parameter vector."""
        (start,) = [a for n, _, a, _ in self._layout if n == name]
        return start

    def init_arrays(self, seed: int = 0) -> dict[str, np.ndarray]:
        """A fresh network's parameters by name (a subclass adjusts or adds arrays here)."""
        return self.mlp.init(np.random.default_rng(seed), self.config.output_scale)

    def init_params(self, seed: int = 0) -> np.ndarray:
        arrays = self.init_arrays(seed)
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
        arrays = {k: v.astype(np.float64) for k, v in self.unflatten_numpy(flat).items()}

        def logits(batch: Batch) -> np.ndarray:
            self._check_batch(batch)
            return self._logits(run_numpy(self.graph, batch, arrays, ("logits",))["logits"])

        return logits

    def logits_numpy(self, flat: np.ndarray, batch: Batch) -> np.ndarray:
        return self.bind_numpy(flat)(batch)

    def logits_tf(self, flat, batch: Batch):
        """Same function as logits_numpy; `flat` may be a tf.Variable (gradients flow to it)."""
        import tensorflow as tf

        self._check_batch(batch)
        logits = run_tf(self.graph, batch, self.unflatten_tf(flat))["logits"]
        return tf.reshape(logits, [-1, self.num_actions])

    def _logits(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(len(values), self.num_actions)

    def check_features(self, header_or_specs: Any) -> None:
        """Raise FeatureMismatchError listing every feature that differs from the ones this
        network was built for (e.g. a policy trained against another compiler version)."""
        read = [f for f in self.features if f.name in self.graph.input_index]
        diffs = feature_differences(read, as_specs(header_or_specs))
        if diffs:
            raise FeatureMismatchError(
                f"{self.problem} network reads features the compiler does not offer so: "
                + "; ".join(diffs))

    def _check_size(self, n: int) -> None:
        if n != self.num_params:
            raise MlgoError(f"{self.problem} network takes {self.num_params} parameters, got {n}")

    def _check_batch(self, batch: Batch) -> None:
        if not all(i.name in batch for i in self.graph.inputs):
            missing = [i.name for i in self.graph.inputs if i.name not in batch]
            raise FeatureMismatchError(
                f"{self.problem} network: observation lacks feature(s) {', '.join(missing)}")

    def flip_margin_position(self) -> int | None:
        """A residual network's position in the flat vector of the scalar by which LLVM's rule
        leads the learned part (inlining's keep bias, regalloc's anchor); None if the network
        is not residual."""
        return None

    def with_flip_margin(self, flat: np.ndarray, margin: float) -> np.ndarray:
        """A residual policy's parameters with the rule's lead raised by `margin`: it then
        leaves the rule only where the network prefers another action by more than `margin`
        (a confidence threshold; `margin` may be negative)."""
        at = self.flip_margin_position()
        if at is None:
            raise MlgoError(f"a flip margin applies to a residual {self.problem} network only "
                            f"({self.problem}.{self.config_class.__name__}.residual)")
        out = np.array(flat, dtype=np.float32, copy=True).reshape(-1)
        self._check_size(out.shape[0])
        out[at] += np.float32(margin)
        return out

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
