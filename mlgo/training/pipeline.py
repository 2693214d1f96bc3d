"""One training run from a corpus to a policy, as `mlgo train` runs it:

    trace the default proxy (bc, and the vocab, need it)  ->  OUT/trace
    feature quantiles from the trace                       ->  OUT/vocab
    the network: the run's own on resume, else the warm start's, else a new one on the vocab
    the algorithm (bc.py, ppo.py, es.py or imitation.py) through TrainingRun (run.py)

Each step is skipped when its output exists and was made from the same inputs (OUT/trace and
OUT/vocab record theirs in inputs.json: the corpus's bitcode and commands and the compile
settings; the trace's records), so the same call resumes a killed run and a corrected one
(another --search or corpus) rebuilds what the wrong one left. Gin must already be configured
(mlgo.training.gin_config.parse_gin): `gin_config` is what workers replay.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpus_tools.corpus import Corpus
from mlgo.policies.network import PolicyNetwork
from mlgo.problems import Problem
from mlgo.workers.pool import WorkerPool
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text, file_sha256, write_dir

log = logging.getLogger(__name__)
ALGORITHMS = ("bc", "ppo", "es", "imitation")
INPUTS = "inputs.json"  # in OUT/trace and OUT/vocab: what each was made from


@dataclass
class TrainResult:
    output: Path
    best: float | None  # the best policy's relative change vs the default on validation
    failed_modules: dict[str, str] = field(default_factory=dict)  # module -> first error line
    empty_iterations: list[int] = field(default_factory=list)  # iterations every module failed
    checkpoint_dir: Path | None = None  # the newest checkpoint (its state.json lists failures)


def train(problem: Problem, algorithm: str, corpus: Corpus, output: Path, *,
          pool: WorkerPool, gin_config: str = "", warmstart: Path | None = None,
          trace: Path | None = None, vocab: Path | None = None,
          validation_fraction: float = 0.2, seed: int = 0,
          timeout: float = 300.0, search: Path | None = None,
          search_pool: WorkerPool | None = None,
          validation_projects: Collection[str] | None = None,
          deadline: float | None = None) -> TrainResult:
    """Train `algorithm` on `corpus` into the run directory `output` (see run.py for its
    layout). Imitation also takes `search_pool` (make_pool(task_fn=run_search_task)) and
    optionally a finished `mlgo search` directory `search`. The pools are closed at the end.
    `validation_projects` (if given) validates on exactly those projects' modules instead of a
    `validation_fraction` drawn by project. `deadline` (time.monotonic(); imitation only): when
    its cloning stops (imitation.train)."""
    from mlgo.training import bc, es, imitation, ppo
    from mlgo.training.run import TrainingRun, check_split_matches, named_split, run_lock

    try:
        if algorithm not in ALGORITHMS:
            raise MlgoError(f"unknown algorithm {algorithm!r}; choose one of "
                            f"{', '.join(ALGORITHMS)}")
        # Before anything is written or traced: an unknown project, or a resumed run whose split
        # is another one, must cost nothing.
        wanted_split = named_split(corpus, validation_projects)
        if wanted_split is not None and (output / "split.json").is_file():
            split_path = output / "split.json"
            try:
                existing = json.loads(split_path.read_text())
            except (OSError, ValueError) as e:
                raise MlgoError(f"{split_path}: cannot read this run's split: {e}") from None
            check_split_matches(split_path, existing, wanted_split, validation_projects)
        if algorithm == "imitation":
            if problem.name not in ("inlining", "regalloc") or search_pool is None:
                raise MlgoError("imitation learns from flip searches: it needs --problem "
                                "inlining or regalloc (and a pool for the searches)")
            if search is not None:
                from mlgo.search_store import check_search_for_corpus

                # Before anything is written: a search of another corpus, a changed module or
                # other compile settings must leave nothing that a corrected command reuses.
                check_search_for_corpus(search, corpus.modules, problem)
            if trace is None and search is not None:
                trace = search  # the vocab's quantiles from the searched call sites
        problem.check_corpus(corpus)  # IR of the build the problem serves (frontend.py)
        output.mkdir(parents=True, exist_ok=True)
        with run_lock(output):  # one trainer per run directory
            check_same_run(output, problem.name, algorithm)
            traced = _Trace(problem, corpus, output, trace, pool, gin_config, timeout)
            net, params = _network_and_params(problem, output, warmstart, vocab, traced, seed)
            # Stamped only once the start succeeded, so that a mistyped --warmstart leaves
            # nothing that would refuse the corrected command.
            stamp_run(output, problem.name, algorithm)
            run = TrainingRun(problem=problem, corpus=corpus, output=output, pool=pool,
                              network=net, params=params, algorithm=algorithm,
                              gin_config=gin_config, timeout=timeout,
                              validation_fraction=validation_fraction, seed=seed,
                              meta={"warmstart": str(warmstart or "")},
                              validation_projects=validation_projects)
            try:
                if algorithm == "bc":
                    bc.train(run, bc.BCConfig(), traced.path())
                elif algorithm == "ppo":
                    ppo.train(run, ppo.PPOConfig())
                elif algorithm == "imitation":
                    imitation.train(run, imitation.ImitationConfig(), search_pool, search,
                                    guide_first=warmstart is not None, deadline=deadline)
                else:
                    es.train(run, es.ESConfig())
            finally:
                run.close()
    finally:
        pool.close()
        if search_pool is not None:
            search_pool.close()
    if run.empty_iterations and not run.trained_iterations:
        raise MlgoError(f"{output}: nothing was trained: every module failed in all "
                        f"{len(run.empty_iterations)} iteration(s) of this run (see the "
                        "warnings above)" + ("" if (output / "policy").is_dir() else
                                             "; no policy was written"))
    latest = run.checkpointer.dir / "LATEST"
    return TrainResult(output, run.best, dict(run.state.get("failed_modules", {})),
                       list(run.empty_iterations),
                       run.checkpointer.dir / latest.read_text().strip()
                       if latest.is_file() else None)


class _Trace:
    """The default proxy's decisions over every module, traced on first use into OUT/trace
    (reused on resume); bc trains on the training split's and reports agreement on the rest."""

    def __init__(self, problem: Problem, corpus: Corpus, output: Path, given: Path | None,
                 pool: WorkerPool, gin_config: str, timeout: float) -> None:
        self.problem, self.corpus, self.output, self.given = problem, corpus, output, given
        self.pool, self.gin_config, self.timeout = pool, gin_config, timeout

    def path(self) -> Path:
        from mlgo.search_store import compile_settings
        from mlgo.traces import META, PROXY_POLICY, trace_modules

        if self.given:
            return self.given
        out = self.output / "trace"
        inputs = {"corpus": corpus_fingerprint(self.corpus), "settings": compile_settings(
            self.problem), "policy": PROXY_POLICY[self.problem.name]}
        if (out / META).is_file() and read_inputs(out) == inputs:
            return out
        shutil.rmtree(out, ignore_errors=True)  # traced from another corpus or settings
        log.info("tracing the default heuristic's decisions into %s", out)
        summary = trace_modules(self.problem, self.corpus.modules, out, pool=self.pool,
                                gin_config=self.gin_config, timeout=self.timeout)
        log.info("%s", summary.format())
        if summary.failures:
            log.warning("%d module(s) failed while tracing and were left out (errors: %s)",
                        len(summary.failures), out / "failures.json")
        atomic_write_text(out / INPUTS, json.dumps(inputs) + "\n")
        return out


