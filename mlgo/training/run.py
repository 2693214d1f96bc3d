"""What every training algorithm shares: the output directory, the train/validation split,
the worker pool, checkpoints and resume, TensorBoard summaries, progress, and keeping the
best policy on the validation split.

    OUT/split.json         train and validation module names (fixed for the run's lifetime)
    OUT/structure/         the network (policy dir format) workers rebuild it from
    OUT/checkpoints/       see checkpoint.py
    OUT/policy/            the newest policy        OUT/best/   the best on validation
    OUT/tensorboard/       summaries                OUT/log.jsonl  one line of metrics per iteration
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import Corpus, Module, split_by_project, split_named_projects
from mlgo.training.checkpoint import Checkpoint, Checkpointer
from mlgo.workers.pool import WorkerPool
from mlgo.workers.tasks import ModuleOutcome, ModuleTask, PolicySpec
from mlgo_base.change import relative_change
from mlgo_base.errors import MlgoError, summary_line, writing
from mlgo_base.files import atomic_write_text, directory_lock

log = logging.getLogger(__name__)
LOCK = ".lock"


@dataclass
class Validation:
    policy_total: float
    default_total: float
    modules: int
    failed: int

    @property
    def relative_change(self) -> float:
        """The policy's change (mlgo_base/change.py): negative is better."""
        return relative_change(self.default_total, self.policy_total)


def named_split(corpus: Corpus, validation_projects: Collection[str] | None
                ) -> dict[str, list[str]] | None:
    """The split.json that --validation-projects asks for (None without the flag)."""
    if validation_projects is None:
        return None
    train, validation = split_named_projects(corpus, validation_projects)
    return {"train": train, "validation": validation}


def check_split_matches(path: Path, split: Any, wanted: dict[str, list[str]] | None,
                        validation_projects: Collection[str] | None) -> None:
    """Refuse a run's existing split that is not the one --validation-projects asks for: the
    run's policies and best-so-far were chosen on the old validation modules."""
    if wanted is None or split == wanted:
        return
    held = split.get("validation", []) if isinstance(split, dict) else []
    raise MlgoError(f"{path}: this run validates on {len(held)} module(s), not the "
                    f"{len(wanted['validation'])} of --validation-projects "
                    f"{','.join(validation_projects or ())}; use a new -o directory (or drop the "
                    "flag to keep this run's split)")


