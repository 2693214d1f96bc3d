"""Evolution strategies on the flat parameter vector.

Each iteration:
  1. draw P Gaussian directions e_i and compile a sample of M training modules with the greedy
     policy at theta + sigma*e_i and at theta - sigma*e_i (antithetic pairs: 2*P*M compiles);
  2. fitness F of a candidate = mean reward over the modules every candidate compiled
     (reward = (default - policy) / default, so F > 0 beats the default heuristic);
  3. normalize fitness across the 2P candidates (centered ranks, or z-scores);
  4. optionally keep only the top-k pairs by max(F+, F-);
  5. gradient estimate  g = sum_i (w+_i - w-_i) e_i / (2 k sigma);  ascend with Adam or SGD.
Only numpy runs in workers: a candidate is just a parameter vector sent with the task.

With `trainable_layers = k > 0` the directions e_i live in the subspace of the network's last k
layers only (the rest stays at its warm-start values). The estimate's expected alignment with
the true gradient grows like sqrt(P / dim): with a few directions per iteration, searching the
~130 output-layer parameters of a behavioral-cloning warm start is far less noisy than
searching all ~12k of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import gin
import numpy as np

from mlgo.checks import check_choice, check_float, check_int
from mlgo.policies.network import last_layers_mask
from mlgo.training.optim import Adam
from mlgo.training.run import TrainingRun


@gin.configurable(module="es")
@dataclass
class ESConfig:
    iterations: int = 20
    directions: int = 6  # P antithetic pairs per iteration
    modules_per_iteration: int = 12
    sigma: float = 0.02
    learning_rate: float = 0.01
    top_k: int = 0  # 0: use every direction
    normalization: str = "rank"  # "rank" or "zscore"
    optimizer: str = "adam"  # "adam" or "sgd"
    validate_every: int = 1
    trainable_layers: int = 0  # 0: perturb every parameter; k: only the network's last k layers

    def __post_init__(self) -> None:
        # Refused here, before any compile: sigma = 0 divides by zero (NaN weights),
        # validate_every = 0 by zero, and a non-positive count makes a run that trains nothing.
        check_int("es.ESConfig.iterations", self.iterations, lo=1)
        check_int("es.ESConfig.directions", self.directions, lo=1)
        check_int("es.ESConfig.modules_per_iteration (0: all)", self.modules_per_iteration, lo=0)
        check_float("es.ESConfig.sigma", self.sigma, lo=0.0, lo_open=True)
        check_float("es.ESConfig.learning_rate", self.learning_rate, lo=0.0)
        check_int("es.ESConfig.top_k (0: every direction)", self.top_k, lo=0)
        check_choice("es.ESConfig.normalization", self.normalization, ("rank", "zscore"))
        check_choice("es.ESConfig.optimizer", self.optimizer, ("adam", "sgd"))
        check_int("es.ESConfig.validate_every", self.validate_every, lo=1)
        check_int("es.ESConfig.trainable_layers (0: all)", self.trainable_layers, lo=0)


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5]; ties share their mean rank. Robust to outlier modules."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average ties
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks / max(len(x) - 1, 1) - 0.5


def zscores(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def es_gradient(eps: np.ndarray, f_plus: np.ndarray, f_minus: np.ndarray, sigma: float,
                normalization: str = "rank", top_k: int = 0) -> np.ndarray:
    """The ascent direction from antithetic fitness values (see the module docstring)."""
    norm = centered_ranks if normalization == "rank" else zscores
    w = norm(np.concatenate([f_plus, f_minus]))
    w_plus, w_minus = w[: len(f_plus)], w[len(f_plus):]
    keep = np.arange(len(f_plus))
    if 0 < top_k < len(f_plus):
        keep = np.argsort(-np.maximum(f_plus, f_minus), kind="stable")[:top_k]
    return ((w_plus[keep] - w_minus[keep]) @ eps[keep]) / (2 * len(keep) * sigma)


def train(run: TrainingRun, cfg: ESConfig) -> np.ndarray:
    theta = run.params.astype(np.float64)
    mask = last_layers_mask(run.network, cfg.trainable_layers)
    adam = Adam(theta.size, cfg.learning_rate)
    if run.resumed is not None and "adam_m" in run.resumed.arrays:
        adam.load(run.resumed.arrays)

    for it in run.iterations(cfg.iterations):
        rng = np.random.default_rng([run.seed, it, 7])
        eps = np.zeros((cfg.directions, theta.size))
        eps[:, mask] = rng.standard_normal((cfg.directions, int(mask.sum())))
        modules = run.sample_modules(cfg.modules_per_iteration, it)
        candidates = [theta + cfg.sigma * e for e in eps] + [theta - cfg.sigma * e for e in eps]
        tasks = [run.task(m, run.policy_spec(c, greedy=True), record=False)
                 for c in candidates for m in modules]
        tasks = [_tagged(t, i // len(modules)) for i, t in enumerate(tasks)]
        outs = run.run_tasks(tasks)

        # Compare candidates on the same modules: drop a module if any candidate failed on it.
        bad = {o.module for o in outs if not o.ok}
        reward = np.zeros((len(candidates), len(modules)))
        col = {m.name: j for j, m in enumerate(modules)}
        for o in outs:
            if o.ok and o.module not in bad:
                reward[o.tag, col[o.module]] = o.reward
        usable = [col[m.name] for m in modules if m.name not in bad]
        if not usable:
            run.skip_iteration(it, {"es/usable_modules": 0})
            continue
        fitness = reward[:, usable].mean(axis=1)
        f_plus, f_minus = fitness[: cfg.directions], fitness[cfg.directions:]

        grad = es_gradient(eps, f_plus, f_minus, cfg.sigma, cfg.normalization, cfg.top_k)
        if cfg.optimizer == "adam":
            theta = theta + adam.step(-grad)  # Adam minimizes: step on the negated ascent
        else:
            theta = theta + cfg.learning_rate * grad

        val = run.validate(theta) if (it + 1) % cfg.validate_every == 0 else None
        metrics = {
            "reward/mean": float(fitness.mean()), "reward/max": float(fitness.max()),
            "reward/min": float(fitness.min()),
            "reward/p50": float(np.percentile(fitness, 50)),
            "es/usable_modules": len(usable), "es/grad_norm": float(np.linalg.norm(grad)),
            "es/param_norm": float(np.linalg.norm(theta)), "es/dimensions": int(mask.sum()),
        }
        run.end_iteration(it, theta.astype(np.float32), adam.state(), metrics, val)
    return theta.astype(np.float32)


def _tagged(task, tag: int):
    from dataclasses import replace

    return replace(task, tag=tag)
