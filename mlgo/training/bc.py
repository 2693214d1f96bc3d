"""Behavioral cloning: fit the network to the default heuristic's decisions from a trace, as
a warm start for PPO or ES.

  data   every recorded decision (features s, default-proxy label y) of the training modules
  loss   cross-entropy  -log pi(y | s), minibatch Adam; the learning rate falls linearly from
         lr to lr * final_lr_fraction over the run, so the last epoch (the policy that is
         kept and warm-starts PPO/ES) is not one noisy full-size step away from a good one
  report agreement (fraction of decisions where argmax pi = y) on training and held-out
         modules, and finally the compiled objective on the validation modules vs the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gin
import numpy as np

from mlgo.checks import check_float, check_int
from mlgo.training.optim import Adam
from mlgo.training.run import TrainingRun
from mlgo_base.errors import MlgoError


@gin.configurable(module="bc")
@dataclass
class BCConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    final_lr_fraction: float = 0.05  # the learning rate at the end, as a fraction of the start
    validate_every: int = 0  # compile the validation modules every N epochs (0: last epoch only)

    def __post_init__(self) -> None:
        check_int("bc.BCConfig.epochs", self.epochs, lo=1)
        check_int("bc.BCConfig.batch_size", self.batch_size, lo=1)
        check_float("bc.BCConfig.learning_rate", self.learning_rate, lo=0.0)
        check_float("bc.BCConfig.final_lr_fraction", self.final_lr_fraction, lo=0.0, hi=1.0)
        check_int("bc.BCConfig.validate_every (0: last epoch only)", self.validate_every, lo=0)


def learning_rate(cfg: BCConfig, progress: float) -> float:
    """Linear decay: cfg.learning_rate at progress 0, cfg.final_lr_fraction of it at 1."""
    return cfg.learning_rate * (1.0 - (1.0 - cfg.final_lr_fraction) * min(max(progress, 0.0), 1.0))


def load_decisions(trace_dir: Path, modules: set[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features [N, ...] and default-proxy labels [N] of the given modules' decisions."""
    from mlgo.traces import read_trace

    feats: dict[str, list[np.ndarray]] = {}
    labels = []
    for t in read_trace(trace_dir):
        if t.module not in modules:
            continue
        for k, v in t.features.items():
            feats.setdefault(k, []).append(v)
        labels.append(t.default_actions)
    if not labels:
        return {}, np.zeros(0, dtype=np.int64)
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels).astype(np.int64)


def agreement(net, params: np.ndarray, feats: dict[str, np.ndarray], labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    pred = np.argmax(net.logits_numpy(params, feats), axis=-1)
    return float(np.mean(pred == labels))


def train(run: TrainingRun, cfg: BCConfig, trace_dir: Path) -> np.ndarray:
    import tensorflow as tf

    net = run.network
    train_x, train_y = load_decisions(trace_dir, {m.name for m in run.train_modules})
    held_x, held_y = load_decisions(trace_dir, {m.name for m in run.val_modules})
    if len(train_y) == 0:
        raise MlgoError(f"{trace_dir}: no decisions of the training modules in this trace")
    theta = tf.Variable(run.params.astype(np.float32))
    adam = Adam(int(theta.shape[0]), cfg.learning_rate)
    if run.resumed is not None and "adam_m" in run.resumed.arrays:
        adam.load(run.resumed.arrays)

    n = len(train_y)
    for epoch in run.iterations(cfg.epochs):
        rng = np.random.default_rng([run.seed, epoch, 11])
        order = rng.permutation(n)
        losses = []
        for start in range(0, n, cfg.batch_size):
            adam.lr = learning_rate(cfg, (epoch + start / n) / max(cfg.epochs - 1, 1))
            idx = order[start:start + cfg.batch_size]
            batch = {k: v[idx] for k, v in train_x.items()}
            with tf.GradientTape() as tape:
                logits = net.logits_tf(theta, batch)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=train_y[idx], logits=logits))
            grad = tape.gradient(loss, theta)
            theta.assign_add(adam.step(grad.numpy()).astype(np.float32))
            losses.append(float(loss))
        params = theta.numpy()
        last = epoch == cfg.epochs - 1
        compile_now = last or (cfg.validate_every and (epoch + 1) % cfg.validate_every == 0)
        val = run.validate(params) if compile_now else None
        metrics = {
            "bc/loss": float(np.mean(losses)),
            "bc/agreement_train": agreement(net, params, train_x, train_y),
            "bc/decisions": n,
        }
        if len(held_y):
            metrics["bc/agreement_heldout"] = agreement(net, params, held_x, held_y)
        run.end_iteration(epoch, params, adam.state(), metrics, val)
    return theta.numpy()
