"""Imitation from the best, iterated (BC-Max with expert iteration), for inlining and regalloc
eviction (whose searches start from the default-rule and are never guided: mlgo/search.py).

Each round (one iteration of the run):
  1. search  a greedy flip search (mlgo/search.py) on every training module: in round 0 the
             given `--search` directory if there is one (else a fresh search, guided by the
             warm start if any), in later rounds a fresh search guided by the current policy
             ("least sure first"), into OUT/search/round-R (resumable like `mlgo search`);
  2. roll out the current greedy policy on every training module, recording its decisions;
  3. pick    per module the best trajectory of {every round's search result (whose start is
             LLVM's own decisions, so it is never worse than them), the policy's rollout};
             a module no search has a result for yet is left out, and so is a result
             made from other inputs than the module's bitcode and command now (read from
             the result files, mlgo/search_store.py; a given `--search` is checked against
             the corpus before the run directory is written, see pipeline.py);
  4. clone   minibatch cross-entropy on the picked decisions, each weighted by its module's
             gain over -Oz:  w = 1 + gain_weight * max(gain, 0), times flip_weight where a
             search kept a flip (its decision differs from LLVM's: the few sites where the
             gain is, beside hundreds that agree with LLVM), normalized to mean 1,
             continuing from the current parameters (Adam state kept across rounds; the
             learning rate decays linearly to final_lr_fraction of itself within each round);
  5. validate on the validation split and log: gains on the training modules of the best
             search result so far (imitation/search_gain), of the policy before this round's
             cloning (policy_gain) and of the picks (best_gain), where the picks came from,
             loss, agreement, this round's search compiles per second.
The objective is the problem's (.text bytes); with `comdat_aware` the search and the picks use
the COMDAT-weighted size (measure.comdat_objective; weights from the training modules'
default compiles) so nothing is paid for removing COMDAT copies the linker merges anyway.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gin
import numpy as np

from corpus_tools.corpus import Module
from mlgo.checks import check_choice, check_float, check_int
from mlgo.search import FLIPS, GUIDES
from mlgo.training.optim import Adam
from mlgo.training.run import TrainingRun
from mlgo_base.errors import MlgoError

log = logging.getLogger(__name__)


@gin.configurable(module="imitation")
@dataclass
class ImitationConfig:
    rounds: int = 3
    epochs: int = 8  # cloning epochs per round
    batch_size: int = 64  # 0: every picked decision in one batch
    learning_rate: float = 3e-3
    final_lr_fraction: float = 1.0  # the learning rate at the end of each round's cloning
    gain_weight: float = 100.0  # a module 1% better than -Oz weighs 2x one that is not
    # A decision where the search's best differs from LLVM's weighs this many times one that
    # agrees: without it the kept flips (about 6% of double-conversion's 1,089 decisions) are
    # what a small network gets wrong first, and they are where the gain is.
    flip_weight: float = 1.0
    search_passes: int = 1
    search_budget: int = 0  # compiles per module per round (0: no limit)
    search_guide: str = "uncertain"  # how the policy orders a round's flips
    search_flips: str = "all"  # "inlined"/"marginal": only 1 -> 0 flips (mlgo/search.py)
    search_cold_tries: int = 2  # regalloc: flips before a cold function is skipped
    comdat_aware: bool = False

    def __post_init__(self) -> None:
        check_int("imitation.ImitationConfig.rounds", self.rounds, lo=1)
        check_int("imitation.ImitationConfig.epochs", self.epochs, lo=0)
        check_int("imitation.ImitationConfig.batch_size (0: all decisions)", self.batch_size,
                  lo=0)
        check_float("imitation.ImitationConfig.learning_rate", self.learning_rate, lo=0.0)
        check_float("imitation.ImitationConfig.final_lr_fraction", self.final_lr_fraction,
                    lo=0.0, hi=1.0)
        check_float("imitation.ImitationConfig.gain_weight", self.gain_weight, lo=0.0)
        check_float("imitation.ImitationConfig.flip_weight", self.flip_weight, lo=0.0,
                    lo_open=True)
        check_int("imitation.ImitationConfig.search_passes", self.search_passes, lo=1)
        check_int("imitation.ImitationConfig.search_budget (0: no limit)", self.search_budget,
                  lo=0)
        # A guide is always given after round 0, so "none" is not a choice here.
        check_choice("imitation.ImitationConfig.search_guide", self.search_guide,
                     tuple(g for g in GUIDES if g != "none"))
        check_choice("imitation.ImitationConfig.search_flips", self.search_flips, FLIPS)
        check_int("imitation.ImitationConfig.search_cold_tries (0: never skip)",
                  self.search_cold_tries, lo=0)


@dataclass
class Trajectory:
    source: str  # "search", "llvm" (a search that kept no flip) or "policy"
    gain: float  # (default - objective) / default, objective as configured
    features: dict[str, np.ndarray]
    actions: np.ndarray
    llvm: np.ndarray | None = None  # LLVM's own decision at each call site (searches only)

    def flips(self) -> np.ndarray:
        """Where the decision differs from LLVM's own (nowhere known for a policy's rollout)."""
        if self.llvm is None:
            return np.zeros(len(self.actions), dtype=bool)
        return self.actions != self.llvm


def decision_weights(picked: list[Trajectory], gain_weight: float,
                     flip_weight: float) -> np.ndarray:
    """One weight per decision of the picked trajectories, in order, with mean 1: its module's
    1 + gain_weight * max(gain, 0), times flip_weight where it differs from LLVM's own."""
    w = np.concatenate([np.where(t.flips(), flip_weight, 1.0)
                        * (1.0 + gain_weight * max(t.gain, 0.0)) for t in picked])
    return (w / w.mean()).astype(np.float32)


