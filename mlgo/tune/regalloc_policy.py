"""The tuned eviction policy of `mlgo tune --problem regalloc`, made for the code of one build:
that build's training run profiled per module, its hot modules extracted as that build compiles
them, their eviction decisions searched under the trace reward, the best ones imitated, and the
policy's trace cost measured (regalloc_flow.py runs these steps).

The plain build and the PGO build compile other code (PGO changes inlining, block layout and
the block frequencies eviction weighs), so each gets a policy of its own: a `Basis` names the
build, its training run and the directory its corpus, search and policy go to. The PGO build's
modules are extracted with its -fprofile-instr-use profile read by the frontend (the profile
becomes branch weights and entry counts in the IR), so the search compiles the code the PGO
build compiles."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgo.tune import regalloc_program as rp
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text

PROFILE_USE = "-fprofile-instr-use="


@dataclass(frozen=True)
class Basis:
    """The build a policy is made for, and where its files go."""

    label: str  # "plain" or "pgo": the build variant and its runs' prefix
    build: Path  # its build directory (compile_commands.json, objects)
    exe: Path  # its program
    callgrind: Path  # its training run under callgrind
    base: Path  # profile.json, corpus, search, train and eval.json go here
    profile_use: str = ""  # the -fprofile-instr-use= flag its compiles read, if any

    @property
    def corpus(self) -> Path:
        return self.base / "corpus"

    @property
    def search(self) -> Path:
        return self.base / "search"

    @property
    def policy(self) -> Path:
        return self.base / "train" / "policy"


def hot_corpus(o: Any, basis: Basis, name: str, src: Path, workers: int) -> dict[str, Any]:
    """The training run's block profile per module (BASE/profile.json), the hot modules, and
    their compiles extracted at the build's own flags into BASE/corpus."""
    from corpus_tools.corpus import Corpus
    from mlgo.problems.regalloc.profile import write_profile
    from mlgo.tune import project

    db = basis.build / "compile_commands.json"
    srcs, _ = project.sources(db, root=src)
    objects = {}
    for s in srcs:
        obj = project.object_of(s.entry)
        if s.relative is not None and obj is not None and obj.is_file():
            objects[f"{name}/{s.relative}"] = (s, obj)
    if not objects:
        raise MlgoError(f"{db}: no compile of a source under {src} wrote an object file")
    files = sorted(basis.callgrind.glob("callgrind.out.*"))
    profile = rp.module_profile(basis.exe, files, {m: obj for m, (_, obj) in objects.items()})
    basis.base.mkdir(parents=True, exist_ok=True)
    write_profile(basis.base / "profile.json", profile,
                  f"the training workload on {basis.exe}: {o.workload}")
    executed = {m: sum(b.executed for blocks in fns.values() for b in blocks.values())
                for m, fns in profile.items()}
    total = sum(executed.values())
    if not total:
        raise MlgoError(f"{basis.exe}: the training workload executed none of the program's "
                        "own code")
    ranked = sorted(executed, key=executed.get, reverse=True)
    chosen = [m for m in ranked if executed[m] >= o.hot_share * total][:o.max_modules]
    if not chosen:
        raise MlgoError(f"{basis.exe}: no module executes {100 * o.hot_share:g}% of the "
                        "program's instructions on the training workload (--hot-share)")
    raw = json.loads(db.read_text())
    entries = [raw[objects[m][0].index] for m in chosen]
    cdb = basis.base / "hot_compile_commands.json"
    atomic_write_text(cdb, json.dumps(entries, indent=1) + "\n")
    failed = _extract(cdb, basis, name, src, workers, o.timeout)
    if failed:
        raise MlgoError(f"{cdb}: extracting {failed} failed")
    names = {m.name for m in Corpus.load(basis.corpus).modules}
    if names != set(chosen):
        raise MlgoError(f"{basis.corpus}: the extracted modules ({', '.join(sorted(names))}) "
                        f"are not the profiled ones ({', '.join(chosen)})")
    return {"modules": {m: executed[m] / total for m in chosen}, "program_instructions": total}


def _extract(cdb: Path, basis: Basis, name: str, src: Path, workers: int, timeout: float
             ) -> str:
    """The hot compiles to IR in BASE/corpus; the first failed source, or "". The extraction
    leaves profile flags out of the IR compile (they name files beside the original build);
    a PGO basis puts its -fprofile-instr-use back, so the IR carries the profile the build
    used, while the recorded object compile (which starts from that IR) reads no file."""
    from corpus_tools.extract import compile_db_tasks, read_compile_db
    from corpus_tools.extract_pipeline import STOP_BEFORE_PASSES, ExtractSummary, run_tasks

    summary = ExtractSummary(basis.corpus)
    tasks = compile_db_tasks(read_compile_db(cdb), project=name, root=src, exclude=(),
                             summary=summary)
    if basis.profile_use:
        for e in json.loads(cdb.read_text()):
            if basis.profile_use not in " ".join(e.get("arguments", [])) + e.get("command", ""):
                raise MlgoError(f"{cdb}: the {basis.label} build's compile of {e.get('file')} "
                                f"does not read its profile ({basis.profile_use})")
        tasks = [dataclasses.replace(t, compile_argv=_with_profile(t.compile_argv,
                                                                   basis.profile_use,
                                                                   STOP_BEFORE_PASSES))
                 for t in tasks]
    summary = run_tasks(tasks, basis.corpus, summary, jobs=workers, timeout=timeout,
                        progress=False, origins={name: {"source": "compile-db",
                                                        "path": str(cdb)}})
    return summary.failed[0].source if summary.failed else ""


