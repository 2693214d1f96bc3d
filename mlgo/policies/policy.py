"""Where decisions come from: the seam between the compiler host and any policy runtime.

Like LLVM's MLModelRunner, a Policy takes one observation (feature name -> array of the
header's shape) and returns the advice. Everything else (numpy weights, a SavedModel, a
future AOT-compiled model or compiler plugin) hides behind these two calls:

    act(obs) -> int                          the decision to send to the compiler
    act_sample(obs, rng) -> (int, logprob)   for on-policy training (PPO); policies that can
                                             only decide greedily (AOT code) do not offer it
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from mlgo.policies.network import PolicyNetwork
from mlgo.protocol import FeatureValues
from mlgo_base.errors import MlgoError


class Policy(ABC):
    @abstractmethod
    def act(self, obs: FeatureValues) -> int:
        """The advice for one observation."""

    def act_sample(self, obs: FeatureValues, rng: np.random.Generator) -> tuple[int, float]:
        """A sampled action and its log-probability (stochastic policies only)."""
        raise MlgoError(f"{type(self).__name__} only makes greedy decisions; it cannot sample")


def sample_from_logits(logits: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
    """Inverse-CDF sampling from softmax(logits) in float64. Zero-probability actions (masked
    ones) are never drawn: u < cdf[-1] and side='right' skips flat steps of the CDF."""
    z = np.asarray(logits, dtype=np.float64) - np.max(logits)
    logp = z - np.log(np.sum(np.exp(z)))
    cdf = np.cumsum(np.exp(logp))
    a = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    a = min(a, len(cdf) - 1)
    return a, float(logp[a])


class LogitsPolicy(Policy):
    """A policy that can show its logits over the actions; acting follows from them."""

    @abstractmethod
    def logits(self, obs: FeatureValues) -> np.ndarray:
        """[num_actions] logits for one observation (invalid actions very negative)."""

    def act(self, obs: FeatureValues) -> int:
        return int(np.argmax(self.logits(obs)))

    def act_sample(self, obs: FeatureValues, rng: np.random.Generator) -> tuple[int, float]:
        return sample_from_logits(self.logits(obs), rng)


class NumpyPolicy(LogitsPolicy):
    """A network evaluated in numpy on a flat parameter vector (what workers run). With
    greedy=False, `act` samples from its own generator seeded by `seed`."""

    def __init__(self, network: PolicyNetwork, flat_params: np.ndarray, greedy: bool = True,
                 seed: int = 0) -> None:
        self.network = network
        self._logits = network.bind_numpy(flat_params)  # parameters cut once, not per decision
        self.greedy = greedy
        self._rng = np.random.default_rng(seed)

    def logits(self, obs: FeatureValues) -> np.ndarray:
        return self._logits(obs)[0]

    def act(self, obs: FeatureValues) -> int:
        if self.greedy:
            return super().act(obs)
        return self.act_sample(obs, self._rng)[0]


class SavedModelPolicy(LogitsPolicy):
    """An exported SavedModel (mlgo/policies/saved_model.py) called through its signatures:
    `action` for decisions (exactly what an LLVM release build would run) and `logits` for
    sampling. Imports TensorFlow: for parity tests and export checks, not for workers."""

    def __init__(self, saved_model_dir: Path | str) -> None:
        import tensorflow as tf

        self._tf = tf
        self.path = Path(saved_model_dir)
        try:
            self._model = tf.saved_model.load(str(self.path))
        except (OSError, ValueError) as e:
            raise MlgoError(f"{self.path}: not a loadable SavedModel ({e})") from e
        self._action = self._model.signatures["action"]
        self._logits = self._model.signatures.get("logits")
        _, kwargs = self._action.structured_input_signature
        self.inputs = dict(kwargs)  # name -> tf.TensorSpec (the header's dtype and shape)
        (self.output_name,) = self._action.structured_outputs

    def _feed(self, obs: FeatureValues) -> dict:
        missing = [n for n in self.inputs if n not in obs]
        if missing:
            raise MlgoError(f"{self.path}: observation lacks input(s) {', '.join(missing)}")
        return {n: self._tf.constant(np.asarray(obs[n]).reshape(s.shape).astype(s.dtype.as_numpy_dtype))
                for n, s in self.inputs.items()}

    def act(self, obs: FeatureValues) -> int:
        out = self._action(**self._feed(obs))[self.output_name]
        return int(out.numpy().reshape(-1)[0])

    def logits(self, obs: FeatureValues) -> np.ndarray:
        if self._logits is None:
            raise MlgoError(f"{self.path}: the SavedModel has no 'logits' signature")
        return self._logits(**self._feed(obs))["logits"].numpy().reshape(-1)