def _search_round(run: TrainingRun, cfg: ImitationConfig, search_pool: Any, out: Path,
                  params: np.ndarray | None, weights: dict[str, float] | None) -> Any:
    """A fresh search on the training modules, guided by `params` when given."""
    from mlgo.search import SearchConfig, search_corpus

    problem = run.problem.name
    guided = params is not None and problem == "inlining"
    config = SearchConfig(cfg.search_passes, cfg.search_budget,
                          cfg.search_guide if guided else "none",
                          cfg.search_flips if problem == "inlining" else "all",
                          cfg.search_cold_tries if problem == "regalloc" else 0)
    guide = run.policy_spec(params, greedy=True) if guided else None
    ident = {"guide_params": hashlib.sha256(np.asarray(params, np.float32).tobytes()).hexdigest()
             if guided else ""}
    return search_corpus(run.train_modules, out, config, search_pool, guide=guide,
                         gin_config=run.gin_config, timeout=run.timeout,
                         comdat_weights=weights, progress=True, identity=ident,
                         problem=problem)


def _search_trajectories(search_dir: Path, modules: Sequence[Module],
                         header: Any) -> dict[str, Trajectory]:
    """The best trajectory of each of `modules` that `search_dir` holds a result for, read from
    its result files (each checked to be that module's, made from its bitcode and command as
    they are now: a stale one is left out with a warning), features as the trace has them."""
    from mlgo.search_store import (
        StaleResult,
        load_result,
        module_fingerprint,
        read_config,
        result_path,
    )

    identity = read_config(search_dir) or {}
    out = {}
    for m in modules:
        path = result_path(search_dir, m.name)
        if not path.is_file():
            continue
        try:
            r = load_result(path, m.name, module_fingerprint(m, identity))
        except StaleResult as e:
            log.warning("%s; left out", e)
            continue
        if r.actions is None or len(r.actions) == 0:
            continue
        steps = len(r.actions)
        feats = {f.name: np.asarray(r.features[f.name]).reshape((steps, *f.shape)).astype(f.dtype)
                 for f in header.features}
        source = "search" if np.any(r.actions != r.default_actions) else "llvm"
        out[m.name] = Trajectory(source, r.reward, feats, np.asarray(r.actions, np.int64),
                                 np.asarray(r.default_actions, np.int64))
    return out


def _policy_gain(o: Any, objective: Any) -> float:
    """The rollout's gain over the default compile, under `objective` (None: .text bytes)."""
    from mlgo.problems.base import Measurement

    if objective is None:
        return o.reward
    pol = objective(Measurement(o.policy_total, {k: p for k, (p, _) in o.per_function.items()}))
    dft = objective(Measurement(o.default_total, {k: d for k, (_, d) in o.per_function.items()}))
    return (dft - pol) / dft if dft > 0 else 0.0


def _total_gain(gains: list[float], defaults: list[float]) -> float:
    """Gain of a set of modules together: each module's gain weighted by its default size."""
    d = sum(defaults)
    return sum(g * w for g, w in zip(gains, defaults, strict=True)) / d if d else 0.0