class TrainingRun:
    def __init__(
        self,
        *,
        problem: Any,
        corpus: Corpus,
        output: Path,
        pool: WorkerPool,
        network: Any,
        params: np.ndarray,
        algorithm: str,
        gin_config: str = "",
        timeout: float = 300.0,
        validation_fraction: float = 0.2,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
        validation_projects: Collection[str] | None = None,
    ) -> None:
        from mlgo.policies.policy_dir import save_policy

        self.problem = problem
        self.corpus = corpus
        self.output = Path(output)
        self.pool = pool
        self.network = network
        self.algorithm = algorithm
        self.gin_config = gin_config
        self.timeout = timeout
        self.seed = seed
        self.meta = dict(meta or {})
        self.output.mkdir(parents=True, exist_ok=True)
        self.train_modules, self.val_modules = self._split(validation_fraction,
                                                           validation_projects)
        self.structure_dir = self.output / "structure"
        if not (self.structure_dir / "policy.json").is_file():
            save_policy(self.structure_dir, network, params, self._policy_meta({}))
        self.checkpointer = Checkpointer(self.output)
        self.resumed: Checkpoint | None = self.checkpointer.load_latest()
        self.params = self.resumed.arrays["params"] if self.resumed else np.asarray(params)
        self.start_iteration = self.resumed.iteration + 1 if self.resumed else 0
        self.state: dict[str, Any] = dict(self.resumed.state) if self.resumed else {}
        self.best: float | None = self.state.get("best_relative_change")
        self._writer = None
        self._skipped: dict[str, str] = {}  # this iteration's failed modules, reported at its end
        # This invocation's iterations: those that ended with a policy, and those with nothing
        # to learn from (every module failed), so the command can tell success from nothing.
        self.trained_iterations = 0
        self.empty_iterations: list[int] = []
        if self.resumed:
            log.info("resuming %s from iteration %d (%s)", algorithm, self.resumed.iteration,
                     self.checkpointer.dir)

    # -- data ---------------------------------------------------------------------------------
    def _split(self, fraction: float, validation_projects: Collection[str] | None = None
               ) -> tuple[list[Module], list[Module]]:
        path = self.output / "split.json"
        by_name = {m.name: m for m in self.corpus.modules}
        wanted = named_split(self.corpus, validation_projects)
        if path.is_file():
            split = json.loads(path.read_text())
            check_split_matches(path, split, wanted, validation_projects)
            missing = [n for n in split["train"] + split["validation"] if n not in by_name]
            if missing:
                raise MlgoError(f"{path}: {len(missing)} module(s) of this run's split are not in "
                                f"the corpus {self.corpus.root}, e.g. {missing[:3]}")
        elif wanted is not None:
            split = wanted
            atomic_write_text(path, json.dumps(split, indent=1) + "\n")
        else:
            train, val = split_by_project(self.corpus, fraction, self.seed)
            split = {"train": list(train), "validation": list(val)}
            atomic_write_text(path, json.dumps(split, indent=1) + "\n")
        train = [by_name[n] for n in split["train"]]
        val = [by_name[n] for n in split["validation"]]
        if not train:
            raise MlgoError(f"{self.corpus.root}: no training modules after the split")
        return train, val

    def sample_modules(self, n: int, iteration: int) -> list[Module]:
        """n training modules, a different deterministic sample each iteration."""
        rng = np.random.default_rng([self.seed, iteration])
        if n <= 0 or n >= len(self.train_modules):
            return list(self.train_modules)
        idx = rng.choice(len(self.train_modules), size=n, replace=False)
        return [self.train_modules[i] for i in sorted(idx)]

    # -- rollouts -----------------------------------------------------------------------------
    def policy_spec(self, params: np.ndarray, greedy: bool, seed: int = 0) -> PolicySpec:
        return PolicySpec(policy_dir=str(self.structure_dir.resolve()),
                          params=np.asarray(params, dtype=np.float32), greedy=greedy, seed=seed)

    def run_tasks(self, tasks: Sequence[ModuleTask]) -> list[ModuleOutcome]:
        outs = list(self.pool.run(tasks))
        self.state.setdefault("failed_modules", {})
        for o in outs:
            if not o.ok:
                first = summary_line(o.error, o.module)
                log.debug("skipped %s: %s", o.module, first)
                self._skipped[o.module] = first
                self.state["failed_modules"][o.module] = first
        return outs

    def task(self, module: Module, spec: PolicySpec, record: bool) -> ModuleTask:
        return ModuleTask(self.problem.name, module, spec, record=record,
                          gin_config=self.gin_config, timeout=self.timeout)

    def validate(self, params: np.ndarray) -> Validation | None:
        if not self.val_modules:
            return None
        spec = self.policy_spec(params, greedy=True)
        outs = self.run_tasks([self.task(m, spec, False) for m in self.val_modules])
        ok = [o for o in outs if o.ok]
        if not ok:
            # 0 of 0 is not "as good as the default": no validation result at all.
            log.warning("validation: all %d module(s) failed; no validation result this "
                        "iteration", len(outs))
            return None
        # As linking keeps each project: a COMDAT text group once (mlgo/evaluate.py), so the
        # best policy and the export gate never count removed copies the linker merges anyway.
        from mlgo.evaluate import comdat_pairs, linked_totals

        project = {m.name: m.project for m in self.val_modules}
        linked = linked_totals({"module": o.module, "project": project[o.module],
                                "policy": o.policy_total, "default": o.default_total,
                                "comdat": comdat_pairs(o)} for o in ok).values()
        return Validation(sum(p["policy"] for p in linked), sum(p["default"] for p in linked),
                          len(ok), len(outs) - len(ok))

    # -- bookkeeping --------------------------------------------------------------------------
    def iterations(self, total: int) -> Iterator[int]:
        """Iteration numbers still to run (after a resume, from the next one), with progress."""
        from tqdm import tqdm

        its = range(self.start_iteration, total)
        with tqdm(its, total=total, initial=self.start_iteration, desc=self.algorithm,
                  unit="it", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
            for it in bar:
                self._t0 = time.monotonic()
                yield it
                # After the iteration's body, however it ended (an algorithm may skip to the
                # next iteration when every module failed), so no failure goes unreported.
                self._report_skipped(it)

    def _summary_writer(self):
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.output / "tensorboard"))
        return self._writer

    def log_metrics(self, iteration: int, metrics: dict[str, float]) -> None:
        import tensorflow as tf

        with writing(self.output / "tensorboard"):
            with self._summary_writer().as_default(step=iteration):
                for k, v in metrics.items():
                    tf.summary.scalar(k, float(v))
            self._summary_writer().flush()
        line = json.dumps({"iteration": iteration, **{k: float(v) for k, v in metrics.items()}})
        append_line(self.output / "log.jsonl", line)

    def skip_iteration(self, iteration: int, metrics: dict[str, float]) -> None:
        """An iteration with nothing to learn from (every module failed): logged, not saved."""
        self.empty_iterations.append(iteration)
        self.log_metrics(iteration, metrics)

    def end_iteration(self, iteration: int, params: np.ndarray, arrays: dict[str, np.ndarray],
                      metrics: dict[str, float], validation: Validation | None) -> None:
        """Save the newest policy, the best one on validation, metrics and a checkpoint."""
        from mlgo.policies.policy_dir import save_policy

        bad = int(np.size(params) - np.isfinite(params).sum())
        if bad:
            # Diverged (e.g. a learning rate far too large): keep the last good policy and
            # checkpoint rather than write weights no compiler could use.
            raise MlgoError(f"{self.output}: iteration {iteration} produced {bad} non-finite "
                            "parameter(s) (NaN or inf); nothing of it was written, the last "
                            "good policy and checkpoint are kept")
        metrics = dict(metrics)
        metrics["seconds"] = time.monotonic() - getattr(self, "_t0", time.monotonic())
        metrics["skipped_modules"] = len(self._skipped)
        if validation is not None:
            metrics["validation/relative_change"] = validation.relative_change
            metrics["validation/failed"] = validation.failed
            if self.best is None or validation.relative_change < self.best:
                self.best = validation.relative_change
                save_policy(self.output / "best", self.network, params, self._policy_meta(
                    {"iteration": iteration, "validation": validation.__dict__ |
                     {"relative_change": validation.relative_change}}))
        save_policy(self.output / "policy", self.network, params,
                    self._policy_meta({"iteration": iteration}))
        self.log_metrics(iteration, metrics)
        self.state["best_relative_change"] = self.best
        self.checkpointer.save(iteration, {"params": np.asarray(params), **arrays}, self.state)
        self.params = np.asarray(params)
        self.trained_iterations += 1

    def _report_skipped(self, iteration: int) -> None:
        """One warning per iteration naming the modules that failed in it, and why."""
        if not self._skipped:
            return
        items = sorted(self._skipped.items())
        lines = [f"  {m}: {why}" for m, why in items[:10]]
        if len(items) > 10:
            lines.append(f"  ... and {len(items) - 10} more (all in checkpoints/*/state.json)")
        log.warning("iteration %d: %d module(s) failed and were skipped:\n%s", iteration,
                    len(items), "\n".join(lines))
        self._skipped = {}

    def _policy_meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "corpus": str(self.corpus.root),
                "train_modules": len(self.train_modules), "validation_modules": len(self.val_modules),
                "seed": self.seed, **self.meta, **extra}

    def close(self) -> None:
        try:
            if self._writer is not None:
                with writing(self.output / "tensorboard"):
                    self._writer.close()
        finally:
            self.pool.close()


@contextmanager
def run_lock(output: Path) -> Iterator[None]:
    """Hold OUT/.lock for the whole run: two trainers on one directory would interleave
    checkpoints and policies."""
    with directory_lock(output / LOCK, f"{output}: another mlgo train is running on this "
                        "directory", "wait for it to finish or use another --output"):
        yield


def append_line(path: Path, line: str) -> None:
    """Append one line whole or not at all: a full disk must not leave half a line that
    breaks every later reader of the file."""
    with writing(path), open(path, "ab") as f:
        start = f.tell()
        try:
            f.write(line.encode() + b"\n")
            f.flush()
        except OSError:
            f.truncate(start)
            raise
