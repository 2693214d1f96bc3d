"""`mlgo tune --problem regalloc`: the register allocator's eviction tuned for one program's own
workload, and checked on another input (docs/tune.md).

Steps (each recorded under OUT/steps/ when it ends, so a re-run resumes after the last one):
  1. plain      the CMake build with mlgo-clang serving no policy (regalloc_program.py)
  2. runs-plain the training workload natively, then both workloads under callgrind: the
                reference outputs (a workload whose two plain runs differ is refused: its output
                cannot tell a broken build from a changed input)
  3. corpus     the block profile of the training run per module, the hot modules (the most
                executed, at least --hot-share of the program's own instructions each), their
                compiles extracted at the build's own level
  4. search     eviction decisions of the hot modules searched from `default-rule`, scored by the
                trace reward (the instructions the module would execute on the training run),
                in the time the other steps leave
  5. train      one imitation round of the search's best: a residual network on `default-rule`
  6. tuned      the build with the tuned policy; both workloads under callgrind, outputs checked
  7. pgo-gen    clang's instrumented build run on the training workload; llvm-profdata merge
  8. pgo        the profile-use build; both workloads under callgrind
  9. pgo-tuned  the profile-use build with the tuned policy; both workloads under callgrind
 10. report     OUT/report.md and report.json (regalloc_report.py)

The check workload is given before tuning starts and never feeds the profile, the search or the
training: its figures are the held-out ones."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgo.tune import regalloc_program as rp
from mlgo.tune.progress import (
    Progress,
    Steps,
    check_identity,
    clock,
    quiet_tensorflow,
    tune_lock,
)
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text

WORKLOADS = ("train", "check")


@dataclass
class RegallocTuneOptions:
    output: Path
    source: Path  # a CMake source directory
    program: str  # the executable, relative to the build directory
    workload: str  # the training workload (sh command using $PROGRAM)
    check_workload: str  # another input, never trained on
    cmake_args: tuple[str, ...] = ()
    project: str | None = None
    module_budget: int = 60  # search compiles per module
    hot_share: float = 0.02  # a module is hot from this share of the program's instructions
    max_modules: int = 8
    pgo: bool = True
    time_budget: float = 3600.0
    workers: int | None = None
    timeout: float = 300.0
    gin_bindings: tuple[str, ...] = ()

    def identity(self) -> dict[str, Any]:
        """What must not change when a run is resumed (not the budget or the workers)."""
        return {"problem": "regalloc", "source": str(self.source.resolve()),
                "program": self.program, "workload": self.workload,
                "check_workload": self.check_workload, "cmake_args": list(self.cmake_args),
                "project": self.project, "module_budget": self.module_budget,
                "hot_share": self.hot_share, "max_modules": self.max_modules, "pgo": self.pgo,
                "gin_bindings": list(self.gin_bindings)}


def check_options(o: RegallocTuneOptions) -> None:
    if not (o.source / "CMakeLists.txt").is_file():
        raise MlgoError(f"{o.source}: no CMakeLists.txt (--problem regalloc builds and runs the "
                        "program: give its CMake source directory)")
    if not o.program:
        raise MlgoError("--problem regalloc needs --program PATH (the executable the "
                        "workloads run, relative to the build directory)")
    if not o.workload or not o.check_workload:
        raise MlgoError("--problem regalloc needs --workload CMD and --check-workload CMD (the "
                        "training input and another one to check on; $PROGRAM names the program)")
    if o.workload.strip() == o.check_workload.strip():
        raise MlgoError("--check-workload is the training workload itself: give another input "
                        "(other files, sizes or options)")
    if "$PROGRAM" not in o.workload + o.check_workload and "${PROGRAM}" not in (
            o.workload + o.check_workload):
        raise MlgoError("the workloads never run $PROGRAM (the program under test): "
                        f"{o.workload}")
    if o.module_budget < 3:
        raise MlgoError(f"--module-budget {o.module_budget}: at least 3 compiles per module")
    if not 0.0 < o.hot_share < 1.0:
        raise MlgoError(f"--hot-share {o.hot_share}: a fraction between 0 and 1")


def tune_regalloc(o: RegallocTuneOptions) -> dict[str, Any]:
    """Run (or resume) the tune into o.output; returns the report (regalloc_report.py)."""
    check_options(o)
    out = o.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tune_lock(out):
        check_identity(out, o.identity())
        prog = Progress(o.time_budget)
        try:
            return _tune(o, out, Steps(out), prog)
        finally:
            prog.close()


def _reference(out: Path, workload: str) -> rp.Run:
    """The plain build's run of a workload, as its step recorded it on disk."""
    d = out / "runs" / f"plain-{workload}-callgrind"
    return rp.Run(0, (d / "stdout").read_text(), 0.0)