def train(run: TrainingRun, cfg: ImitationConfig, search_pool: Any,
          first_search: Path | None = None, guide_first: bool = False,
          deadline: float | None = None) -> np.ndarray:
    """`deadline` (time.monotonic()): no round starts after it but this invocation's first, and
    cloning stops after the epoch that ends past it, keeping that epoch's parameters (the
    round's metrics say how many epochs ran)."""
    import time

    import tensorflow as tf

    from mlgo.compiler.measure import comdat_objective

    net = run.network
    header = run.problem.header()
    theta = tf.Variable(run.params.astype(np.float32))
    adam = Adam(int(theta.shape[0]), cfg.learning_rate)
    if run.resumed is not None and "adam_m" in run.resumed.arrays:
        adam.load(run.resumed.arrays)
    weights = None
    if cfg.comdat_aware:
        from mlgo.search import default_comdat_weights

        weights = default_comdat_weights(run.train_modules, run.pool, run.gin_config, run.timeout)
    objective = comdat_objective(weights) if weights else None

    @tf.function  # traced once per batch shape: eager steps cost more than the arithmetic
    def step(batch: dict[str, Any], labels: Any, w: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=net.logits_tf(theta, batch))
            loss = tf.reduce_sum(ce * w) / tf.reduce_sum(w)
        return tape.gradient(loss, theta), loss

    def search_dir(r: int) -> Path:
        return first_search if (r == 0 and first_search) else run.output / "search" / f"round-{r}"

    for rnd in run.iterations(cfg.rounds):
        if deadline is not None and rnd > run.start_iteration and time.monotonic() >= deadline:
            log.warning("imitation: the deadline came before round %d; stopping", rnd)
            break
        params = theta.numpy()
        # 1. this round's search (earlier rounds' results are on disk and kept below)
        if rnd == 0 and first_search:
            summary = None
        else:
            guide = params if (rnd > 0 or guide_first) else None
            summary = _search_round(run, cfg, search_pool, search_dir(rnd), guide, weights)
        best: dict[str, Trajectory] = {}
        for r in range(rnd + 1):
            for m, t in _search_trajectories(search_dir(r), run.train_modules, header).items():
                if m not in best or t.gain > best[m].gain:
                    best[m] = t
        if not best:
            raise MlgoError(f"{search_dir(rnd)}: no search result for any training module")
        search_gain = {m: t.gain for m, t in best.items()}
        # 2. the current policy on the same modules
        spec = run.policy_spec(params, greedy=True)
        outs = run.run_tasks([run.task(m, spec, record=True) for m in run.train_modules
                              if m.name in best])
        policy_gain: dict[str, float] = {}
        defaults: dict[str, float] = {}
        for o in outs:
            if not o.ok:
                continue
            defaults[o.module] = o.default_total
            policy_gain[o.module] = _policy_gain(o, objective)
            if o.actions is not None and policy_gain[o.module] > best[o.module].gain:
                best[o.module] = Trajectory("policy", policy_gain[o.module], o.features, o.actions)
        # 3. the picked decisions, weighted by their module's gain
        picked = [m for m in sorted(best) if m in defaults and len(best[m].actions)]
        if not picked:
            raise MlgoError("no training module has both a search result and a rollout of the "
                            "policy (see the warnings above)")
        feats = {k: np.concatenate([best[m].features[k] for m in picked])
                 for k in best[picked[0]].features}
        labels = np.concatenate([best[m].actions for m in picked]).astype(np.int64)
        flips = np.concatenate([best[m].flips() for m in picked])
        w = decision_weights([best[m] for m in picked], cfg.gain_weight, cfg.flip_weight)
        # 4. clone
        n = len(labels)
        size = cfg.batch_size or n
        steps = cfg.epochs * -(-n // size)
        losses = []
        epochs_run = 0
        for epoch in range(cfg.epochs):
            if epochs_run and deadline is not None and time.monotonic() >= deadline:
                break
            order = np.random.default_rng([run.seed, rnd, epoch, 13]).permutation(n)
            for start in range(0, n, size):
                idx = order[start:start + size]
                progress = len(losses) / max(steps - 1, 1)
                adam.lr = cfg.learning_rate * (1.0 - (1.0 - cfg.final_lr_fraction) * progress)
                grad, loss = step({k: tf.constant(v[idx]) for k, v in feats.items()},
                                  tf.constant(labels[idx]), tf.constant(w[idx]))
                theta.assign_add(adam.step(grad.numpy()).astype(np.float32))
                losses.append(float(loss))
            epochs_run += 1
        new = theta.numpy()
        pred = np.argmax(net.logits_numpy(new, feats), axis=-1)
        # 5. figures
        dflt = [defaults[m] for m in picked]
        metrics = {
            "imitation/loss": float(np.mean(losses)) if losses else 0.0,
            "imitation/agreement_train": float(np.mean(pred == labels)),
            "imitation/flips": int(flips.sum()),
            "imitation/decisions": n,
            "imitation/modules": len(picked),
            "imitation/epochs": epochs_run,
            "imitation/stopped_by_deadline": int(epochs_run < cfg.epochs),
            "imitation/search_gain": _total_gain([search_gain[m] for m in picked], dflt),
            "imitation/policy_gain": _total_gain([policy_gain[m] for m in picked], dflt),
            "imitation/best_gain": _total_gain([best[m].gain for m in picked], dflt),
            **{f"imitation/from_{s}": sum(best[m].source == s for m in picked)
               for s in ("search", "llvm", "policy")},
        }
        if flips.any():  # agreement on the search's kept flips alone
            metrics["imitation/agreement_flips"] = float(np.mean(pred[flips] == labels[flips]))
        if summary is not None:
            metrics["search/compiles"] = summary.compiles
            metrics["search/compiles_per_second"] = summary.compiles_per_second
            metrics["search/failed"] = len(summary.failed)
        run.end_iteration(rnd, new, adam.state(), metrics, run.validate(new))
    return theta.numpy()