def _with_profile(argv: tuple[str, ...], flag: str, stop: tuple[str, ...]) -> tuple[str, ...]:
    """`argv` with `flag` just before the options that stop it at IR."""
    n = len(stop)
    for i in range(len(argv) - n + 1):
        if tuple(argv[i:i + n]) == stop:
            return (*argv[:i], flag, *argv[i:])
    raise MlgoError(f"not an IR-emitting compile: {' '.join(argv[:4])} ...")


def gin(profile: Path, bindings: tuple[str, ...]) -> str:
    """The trace reward on the profile, and one imitation round cloning the search into a
    residual network (as mlgo/shipped_policies/regalloc/train.sh trains the shipped one), with
    more epochs: the policy serves this program's decisions, it need not generalize (on zopfli,
    40 epochs agreed with 79% of the searched decisions and executed more than the plain build;
    300 agreed with 95%, docs/tune.md)."""
    from mlgo.training.gin_config import parse_gin

    return parse_gin([], [f"regalloc.RegallocEviction.profile = '{profile}'",
                          "regalloc.RegallocNetworkConfig.residual = True",
                          "imitation.ImitationConfig.rounds = 1",
                          "imitation.ImitationConfig.epochs = 300",
                          "imitation.ImitationConfig.flip_weight = 100.0", *bindings])


def search(o: Any, basis: Basis, hot: dict, gin_config: str, deadline: float, workers: int,
           status: Any) -> dict[str, Any]:
    """Eviction decisions of the hot modules searched from `default-rule` until the module
    budget or `deadline`; status(pool) reports progress."""
    from corpus_tools.corpus import Corpus
    from mlgo.search import SearchConfig, run_search_task, search_corpus
    from mlgo.tune.deadline_pool import DeadlinePool

    corpus = Corpus.load(basis.corpus)
    order = sorted(corpus.modules, key=lambda m: -hot["modules"][m.name])
    pool = DeadlinePool(run_search_task, deadline, workers=workers,
                        tick=lambda p: status(p, len(order)))
    s = search_corpus(order, basis.search, SearchConfig(passes=1, budget=o.module_budget),
                      pool, gin_config=gin_config, timeout=o.timeout, progress=False,
                      problem="regalloc")
    return {"modules": s.modules, "compiles": s.compiles, "failed": [m for m, _ in s.failed],
            "stopped_by_budget": pool.stopped, "unfinished": pool.unfinished,
            "default_objective": s.default_objective, "best_objective": s.best_objective,
            "change": (s.best_objective - s.default_objective) / s.default_objective
            if s.default_objective else 0.0}


def train(basis: Basis, gin_config: str, workers: int, timeout: float) -> None:
    """Imitation of the search's best decisions on the searched modules."""
    from corpus_tools.corpus import Corpus
    from mlgo.problems import get_problem
    from mlgo.search import result_path, run_search_task
    from mlgo.training.pipeline import train as train_policy
    from mlgo.tune.progress import quiet_tensorflow
    from mlgo.workers.pool import make_pool

    quiet_tensorflow()
    corpus = Corpus.load(basis.corpus)
    corpus = corpus.subset(m.name for m in corpus.modules
                           if result_path(basis.search, m.name).is_file())
    train_policy(get_problem("regalloc"), "imitation", corpus, basis.base / "train",
                 pool=make_pool(workers, None), gin_config=gin_config, validation_fraction=0.0,
                 timeout=timeout, search=basis.search,
                 search_pool=make_pool(workers, None, task_fn=run_search_task))
    if not basis.policy.is_dir():
        raise MlgoError(f"{basis.base / 'train'}: training wrote no policy")


def evaluate(basis: Basis, gin_config: str, workers: int, timeout: float) -> dict[str, Any]:
    """The policy's trace cost on every hot module against clang's own eviction: the change
    the build with it should show in those modules on the training workload."""
    from corpus_tools.corpus import Corpus
    from mlgo.evaluate import collect, write_json
    from mlgo.workers.pool import make_pool
    from mlgo.workers.tasks import ModuleTask, PolicySpec

    corpus = Corpus.load(basis.corpus)
    policy = str(basis.policy)
    pool = make_pool(workers, None)
    try:
        rep = collect("regalloc", policy, "executed instructions (block trace)", corpus,
                      pool.run([ModuleTask("regalloc", m, PolicySpec.named(policy),
                                           gin_config=gin_config, timeout=timeout)
                                for m in corpus.modules]))
    finally:
        pool.close()
    if not rep.modules:
        raise MlgoError(f"{policy}: no hot module compiled with the policy")
    write_json(rep, basis.base / "eval.json")
    return {"change": rep.relative_change, "default": rep.default_total,
            "policy": rep.policy_total, "failed": [f["module"] for f in rep.failures]}