def _tune(o: RegallocTuneOptions, out: Path, steps: Steps, prog: Progress) -> dict[str, Any]:
    from mlgo.tune.regalloc_report import write_report

    workers = o.workers or max(1, os.cpu_count() or 2)
    src = o.source.resolve()
    name = o.project or src.name
    logs = out / "logs"
    commands = {"train": o.workload, "check": o.check_workload}
    total = 10 if o.pgo else 7

    def begin(n: int, step: str, what: str) -> dict | None:
        rec = steps.done(step)
        prog.set_status(f"[{n}/{total}] {what}" + (" (done earlier)" if rec else ""), say=True)
        return rec

    def build(spec: rp.Build) -> Path:
        rp.cmake_build(src, out / f"build-{spec.variant}", spec, o.cmake_args,
                       logs / f"build-{spec.variant}.log", jobs=workers,
                       timeout=max(prog.left(), 120.0))
        return rp.program_in(out / f"build-{spec.variant}", o.program)

    def measure(variant: str, exe: Path) -> dict[str, Any]:
        """Both workloads under callgrind, outputs checked against the plain build's."""
        res = {}
        for w in WORKLOADS:
            what = f"the {w} workload on the {variant} build"
            prog.set_status(f"{what}, under callgrind")
            r = rp.run_workload(commands[w], exe, out / "runs" / f"{variant}-{w}-callgrind",
                                what, timeout=max(prog.left(), 600.0), callgrind=True)
            if variant != "plain":
                rp.check_output(r, _reference(out, w), what, commands[w])
            functions, own = rp.function_instructions(exe, r.callgrind)
            res[w] = {"instructions": r.instructions, "own": own,
                      "seconds": round(r.seconds, 3), "functions": functions}
        return res

    # 1. the plain build
    if begin(1, "plain", "build at the project's own flags (mlgo-clang, no policy)") is None:
        t = time.monotonic()
        exe = build(rp.Build("plain"))
        steps.record("plain", time.monotonic() - t, {"exe": str(exe)})
    exe = Path(steps.done("plain")["exe"])

    # 2. the reference runs
    runs = begin(2, "runs-plain", "the workloads on the plain build (natively, then under "
                 "callgrind)")
    if runs is None:
        t = time.monotonic()
        native = rp.run_workload(o.workload, exe, out / "runs" / "plain-train-native",
                                 "the training workload on the plain build",
                                 timeout=max(prog.left(), 600.0))
        res = measure("plain", exe)
        again = _reference(out, "train")
        if again.stdout != native.stdout:
            raise MlgoError("the training workload's output differs between two runs of the "
                            "same build (it must not depend on time, randomness or earlier "
                            f"runs): {o.workload}")
        res["train"]["native_seconds"] = round(native.seconds, 3)
        runs = steps.record("runs-plain", time.monotonic() - t, res)
    prog.say(f"plain build: {runs['train']['instructions']:,} instructions on the training "
             f"workload, {runs['check']['instructions']:,} on the check workload")

    # 3. profile, hot modules, their corpus
    hot = begin(3, "corpus", "profile the training run per module; extract the hot modules")
    if hot is None:
        t = time.monotonic()
        hot = _hot_corpus(o, out, name, src, exe, workers)
        hot = steps.record("corpus", time.monotonic() - t, hot)
    prog.say(f"{len(hot['modules'])} hot module(s): " + ", ".join(
        f"{m} ({100 * s:.1f}%)" for m, s in hot["modules"].items()))
    gin = _gin(out / "profile.json", o.gin_bindings)

    # 4. the search, in the time the other steps leave
    search = begin(4, "search", "search eviction decisions of the hot modules (trace reward)")
    if search is None:
        rest = _estimate_rest(steps.seconds(), runs, len(hot["modules"]), o.pgo)
        reserve = 1.2 * sum(rest.values())
        deadline = prog.deadline - reserve
        share = deadline - time.monotonic()
        prog.remaining = max(share, 0.0) + reserve
        prog.say(f"the search gets {clock(max(share, 0))} of the {clock(prog.left())} left "
                 f"(the later steps are estimated at {clock(reserve)})")
        if share < 10:
            raise MlgoError(f"--time-budget {clock(prog.budget)} is too short for this "
                            f"program: the steps besides the search need about "
                            f"{clock(reserve + prog.elapsed())}")
        t = time.monotonic()
        res = _search(o, out, hot, gin, deadline, workers, prog, total)
        search = steps.record("search", time.monotonic() - t, res)
    prog.say(f"search: {search['modules']} module(s) with a result, {search['compiles']} "
             f"compiles, trace cost {100 * search['change']:+.2f}% on the searched modules")
    if not search["modules"]:
        raise MlgoError(f"{out / 'search'}: no hot module has a search result (failures in "
                        f"{out / 'search' / 'failures.json'})")

    # 5. imitation
    policy = out / "train" / "policy"
    if begin(5, "train", "imitate the best decisions (a residual policy on default-rule)") is None:
        t = time.monotonic()
        _train(out, hot, gin, workers, o.timeout)
        steps.record("train", time.monotonic() - t)
    ev = steps.done("eval")
    if ev is None:
        prog.set_status("the policy on the hot modules against clang's eviction (trace cost)")
        t = time.monotonic()
        res = _evaluate(out, gin, workers, o.timeout)
        ev = steps.record("eval", time.monotonic() - t, res)
    prog.say(f"policy: trace cost {100 * ev['change']:+.2f}% on the hot modules (the search's "
             f"best: {100 * search['change']:+.2f}%)")
    prog.remaining = sum(_estimate_rest(steps.seconds(), runs, len(hot["modules"]),
                                        o.pgo).values())

    # 6.-9. the builds measured
    variants = [("tuned", rp.Build("tuned", str(policy)))]
    if o.pgo:
        pgo_profile = out / "pgo" / "default.profdata"
        variants += [("pgo", rp.Build("pgo", "default", f"-fprofile-instr-use={pgo_profile}")),
                     ("pgo-tuned", rp.Build("pgo-tuned", str(policy),
                                            f"-fprofile-instr-use={pgo_profile}"))]
    for variant, spec in variants:
        n = {"tuned": 6, "pgo": 8, "pgo-tuned": 9}[variant]
        if variant == "pgo" and begin(7, "pgo-gen", "clang's instrumented build run on the "
                                      "training workload") is None:
            t = time.monotonic()
            _pgo_profile(o, out, build(rp.Build("pgo-gen", "default",
                                                "-fprofile-instr-generate")), prog)
            steps.record("pgo-gen", time.monotonic() - t)
        if begin(n, variant, f"build {variant}; both workloads under callgrind") is None:
            t = time.monotonic()
            res = measure(variant, build(spec))
            steps.record(variant, time.monotonic() - t, res)
        rec = steps.done(variant)
        prog.remaining = sum(_estimate_rest(steps.seconds(), runs, len(hot["modules"]),
                                            o.pgo).values())
        prog.say(f"{variant}: " + ", ".join(
            f"{w} {100 * (rec[w]['instructions'] / runs[w]['instructions'] - 1):+.2f}%"
            for w in WORKLOADS) + " instructions against plain")

    # 10. the report
    prog.set_status(f"[{total}/{total}] write the report", say=True)
    measured = {"plain": runs, **{v: steps.done(v) for v, _ in variants}}
    doc = write_report(out, o, name, hot, search, ev, measured, steps.seconds(), prog.elapsed())
    prog.remaining = 0.0
    return doc


