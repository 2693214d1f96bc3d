"""`mlgo tune --problem regalloc`: the register allocator's eviction tuned for one program's own
workload, and checked on another input (docs/tune.md).

Steps (each recorded under OUT/steps/ when it ends, so a re-run resumes after the last one):
  1. plain      the CMake build with mlgo-clang serving no policy (regalloc_program.py)
  2. runs-plain the training workload natively, then both workloads under callgrind: the
                reference outputs (a workload whose two plain runs differ is refused: its output
                cannot tell a broken build from a changed input)
  3.-5.         a policy for the plain build's code (regalloc_policy.py): corpus (the block
                profile of the training run per module, the hot modules' compiles extracted at
                the build's own flags), search (their eviction decisions from `default-rule`,
                scored by the trace reward), train (one imitation round of the search's best: a
                residual network on `default-rule`) and eval (its trace cost)
  6. tuned      the build with that policy; both workloads under callgrind, outputs checked
  7. select     per hot module, the instructions its functions executed on the training
                workload with the policy against the plain build (the two runs of step 2 and
                6), beside the reward's forecast; the modules where the policy measurably
                helped are kept (regalloc_select.py); the check workload is not read
  8. selected   the build serving the policy in the kept modules only (clang's own eviction
                elsewhere); both workloads under callgrind
  9. pgo-gen    clang's instrumented build run on the training workload; llvm-profdata merge
 10. pgo        the profile-use build; both workloads under callgrind
 11.-13.        a policy for the PGO build's code, the same steps on the PGO build's training
                run and its compiles (which read the profile): pgo-corpus, pgo-search,
                pgo-train, pgo-eval, under OUT/pgo-policy
 14. pgo-tuned  the profile-use build with that policy; both workloads under callgrind
 15.-16.        pgo-select and pgo-selected: steps 7 and 8 for that policy against PGO alone
 17. report     OUT/report.md and report.json (regalloc_report.py)

With PGO on, the plain build's search gets half of the time the other steps leave, the PGO
build's search the rest.

The check workload is given before tuning starts and never feeds the profile, the search or the
training: its figures are the held-out ones."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgo.tune import regalloc_policy as rpol
from mlgo.tune import regalloc_program as rp
from mlgo.tune import regalloc_select as rsel
from mlgo.tune.progress import (
    Progress,
    Steps,
    clock,
    run_tune,
)
from mlgo.tune.regalloc_policy import PROFILE_USE, Basis
from mlgo_base.errors import MlgoError

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
    from mlgo.tune.project import check_cmake_args, owned_cmake_variables

    # The build type and its flags stay the user's to set (the same in every build compared);
    # mlgo sets the compilers and the base flags (block addresses, PGO).
    check_cmake_args(o.cmake_args, "Release", owned_cmake_variables(())
                     - {"CMAKE_BUILD_TYPE", "CMAKE_MODULE_LINKER_FLAGS"})


def tune_regalloc(o: RegallocTuneOptions) -> dict[str, Any]:
    """Run (or resume) the tune into o.output; returns the report (regalloc_report.py)."""
    check_options(o)
    return run_tune(o.output, o.identity(), o.time_budget,
                    lambda out, steps, prog: _tune(o, out, steps, prog))


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
    total = 17 if o.pgo else 9

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

    def later() -> dict[str, float]:
        """The estimated seconds of the steps not done yet (but the searches)."""
        hot = steps.done("corpus") or {"modules": {}}
        return _estimate_rest(steps.seconds(), runs, len(hot["modules"]), o.pgo)

    def rest() -> float:
        return sum(later().values())

    def build_and_measure(n: int, variant: str, spec: rp.Build) -> dict[str, Any]:
        if begin(n, variant, f"build {variant}; both workloads under callgrind") is None:
            t = time.monotonic()
            res = measure(variant, build(spec))
            steps.record(variant, time.monotonic() - t, res)
        rec = steps.done(variant)
        prog.remaining = rest()
        prog.say(f"{variant}: " + ", ".join(
            f"{w} {100 * (rec[w]['instructions'] / runs[w]['instructions'] - 1):+.2f}%"
            for w in WORKLOADS) + " instructions against plain")
        return rec

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

    # 3.-5. the policy for the plain build's code
    plain = Basis("plain", out / "build-plain", exe, out / "runs" / "plain-train-callgrind", out)
    made = {"plain": _policy(o, plain, "", (3, 4, 5, total), name, src, workers, steps, prog,
                             later)}
    prog.remaining = rest()

    def select_and_measure(n: int, basis: Basis, base: str, tuned: str, pgo_flag: str = ""
                           ) -> None:
        """Steps n and n+1: the measured selection of `basis`'s policy (its build `tuned`
        against `base`, training workload only) and the build serving it where it helped."""
        prefix = "" if basis.label == "plain" else "pgo-"
        if begin(n, prefix + "select", f"measure the policy's effect per hot module ({tuned} "
                 f"against {base}, training workload); keep the modules it helped") is None:
            t = time.monotonic()
            res = rsel.measure_selection(basis, out / f"build-{tuned}", made[basis.label]["hot"],
                                         name, src, measured[base]["train"],
                                         measured[tuned]["train"])
            steps.record(prefix + "select", time.monotonic() - t, res)
        sel = steps.done(prefix + "select")
        made[basis.label]["selection"] = sel
        for m, e in sel["effects"].items():
            fc = e["forecast_change"]
            prog.say(f"  {m}: measured {100 * e['measured_change']:+.2f}% on the training "
                     "workload" + (f", the reward forecast {100 * fc:+.2f}%" if fc is not None
                                   else "") + (" (kept)" if m in sel["selected"] else ""))
        variant = prefix + "selected"
        if not sel["selected"]:
            # Nothing helped: the selection serves no policy, which is the build measured as
            # `base` (not built again).
            if begin(n + 1, variant, f"no module kept: the {variant} build is the {base} "
                     "build") is None:
                steps.record(variant, 0.0, {**measured[base], "same_as": base})
            measured[variant] = steps.done(variant)
            return
        measured[variant] = build_and_measure(n + 1, variant, rp.Build(
            variant, str(basis.policy), pgo_flag, tuple(sel["sources"])))

    # 6. the tuned build, 7.-8. the policy served where it measurably helped
    measured = {"plain": runs, "tuned": build_and_measure(6, "tuned", rp.Build(
        "tuned", str(plain.policy)))}
    select_and_measure(7, plain, "plain", "tuned")
    if o.pgo:
        # 9.-10. PGO alone
        profile_use = f"{PROFILE_USE}{out / 'pgo' / 'default.profdata'}"
        if begin(9, "pgo-gen", "clang's instrumented build run on the training "
                 "workload") is None:
            t = time.monotonic()
            _pgo_profile(o, out, build(rp.Build("pgo-gen", "default",
                                                "-fprofile-instr-generate")), prog)
            steps.record("pgo-gen", time.monotonic() - t)
        measured["pgo"] = build_and_measure(10, "pgo", rp.Build("pgo", "default", profile_use))
        # 11.-13. a policy for the PGO build's code, 14. the PGO build with it, 15.-16. served
        # where it measurably helped
        pgo = Basis("pgo", out / "build-pgo", rp.program_in(out / "build-pgo", o.program),
                    out / "runs" / "pgo-train-callgrind", out / "pgo-policy", profile_use)
        made["pgo"] = _policy(o, pgo, "pgo-", (11, 12, 13, total), name, src, workers, steps,
                              prog, later)
        measured["pgo-tuned"] = build_and_measure(14, "pgo-tuned", rp.Build(
            "pgo-tuned", str(pgo.policy), profile_use))
        select_and_measure(15, pgo, "pgo", "pgo-tuned", profile_use)

    # the report
    prog.set_status(f"[{total}/{total}] write the report", say=True)
    doc = write_report(out, o, name, made, measured, steps.seconds(), prog.elapsed())
    prog.remaining = 0.0
    return doc


def _policy(o: RegallocTuneOptions, basis: Basis, prefix: str, numbers: tuple[int, ...],
            name: str, src: Path, workers: int, steps: Steps, prog: Progress,
            estimate: Any) -> dict[str, Any]:
    """The steps making a policy for `basis`'s code (PREFIXcorpus, PREFIXsearch, PREFIXtrain,
    PREFIXeval): {"hot", "search", "evaluation"} as recorded."""
    n_corpus, n_search, n_train, total = numbers
    on = f"the {basis.label} build's code"

    def begin(n: int, step: str, what: str) -> dict | None:
        rec = steps.done(prefix + step)
        prog.set_status(f"[{n}/{total}] {what}" + (" (done earlier)" if rec else ""), say=True)
        return rec

    hot = begin(n_corpus, "corpus", f"profile the training run of the {basis.label} build per "
                "module; extract the hot modules")
    if hot is None:
        t = time.monotonic()
        res = rpol.hot_corpus(o, basis, name, src, workers)
        hot = steps.record(prefix + "corpus", time.monotonic() - t, res)
    prog.say(f"{len(hot['modules'])} hot module(s) of {on}: " + ", ".join(
        f"{m} ({100 * s:.1f}%)" for m, s in hot["modules"].items()))
    gin = rpol.gin(basis.base / "profile.json", o.gin_bindings)

    search = begin(n_search, "search", f"search eviction decisions of the hot modules "
                   f"({on}, trace reward)")
    if search is None:
        later = estimate()
        reserve = 1.2 * sum(later.values())
        share = prog.deadline - reserve - time.monotonic()
        if basis.label == "plain" and o.pgo:
            share /= 2  # the other half for the search on the PGO build's code
        deadline = time.monotonic() + share
        prog.remaining = max(prog.deadline - time.monotonic(), 0.0)
        prog.say(f"the search on {on} gets {clock(max(share, 0))} of the {clock(prog.left())} "
                 f"left (the later steps are estimated at {clock(reserve)})")
        if share < 10:
            raise MlgoError(f"--time-budget {clock(prog.budget)} is too short for this "
                            f"program: the steps besides the search need about "
                            f"{clock(reserve + prog.elapsed())}")

        def status(pool: Any, modules: int) -> None:
            prog.status = (f"[{n_search}/{total}] search ({on}): {pool.finished} of {modules} "
                           f"module(s) done; its share ends in "
                           f"{clock(deadline - time.monotonic())}")

        t = time.monotonic()
        res = rpol.search(o, basis, hot, gin, deadline, workers, status)
        search = steps.record(prefix + "search", time.monotonic() - t, res)
    prog.say(f"search ({on}): {search['modules']} module(s) with a result, "
             f"{search['compiles']} compiles, trace cost {100 * search['change']:+.2f}% on the "
             "searched modules")
    if not search["modules"]:
        raise MlgoError(f"{basis.search}: no hot module has a search result (failures in "
                        f"{basis.search / 'failures.json'})")

    if begin(n_train, "train", f"imitate the best decisions on {on} (a residual policy on "
             "default-rule)") is None:
        t = time.monotonic()
        rpol.train(basis, gin, workers, o.timeout)
        steps.record(prefix + "train", time.monotonic() - t)
    ev = steps.done(prefix + "eval")
    if ev is None:
        prog.set_status(f"the policy on the hot modules of {on} against clang's eviction "
                        "(trace cost)")
        t = time.monotonic()
        res = rpol.evaluate(basis, gin, workers, o.timeout)
        ev = steps.record(prefix + "eval", time.monotonic() - t, res)
    prog.say(f"policy for {on}: trace cost {100 * ev['change']:+.2f}% on its hot modules (the "
             f"search's best: {100 * search['change']:+.2f}%)")
    return {"hot": hot, "search": search, "evaluation": ev, "policy": str(basis.policy)}


def _estimate_rest(done: dict[str, float], runs: dict, modules: int, pgo: bool
                   ) -> dict[str, float]:
    """Seconds each step after the search on the plain build's code will take, from the plain
    build's and runs' times (the search on the PGO build's code is not counted: it gets what
    is left)."""
    b = done.get("plain", 60.0)
    cg = sum(runs[w]["seconds"] for w in WORKLOADS)
    est = {"train": 45.0 + 15.0 * modules, "eval": 10.0 + 5.0 * modules,
           "tuned": 1.3 * b + cg + 20, "select": 5.0 + 2.0 * modules,
           "selected": 1.3 * b + cg + 20}
    if pgo:
        est.update({"pgo-gen": 1.3 * b + 3 * runs["train"].get("native_seconds", 1.0) + 10,
                    "pgo": 1.3 * b + cg + 20, "pgo-corpus": done.get("corpus", 60.0),
                    "pgo-train": est["train"], "pgo-eval": est["eval"],
                    "pgo-tuned": 1.3 * b + cg + 20, "pgo-select": est["select"],
                    "pgo-selected": 1.3 * b + cg + 20})
    return {k: v for k, v in est.items() if k not in done}


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