def _network_and_params(problem: Problem, output: Path, warmstart: Path | None,
                       vocab: Path | None, trace: _Trace, seed: int
                       ) -> tuple[PolicyNetwork, np.ndarray]:
    """The run's own network on resume; else the warm start's (checked against the live
    compiler's features); else a new network on `vocab` (default: OUT/vocab, built from the
    trace once)."""
    from mlgo.policies.policy_dir import load_policy
    from mlgo.traces import RECORDS, build_vocab

    structure = output / "structure"
    if (structure / "policy.json").is_file():
        net, params, _ = load_policy(structure, problem=problem.name)
        return net, params
    if warmstart:
        net, params, _ = load_policy(warmstart, problem=problem.name)
        net.check_features(problem.header())
        return net, params
    if vocab is None:
        vocab = output / "vocab"
        source = trace.path()
        records = source / RECORDS  # missing: build_vocab says what is wrong with the trace
        inputs = {"trace": str(source.resolve()),
                  "records": file_sha256(records) if records.is_file() else ""}
        if not vocab.is_dir() or read_inputs(vocab) != inputs:
            # Built aside and swapped in, so a run killed mid-way never leaves half a vocab;
            # one built from another trace (an earlier command's other --search) is replaced.
            def fill(tmp: Path) -> None:
                build_vocab(source, tmp)
                atomic_write_text(tmp / INPUTS, json.dumps(inputs) + "\n")

            write_dir(vocab, fill)
    net = problem.build_network(problem.header(), vocab)
    return net, net.init_params(seed)


def read_inputs(directory: Path) -> object:
    """What a derived directory (OUT/trace, OUT/vocab) was made from; None if unrecorded."""
    try:
        return json.loads((directory / INPUTS).read_text())
    except (OSError, ValueError):
        return None


def corpus_fingerprint(corpus: Corpus) -> str:
    """A hash of every module's name, bitcode and recorded command."""
    import hashlib

    from mlgo.search_store import module_fingerprint

    return hashlib.sha256("".join(module_fingerprint(m, {}) for m in corpus.modules)
                          .encode()).hexdigest()


def check_same_run(output: Path, problem: str, algorithm: str) -> None:
    """Refuse to resume a run directory with a different problem or algorithm."""
    stamp = output / "run.json"
    want = {"problem": problem, "algorithm": algorithm}
    if stamp.is_file():
        try:
            have = json.loads(stamp.read_text())
            if not isinstance(have, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise MlgoError(f"{stamp}: unreadable ({e}); it names the problem and algorithm "
                            "this directory trains: restore it, or delete it to let this "
                            "command claim the directory") from None
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise MlgoError(f"{output} holds a run with {', '.join(f'{k}={a}' for k, (a, _) in diff.items())}; "
                            f"use another run directory for {', '.join(f'{k}={b}' for k, (_, b) in diff.items())}")


def stamp_run(output: Path, problem: str, algorithm: str) -> None:
    """Claim the run directory for this problem and algorithm (see check_same_run)."""
    stamp = output / "run.json"
    if not stamp.is_file():
        atomic_write_text(stamp, json.dumps({"problem": problem, "algorithm": algorithm}) + "\n")