def _estimate_rest(done: dict[str, float], runs: dict, modules: int, pgo: bool
                   ) -> dict[str, float]:
    """Seconds each step after the search will take, from the plain build's and runs' times."""
    b = done.get("plain", 60.0)
    cg = sum(runs[w]["seconds"] for w in WORKLOADS)
    est = {"train": 45.0 + 15.0 * modules, "tuned": 1.3 * b + cg + 20}
    if pgo:
        est.update({"pgo-gen": 1.3 * b + 3 * runs["train"].get("native_seconds", 1.0) + 10,
                    "pgo": 1.3 * b + cg + 20, "pgo-tuned": 1.3 * b + cg + 20})
    return {k: v for k, v in est.items() if k not in done}


def _hot_corpus(o: RegallocTuneOptions, out: Path, name: str, src: Path, exe: Path,
                workers: int) -> dict[str, Any]:
    """The training run's block profile per module (OUT/profile.json), the hot modules, and
    their compiles extracted at the build's own level into OUT/corpus."""
    from corpus_tools.corpus import Corpus
    from corpus_tools.extract import extract_compile_db
    from mlgo.problems.regalloc.profile import write_profile
    from mlgo.tune import project

    db = out / "build-plain" / "compile_commands.json"
    srcs, _ = project.sources(db, root=src)
    objects = {}
    for s in srcs:
        obj = project.object_of(s.entry)
        if s.relative is not None and obj is not None and obj.is_file():
            objects[f"{name}/{s.relative}"] = (s, obj)
    if not objects:
        raise MlgoError(f"{db}: no compile of a source under {src} wrote an object file")
    files = sorted((out / "runs" / "plain-train-callgrind").glob("callgrind.out.*"))
    profile = rp.module_profile(exe, files, {m: obj for m, (_, obj) in objects.items()})
    write_profile(out / "profile.json", profile, f"the training workload on {exe}: {o.workload}")
    executed = {m: sum(b.executed for blocks in fns.values() for b in blocks.values())
                for m, fns in profile.items()}
    total = sum(executed.values())
    if not total:
        raise MlgoError(f"{exe}: the training workload executed none of the program's own code")
    ranked = sorted(executed, key=executed.get, reverse=True)
    chosen = [m for m in ranked if executed[m] >= o.hot_share * total][:o.max_modules]
    if not chosen:
        raise MlgoError(f"{exe}: no module executes {100 * o.hot_share:g}% of the program's "
                        "instructions on the training workload (--hot-share)")
    raw = json.loads(db.read_text())
    entries = [raw[objects[m][0].index] for m in chosen]
    cdb = out / "hot_compile_commands.json"
    atomic_write_text(cdb, json.dumps(entries, indent=1) + "\n")
    summary = extract_compile_db(cdb, out / "corpus", project=name, root=src, exclude=(),
                                 jobs=workers, timeout=o.timeout, progress=False, opt_level=None)
    if summary.failed:
        raise MlgoError(f"{cdb}: extracting {summary.failed[0].source} failed")
    names = {m.name for m in Corpus.load(out / "corpus").modules}
    if names != set(chosen):
        raise MlgoError(f"{out / 'corpus'}: the extracted modules ({', '.join(sorted(names))}) "
                        f"are not the profiled ones ({', '.join(chosen)})")
    return {"modules": {m: executed[m] / total for m in chosen}, "program_instructions": total}


def _gin(profile: Path, bindings: tuple[str, ...]) -> str:
    """The trace reward on the profile, and one imitation round cloning the search into a
    residual network (as mlgo/shipped_policies/regalloc/train.sh trains the shipped one), with
more epochs: the policy serves this program's decisions, it need not generalize (on zopfli, 40
epochs agreed with 79% of the searched decisions and executed more than the plain build; 300
agreed with 95%, docs/tune.md)."""
    from mlgo.training.gin_config import parse_gin

    return parse_gin([], [f"regalloc.RegallocEviction.profile = '{profile}'",
                          "regalloc.RegallocNetworkConfig.residual = True",
                          "imitation.ImitationConfig.rounds = 1",
                          "imitation.ImitationConfig.epochs = 300",
                          "imitation.ImitationConfig.flip_weight = 100.0", *bindings])


def _search(o: RegallocTuneOptions, out: Path, hot: dict, gin: str, deadline: float,
            workers: int, prog: Progress, total: int) -> dict[str, Any]:
    from corpus_tools.corpus import Corpus
    from mlgo.search import SearchConfig, run_search_task, search_corpus
    from mlgo.tune.deadline_pool import DeadlinePool

    corpus = Corpus.load(out / "corpus")
    order = sorted(corpus.modules, key=lambda m: -hot["modules"][m.name])

    def tick(pool: Any) -> None:
        prog.status = (f"[4/{total}] search: {pool.finished} of {len(order)} module(s) done; "
                       f"its share ends in {clock(deadline - time.monotonic())}")

    pool = DeadlinePool(run_search_task, deadline, workers=workers, tick=tick)
    s = search_corpus(order, out / "search", SearchConfig(passes=1, budget=o.module_budget),
                      pool, gin_config=gin, timeout=o.timeout, progress=False,
                      problem="regalloc")
    return {"modules": s.modules, "compiles": s.compiles, "failed": [m for m, _ in s.failed],
            "stopped_by_budget": pool.stopped, "unfinished": pool.unfinished,
            "default_objective": s.default_objective, "best_objective": s.best_objective,
            "change": (s.best_objective - s.default_objective) / s.default_objective
            if s.default_objective else 0.0}


def _train(out: Path, hot: dict, gin: str, workers: int, timeout: float) -> None:
    """Imitation of the search's best decisions on the searched modules."""
    from corpus_tools.corpus import Corpus
    from mlgo.problems import get_problem
    from mlgo.search import result_path, run_search_task
    from mlgo.training.pipeline import train
    from mlgo.workers.pool import make_pool

    quiet_tensorflow()
    corpus = Corpus.load(out / "corpus")
    corpus = corpus.subset(m.name for m in corpus.modules
                           if result_path(out / "search", m.name).is_file())
    train(get_problem("regalloc"), "imitation", corpus, out / "train",
          pool=make_pool(workers, None), gin_config=gin, validation_fraction=0.0,
          timeout=timeout, search=out / "search",
          search_pool=make_pool(workers, None, task_fn=run_search_task))
    if not (out / "train" / "policy").is_dir():
        raise MlgoError(f"{out / 'train'}: training wrote no policy")


def _evaluate(out: Path, gin: str, workers: int, timeout: float) -> dict[str, Any]:
    """The tuned policy's trace cost on every hot module against clang's own eviction: the
    change the tuned build should show in those modules on the training workload."""
    from corpus_tools.corpus import Corpus
    from mlgo.evaluate import collect, write_json
    from mlgo.workers.pool import make_pool
    from mlgo.workers.tasks import ModuleTask, PolicySpec

    corpus = Corpus.load(out / "corpus")
    policy = out / "train" / "policy"
    pool = make_pool(workers, None)
    try:
        rep = collect("regalloc", str(policy), "executed instructions (block trace)", corpus,
                      pool.run([ModuleTask("regalloc", m, PolicySpec.named(str(policy)),
                                           gin_config=gin, timeout=timeout)
                                for m in corpus.modules]))
    finally:
        pool.close()
    if not rep.modules:
        raise MlgoError(f"{policy}: no hot module compiled with the policy")
    write_json(rep, out / "eval.json")
    return {"change": rep.relative_change, "default": rep.default_total,
            "policy": rep.policy_total, "failed": [f["module"] for f in rep.failures]}


def _pgo_profile(o: RegallocTuneOptions, out: Path, exe: Path, prog: Progress) -> None:
    """The instrumented program run on the training workload (output checked), its raw
    profiles merged into OUT/pgo/default.profdata."""
    raw = out / "pgo" / "raw"
    if raw.exists():
        import shutil

        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    what = "the training workload on the instrumented (PGO) build"
    r = rp.run_workload(o.workload, exe, out / "runs" / "pgo-gen-train", what,
                        timeout=max(prog.left(), 600.0),
                        env={**os.environ, "LLVM_PROFILE_FILE": str(raw / "%p.profraw")})
    rp.check_output(r, _reference(out, "train"), what, o.workload)
    rp.merge_pgo_profile(raw, out / "pgo" / "default.profdata", o.timeout)
