"""The order of `mlgo tune`'s steps (mlgo/tune/__init__.py), the time budget shared among
them, and resuming: OUT/tune.json holds what defines the run (a re-run with other settings is
refused), OUT/steps/ the finished steps (progress.py).

The budget: every step but the search is timed when it runs, or estimated before it runs
(estimate_rest, from the baseline's compile times and decision counts and the plain build's and
tests' times); the search gets what is left of the budget after that reserve, and stops when it
is spent. A greedy search that ends early hands the rest of its share to the strong search,
continuing from its best decisions (the decision table gets the better of the two; the policy
learns from the greedy results, which carry to other code). Training is planned to fit
a share of the budget (fewer epochs when it would not) and stops at its deadline, so the
steps after it keep their time (learn.train_plan). The defaults: benchmarks/tune_budget_rule.md.
A re-tune (--previous) bounds the search's share by the earlier run's spend on what changed and
fine-tunes the earlier policy (mlgo/tune/incremental.py)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlgo.tune import decisions, incremental, learn, project, report
from mlgo.tune.progress import (
    IDENTITY,
    Progress,
    Steps,
    clock,
    quiet_tensorflow,
    run_tune,
)
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text
from mlgo_base.toolchain import clang_name

FLIPS = ("auto", "all", "inlined", "marginal")
SEARCH_STRATEGIES = ("strong", "greedy")

CONTINUE_MIN_SECONDS = 60.0  # of the search's share left for the strong search to continue
MORE_DIR = "search-more"  # the strong search's continuation of the greedy one
BEST_DIR = "search-best"  # per module the better of the two: the decision table's input


@dataclass
class TuneOptions:
    output: Path
    source: Path | None = None  # a CMake source directory ...
    compile_db: Path | None = None  # ... or a compile_commands.json
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_tests: bool = False
    test_command: str | None = None
    cmake_args: tuple[str, ...] = ()
    project: str | None = None
    previous: Path | None = None
    search_strategy: str = "greedy"  # mlgo/search.py's; "strong": mlgo/search_schedule.py's
    module_budget: int | None = None  # compiles per module (None: 0, no limit, for strong; 100)
    flips: str = "auto"  # greedy: auto flips 1 -> 0 only on C code, every call site with C++
    rounds: int = 1  # imitation rounds (later rounds search again, guided by the policy)
    time_budget: float = 3600.0
    workers: int | None = None
    ray: str | None = None
    timeout: float = 300.0
    gin_bindings: tuple[str, ...] = ()  # after own_project.gin's (e.g. fewer epochs)

    def identity(self) -> dict[str, Any]:
        """What must not change when a run is resumed (not the budget, workers or Ray)."""
        return {"source": str(self.source.resolve()) if self.source else None,
                "compile_db": str(self.compile_db.resolve()) if self.compile_db else None,
                "include": list(self.include), "exclude": list(self.exclude),
                "include_tests": self.include_tests, "test_command": self.test_command,
                "cmake_args": list(self.cmake_args), "project": self.project,
                "previous": str(self.previous.resolve()) if self.previous else None,
                "search_strategy": self.search_strategy, "module_budget": self.compile_budget,
                "flips": self.flips, "rounds": self.rounds,
                "gin_bindings": list(self.gin_bindings)}

    @property
    def compile_budget(self) -> int:
        """Search compiles per module: by default none for the strong search (its time budget
        decides), 100 for the greedy one."""
        if self.module_budget is not None:
            return self.module_budget
        return 0 if self.search_strategy == "strong" else 100


def check_options(o: TuneOptions) -> None:
    if (o.source is None) == (o.compile_db is None):
        raise MlgoError("give a CMake source directory or --compile-db FILE (one of them)")
    if o.compile_db is not None and o.test_command:
        raise MlgoError("--test-command needs a build tune can redo with the plugin: give the "
                        "CMake source directory instead of a compile database")
    if o.source is not None and not (o.source / "CMakeLists.txt").is_file():
        raise MlgoError(f"{o.source}: no CMakeLists.txt (a CMake source directory is needed; "
                        "for another build system give --compile-db compile_commands.json)")
    if o.compile_db is not None and not o.compile_db.is_file():
        raise MlgoError(f"{o.compile_db}: compilation database not found")
    if o.flips not in FLIPS:
        raise MlgoError(f"--flips {o.flips}: choose one of {', '.join(FLIPS)}")
    if o.search_strategy not in SEARCH_STRATEGIES:
        raise MlgoError(f"--search-strategy {o.search_strategy}: choose one of "
                        f"{', '.join(SEARCH_STRATEGIES)}")
    if o.search_strategy == "strong" and o.flips != "auto":
        raise MlgoError("--flips is for --search-strategy greedy (the strong search tries "
                        "every call site both ways)")
    if o.module_budget and o.module_budget < 3:
        raise MlgoError(f"--module-budget {o.module_budget}: at least 3 compiles (0: no limit)")
    if o.previous is not None and not (o.previous / IDENTITY).is_file():
        raise MlgoError(f"{o.previous}: not the output directory of an earlier `mlgo tune`")
    from mlgo.serving.cmake import BUILD_TYPE_FLAGS

    project.check_cmake_args(o.cmake_args, "MinSizeRel",
                             project.owned_cmake_variables(tuple(BUILD_TYPE_FLAGS)))


def _compile_seconds(base: dict[str, Any], workers: int) -> float:
    return sum(r["seconds"] for r in base["modules"].values()) / max(workers, 1)


def estimate_rest(base: dict[str, Any], done: dict[str, float], workers: int,
                  tests: bool, train: float) -> dict[str, float]:
    """Seconds each step after the search will take: training as planned (`train`:
    train_plan's seconds), the compile-bound ones from the baseline's compile times (a policy
    compile costs about 1.5 baseline compiles), the rebuild from the plain build, the tests
    from their run on the plain build."""
    compile_s = _compile_seconds(base, workers)
    # export: the policy's plugin and the decision table's one compile per module
    est = {"train": train, "eval": 5.0 + 1.5 * compile_s,
           "export": 45.0 + 1.5 * compile_s, "rebuild": 10.0 + 1.3 * done.get("plain", 60.0),
           "tests-plugin": 1.2 * done.get("tests-plain", 0.0) if tests else 0.0, "report": 5.0}
    return {k: v for k, v in est.items() if k not in done}


def tune(o: TuneOptions) -> dict[str, Any]:
    """Run (or resume) the tune into o.output; returns the report (report.py)."""
    check_options(o)
    return run_tune(o.output, o.identity(), o.time_budget,
                    lambda out, steps, prog: _tune(o, out, steps, prog))


def _tune(o: TuneOptions, out: Path, steps: Steps, prog: Progress) -> dict[str, Any]:
    from corpus_tools.corpus import Corpus
    from mlgo.workers.pool import make_pool

    workers = o.workers or max(1, os.cpu_count() or 2)
    cmake = o.source is not None
    src = o.source.resolve() if o.source else None
    name = o.project or (src.name if src else o.compile_db.resolve().parent.name)
    logs = out / "logs"
    total = 11

    def begin(n: int, step: str, what: str) -> dict | None:
        rec = steps.done(step)
        prog.set_status(f"[{n}/{total}] {what}" + (" (done earlier)" if rec else ""), say=True)
        return rec

    def fresh_sources(db: Path) -> tuple[list[project.Source], Path]:
        return project.sources(db, root=src)

    # 1. the plain -Oz build
    rec = begin(1, "plain", f"build at plain {clang_name()} -Oz" if cmake else "recompile the "
                f"compile database's compiles at plain {clang_name()} -Oz")
    if rec is None:
        t = time.monotonic()
        if cmake:
            init = out / "plain.cmake"
            atomic_write_text(init, project.plain_cache_text())
            db = project.cmake_build(src, out / "build-plain", init, o.cmake_args,
                                     logs / "build-plain.log", jobs=workers,
                                     timeout=max(prog.left(), 60.0))
        else:
            db = o.compile_db.resolve()
        srcs, root = fresh_sources(db)
        chosen = [s for s in srcs if s.relative is not None and
                  project.selected(s.relative, o.include, o.exclude, o.include_tests)]
        if not chosen:
            raise MlgoError(f"{db}: no compile is chosen for tuning (--include/--exclude, and "
                            "test paths are left out unless --include-tests)")
        if cmake:
            project.check_built_at_oz(db, chosen)
        else:
            project.check_levels_settable(db, srcs)
            project.recompile(srcs, out / "objects" / "plain", [], logs / "objects-plain.log",
                              jobs=workers, timeout=o.timeout, root=root)
        rec = steps.record("plain", time.monotonic() - t, {
            "db": str(db), "root": str(root), "tuned": [s.relative for s in chosen],
            "cxx": any(s.cxx for s in chosen)})
    db, root, tuned = Path(rec["db"]), Path(rec["root"]), set(rec["tuned"])
    srcs, _ = fresh_sources(db)
    prog.say(f"{len(tuned)} compile(s) to tune of {len(srcs)} ({'C++' if rec['cxx'] else 'C'})")

    # 2. the tests on the plain build: a suite that fails already is not ours to judge
    if o.test_command and begin(2, "tests-plain", "the tests on the plain build") is None:
        t = time.monotonic()
        project.run_tests(o.test_command, out / "build-plain", logs / "tests-plain.log",
                          "plain -Oz", max(prog.left(), 60.0))
        steps.record("tests-plain", time.monotonic() - t)

    # 3. the corpus
    if begin(3, "corpus", "extract the -Oz IR of the tuned compiles") is None:
        t = time.monotonic()
        raw = json.loads(db.read_text())
        chosen_idx = [s.index for s in srcs if s.relative in tuned]
        info = learn.extract([raw[i] for i in chosen_idx], root, name, out / "corpus", out,
                             jobs=workers, timeout=o.timeout)
        steps.record("corpus", time.monotonic() - t, info)
    corpus = Corpus.load(out / "corpus")
    prog.set_status("loading TensorFlow (training and export need it)")
    quiet_tensorflow()  # its start-up lines are noise
    gin = learn.gin_config(o.rounds, None, o.gin_bindings)

    # 4. baseline compiles, fingerprints
    base = begin(4, "baseline", f"compile the {len(corpus.modules)} modules as LLVM decides")
    if base is not None and not learn.has_decision_counts(base) and not steps.done("search"):
        prog.say("the baseline recorded by an earlier mlgo has no decision counts (the training "
                 "estimate needs them): compiling it again")
        base = None
    if base is None:
        t = time.monotonic()
        pool = make_pool(workers, o.ray)
        try:
            b = learn.baseline(corpus.modules, pool, gin, o.timeout)
        finally:
            pool.close()
        prints = learn.fingerprints(corpus, root, workers)
        atomic_write_text(out / "fingerprints.json", json.dumps(prints, indent=1) + "\n")
        base = steps.record("baseline", time.monotonic() - t, b)
    weights_path = None
    if base["comdat_weights"]:
        weights_path = out / "comdat_weights.json"
        atomic_write_text(weights_path, json.dumps(base["comdat_weights"]) + "\n")
        gin = learn.gin_config(o.rounds, weights_path, o.gin_bindings)
    flips = o.flips if o.flips != "auto" else ("all" if rec["cxx"] else "inlined")
    if o.search_strategy == "strong":
        flips = "all"
    search_dir = out / "search"

    # 4b. an earlier tune: what its policy keeps on this code, and its reusable results
    previous = None
    if o.previous is not None:
        previous = steps.done("previous")
        prog.set_status(f"[4/{total}] the earlier tune's policy on this code, and its "
                        "reusable search results", say=True)
        if previous is None:
            t = time.monotonic()
            prints = json.loads((out / "fingerprints.json").read_text())
            config = learn.search_config(o.search_strategy, o.compile_budget, flips, 1.0)
            search_prints = learn.search_fingerprints(corpus.modules, config, gin,
                                                      base["comdat_weights"])
            reuse = learn.reuse_results(o.previous.resolve(), prints, search_dir,
                                        {"passes": 1, "budget": o.compile_budget,
                                         "flips": flips, "comdat": bool(base["comdat_weights"]),
                                         "strategy": "strong" if o.search_strategy == "strong"
                                         else None}, search_prints)
            more = incremental.reuse_continuations(
                o.previous.resolve(), corpus.modules, reuse["reused"], out / MORE_DIR, gin,
                base["comdat_weights"])
            pool = make_pool(workers, o.ray)
            try:
                old = incremental.old_policy_evaluation(
                    corpus, o.previous.resolve(), prints, pool, gin, o.timeout,
                    out / "eval-previous-policy.json")
            finally:
                pool.close()
            previous = steps.record("previous", time.monotonic() - t, {
                "dir": str(o.previous.resolve()), "reused": len(reuse["reused"]),
                "continuations_reused": more,
                "modules": len(corpus.modules), "reused_modules": reuse["reused"],
                "why_none": reuse.get("why_none"), "old_policy": old})
        kept = 100 * previous["old_policy"]["linked_relative_change"]
        prog.say(f"the earlier policy alone (without its decision table) keeps {kept:+.2f}% "
                 f"as linked on this code; {previous['reused']} of {previous['modules']} "
                 "module(s) unchanged: their search results are reused"
                 + (f" (and their rows of its evaluation: {previous['old_policy']['evaluated']} "
                    "module(s) compiled with it)" if "evaluated" in previous["old_policy"]
                    else "")
                 + (f" (none: {previous['why_none']})" if previous.get("why_none") else ""))

    # 5. the search, in the time the other steps leave
    search = begin(5, "search", "search for decisions that beat LLVM's")
    if search is None:
        plan = learn.train_plan(sum(int(r.get("decisions", 0))
                                    for r in base["modules"].values()),
                                base, workers, prog.budget, o.gin_bindings)
        if previous is not None:
            plan = _fine_tune(plan, base, previous, workers)
        prog.say(f"training is planned for {plan['epochs']} epoch(s) over up to "
                 f"{plan['decisions']:,} decisions, about {clock(plan['seconds'])}"
                 + (f", 1 round, fine-tuning the earlier policy (its epochs in proportion "
                    f"to the {plan['changed_decisions']:,} decisions of changed and new "
                    "modules)" if plan.get("fine_tune") else
                    f" (fewer than the configured {plan['configured_epochs']}: at most "
                    f"{learn.TRAIN_SHARE:.0%} of the budget)"
                    if plan["epochs"] < plan["configured_epochs"] else ""))
        rest = estimate_rest(base, steps.seconds(), workers, bool(o.test_command),
                             plan["seconds"])
        reserve = 1.1 * sum(rest.values())
        deadline = prog.deadline - reserve
        share = deadline - time.monotonic()
        prog.remaining = max(share, 0.0) + reserve
        prog.say(f"the search gets {clock(max(share, 0))} of the {clock(prog.left())} left "
                 f"(the later steps are estimated at {clock(reserve)})")
        if share < 10:
            from mlgo.search import result_path

            if not any(result_path(search_dir, m.name).is_file() for m in corpus.modules):
                raise MlgoError(f"--time-budget {clock(prog.budget)} is too short for this "
                                f"project: the steps besides the search need about "
                                f"{clock(reserve + prog.elapsed())}")
        if previous is not None:  # a re-tune: what the earlier search spent on what changed
            changed = [m.name for m in corpus.modules if m.name not in previous["reused_modules"]]
            bound = incremental.search_bound(o.previous.resolve(), changed, name, workers)
            if bound["seconds"] < share:
                share = bound["seconds"]
                deadline = time.monotonic() + share
                prog.remaining = share + reserve
            prog.say(f"re-tune: {bound['changed']} changed or new module(s) ({bound['new']} new); "
                     f"the earlier search spent {clock(bound['earlier_seconds'])} on them: this "
                     f"search gets {clock(max(share, 0))}")
        t, started = time.monotonic(), time.time()
        order = learn.search_order(corpus.modules, base["modules"], share)

        def tick(finished: int) -> None:
            prog.remaining = max(deadline - time.monotonic(), 0.0) + reserve
            prog.status = (f"[5/{total}] search ({o.search_strategy}): {finished} of "
                           f"{len(order)} module(s) done in this run; its share ends at "
                           f"{clock(deadline - prog.start)}")

        tick(0)
        warm = None
        if previous is not None:
            warm = incremental.warm_search(
                [m for m in corpus.modules if m.name in set(changed)], o.previous.resolve(),
                out, name, base, search_dir,
                learn.search_config(o.search_strategy, o.compile_budget, flips, 1.0),
                deadline=deadline, workers=workers, ray=o.ray, gin=gin, timeout=o.timeout,
                say=prog.say)
        res = learn.run_search(order, search_dir, strategy=o.search_strategy,
                               module_budget=o.compile_budget, flips=flips,
                               deadline=deadline, workers=workers, ray=o.ray, gin=gin,
                               timeout=o.timeout, comdat_weights=base["comdat_weights"],
                               tick=tick)
        res["reused"] = previous["reused"] if previous else 0
        if warm is not None:
            res["warm"] = warm
            order = [m for m in order if m.name in changed]  # continue on changed code only
        left = deadline - time.monotonic()
        if (o.search_strategy == "greedy" and not res["stopped_by_budget"]
                and left >= CONTINUE_MIN_SECONDS):
            prog.say(f"the greedy search ended with {clock(left)} of its share left: the strong "
                     "search continues from its best decisions, where they gain most per second")

            def more(finished: int) -> None:
                prog.remaining = max(deadline - time.monotonic(), 0.0) + reserve
                prog.status = (f"[5/{total}] search, continued (strong, from the greedy best): "
                               f"{finished} module(s) done in this run; its share ends at "
                               f"{clock(deadline - prog.start)}")

            more(0)
            res["continuation"] = learn.run_continuation(
                order, search_dir, out / MORE_DIR, base, deadline=deadline, workers=workers,
                ray=o.ray, gin=gin, timeout=o.timeout, comdat_weights=base["comdat_weights"],
                tick=more)
        dirs = [search_dir, out / MORE_DIR]
        res["best"] = learn.best_results(corpus.modules, dirs, out / BEST_DIR)
        res["reach"] = learn.reach_curve(corpus.modules, dirs, base, started)
        res["share_seconds"] = round(share, 1)
        res["train_plan"] = plan
        search = steps.record("search", time.monotonic() - t, res)
    prog.say(f"search: {search['modules']} module(s) with a result, {search['compiles']} "
             f"compiles, best decisions {100 * -search['gain']:+.2f}% as linked"
             + (f" (stopped by the budget; {len(search['unfinished'])} unsearched)"
                if search["stopped_by_budget"] else ""))
    if "continuation" in search:
        c, b = search["continuation"], search["best"]
        prog.say(f"continued: {c['compiles']} compiles on {c['modules']} module(s); "
                 f"{b['improved']} improved by {b['bytes_beyond_first']:,.0f} bytes; the "
                 f"decision table's decisions {100 * -b['gain']:+.2f}% as linked")
    plan = search.get("train_plan") or learn.train_plan(
        learn.searched_decisions(corpus.modules, search_dir), base, workers, prog.budget,
        o.gin_bindings)
    if previous is not None and not plan.get("fine_tune"):
        plan = _fine_tune(plan, base, previous, workers)
    _update_eta(prog, base, steps, workers, o, plan["seconds"])

    # 6. imitation (of the greedy results: see the module docstring)
    trained = begin(6, "train", ("fine-tune the earlier policy on the best decisions (1 "
                                 "round, " if plan.get("fine_tune") else
                                 "imitate the best decisions (residual policy, ")
                    + f"{plan['epochs']} epoch(s))")
    if trained is None:
        t = time.monotonic()
        warm = o.previous.resolve() / "train" / "policy" if o.previous else None
        after = estimate_rest(base, steps.seconds(), workers, bool(o.test_command), 0.0)
        train_deadline = prog.deadline - 1.1 * sum(v for k, v in after.items() if k != "train")
        prog.say(f"training stops by {clock(train_deadline - prog.start)} at the latest "
                 "(the last completed epoch is kept)")
        train_gin = learn.gin_config(o.rounds, weights_path,
                                     [*o.gin_bindings,
                                      f"imitation.ImitationConfig.epochs = {plan['epochs']}",
                                      f"imitation.ImitationConfig.rounds = {plan['rounds']}"])
        held_out = learn.held_out_modules(corpus.modules, base["modules"], name)
        if held_out:
            prog.say(f"{len(held_out)} module(s) are held out of training, to judge the policy "
                     "on code it did not learn from")
        skipped = set(held_out)
        kept = [m.name for m in corpus.modules
                if decisions.relative_path(m.name, name) not in skipped]
        info = learn.train(corpus.subset(kept), search_dir, out / "train", gin=train_gin,
                           workers=workers, ray=o.ray, timeout=o.timeout, warmstart=warm,
                           deadline=train_deadline)
        trained = steps.record("train", time.monotonic() - t,
                               {**info, "plan": plan, "held_out": held_out})
    prog.say("training: " + training_line(trained))
    policy = out / "train" / "policy"
    _update_eta(prog, base, steps, workers, o, plan["seconds"])

    # 7. evaluation on the corpus
    evaluation = begin(7, "eval", "the policy on the tuned modules against -Oz")
    if evaluation is None:
        t = time.monotonic()
        pool = make_pool(workers, o.ray)
        try:
            ev = learn.evaluate(corpus, policy, pool, gin, o.timeout, out / "eval.json")
        finally:
            pool.close()
        evaluation = steps.record("eval", time.monotonic() - t, ev)
    held_out = set(trained.get("held_out", []))
    unseen = decisions.change_on(out / "eval.json", name, held_out.__contains__)
    prog.say(f"policy: {100 * evaluation['linked_relative_change']:+.2f}% .text as linked on "
             "the tuned modules"
             + (f"; {100 * unseen[0]:+.2f}% on the {unseen[1]} held out of its training"
                if held_out and unseen else ""))
    if previous is not None:
        old = previous["old_policy"]
        if old["linked_policy"] < evaluation["linked_policy"]:
            # Retraining lost ground on this code (e.g. too little search time for the changed
            # modules): the earlier policy serves it better, so it is the one exported.
            policy = out / "earlier-policy"
            if not policy.is_dir():
                learn.copy_tree(o.previous.resolve() / "train" / "policy", policy)
            evaluation = {**old, "policy": "earlier", "retrained": evaluation}
            prog.say(f"the earlier policy is smaller on this code "
                     f"({100 * old['linked_relative_change']:+.2f}% against the retrained one's "
                     f"{100 * evaluation['retrained']['linked_relative_change']:+.2f}%): "
                     "it is the one exported")
    _update_eta(prog, base, steps, workers, o, plan["seconds"])

    # 8. export, plugin, flags
    exported = begin(8, "export", "export the policy, name the searched decisions' call sites "
                     "(decision table), build the plugin, write the flags files")
    if exported is None:
        t = time.monotonic()
        pool = make_pool(workers, o.ray, task_fn=decisions.run_replay_task)
        try:
            # Per module the better of the greedy result and its continuation (older runs:
            # the greedy results alone).
            table_dir = out / BEST_DIR if "best" in search else search_dir
            table, table_stats = decisions.build_table(
                corpus.modules, table_dir, name, pool, gin=gin, timeout=o.timeout,
                previous=o.previous.resolve() if o.previous else None)
        finally:
            pool.close()
        prog.say(decisions.summary_line(table_stats))
        earlier = evaluation.get("policy") == "earlier"
        beyond = decisions.policy_beyond_table(
            out / ("eval-previous-policy.json" if earlier else "eval.json"),
            set(table["modules"]), name,
            set(_earlier_held_out(o.previous.resolve()) if earlier else held_out))
        served = policy if beyond["serve"] == "policy" else decisions.LLVM_RULE
        if beyond["serve"] != "policy":
            prog.say(f"the policy changes .text by {100 * beyond['change']:+.2f}% on the "
                     f"{beyond['modules']} tuned module(s) {decisions.basis_words(beyond)}: "
                     f"outside the table the plugin serves LLVM's own rule "
                     f"({decisions.LLVM_RULE}) instead")
        ex = learn.export(policy, out, decisions.write(out, table), served=str(served))
        ex.update(learn.write_flags(Path(ex["plugin"]), Path(served), out))
        ex["table"] = {**table_stats, "beyond": beyond}
        exported = steps.record("export", time.monotonic() - t, ex)
    plugin = Path(exported["plugin"])
    _update_eta(prog, base, steps, workers, o, plan["seconds"])

    # 9. the build with the plugin
    rebuilt = begin(9, "rebuild", "build again with the plugin")
    if rebuilt is None:
        t = time.monotonic()
        # Which decisions the table answered, per module (its hit rate): the plugin appends a
        # line per module to the file MLGO_DECISION_SUMMARY names, in every compile's process.
        served = logs / "rebuild-decisions.tsv"
        served.unlink(missing_ok=True)
        before = os.environ.get("MLGO_DECISION_SUMMARY")
        os.environ["MLGO_DECISION_SUMMARY"] = str(served)
        try:
            if cmake:
                # From scratch: a build directory left by an earlier export (or a killed
                # rebuild) would keep objects compiled with another plugin at the same path.
                shutil.rmtree(out / "build-plugin", ignore_errors=True)
                pdb = project.cmake_build(src, out / "build-plugin", out / "mlgo.cmake",
                                          o.cmake_args, logs / "build-plugin.log", jobs=workers,
                                          timeout=max(prog.left(), 60.0))
            else:
                pdb = None
                project.recompile(srcs, out / "objects" / "plugin", [f"-fpass-plugin={plugin}"],
                                  logs / "objects-plugin.log", jobs=workers, timeout=o.timeout,
                                  root=root)
        finally:
            if before is None:
                del os.environ["MLGO_DECISION_SUMMARY"]
            else:
                os.environ["MLGO_DECISION_SUMMARY"] = before
        from mlgo.serving.decision_table import load_table

        hits = decisions.hit_rates(served, load_table(out / decisions.TABLE_FILE))
        rebuilt = steps.record("rebuild", time.monotonic() - t,
                               {"db": str(pdb) if pdb else None, "table_hits": hits})
    _update_eta(prog, base, steps, workers, o, plan["seconds"])

    # 10. the tests on the plugin build
    tests: dict[str, Any] = {"command": o.test_command}
    if o.test_command:
        if begin(10, "tests-plugin", "the tests on the plugin build") is None:
            t = time.monotonic()
            project.run_tests(o.test_command, out / "build-plugin", logs / "tests-plugin.log",
                              "plugin", max(prog.left(), 60.0))
            steps.record("tests-plugin", time.monotonic() - t)
        secs = steps.seconds()
        tests.update(plain_seconds=secs["tests-plain"], plugin_seconds=secs["tests-plugin"])

    # 11. the report
    prog.set_status(f"[11/{total}] measure the two builds and write the report", say=True)
    t = time.monotonic()
    doc = _measure_and_report(o, out, name, cmake, srcs, tuned, rebuilt, steps, search,
                              evaluation, tests, previous, exported, time.monotonic() - t,
                              prog.elapsed())
    prog.remaining = 0.0
    return doc


def _earlier_held_out(previous: Path) -> list[str]:
    """The modules an earlier tune's training held out (none recorded by older tunes)."""
    return list((Steps(previous).done("train") or {}).get("held_out", []))


def _fine_tune(plan: dict, base: dict, previous: dict, workers: int) -> dict[str, Any]:
    return incremental.fine_tune_plan(plan, sum(
        int(r.get("decisions", 0)) for m, r in base["modules"].items()
        if m not in previous["reused_modules"]), base, workers)


def _update_eta(prog: Progress, base: dict, steps: Steps, workers: int, o: TuneOptions,
                train: float) -> None:
    prog.remaining = sum(estimate_rest(base, steps.seconds(), workers,
                                       bool(o.test_command), train).values())


def training_line(trained: dict[str, Any]) -> str:
    """How many epochs training ran, per round, and whether its deadline stopped it."""
    rounds = trained.get("rounds")
    if not rounds:
        return "done (no epoch count recorded)"
    ran = ", ".join(f"{r['epochs']} of {r['of']}" for r in rounds)
    return (f"{len(rounds)} of {trained.get('planned_rounds', len(rounds))} round(s), epochs "
            f"{ran}" + (" (stopped by its deadline: the last completed epoch's policy is kept)"
                        if trained.get("stopped_by_deadline") else ""))


def _measure_and_report(o: TuneOptions, out: Path, name: str, cmake: bool,
                        srcs: list[project.Source], tuned: set[str], rebuilt: dict,
                        steps: Steps, search: dict, evaluation: dict, tests: dict,
                        previous: dict | None, exported: dict, t_report: float,
                        run_seconds: float) -> dict[str, Any]:
    from mlgo.compiler.measure import text_size

    t = time.monotonic()
    if cmake:
        binaries = (project.linked_binaries(out / "build-plain"),
                    project.linked_binaries(out / "build-plugin"))
        psrcs, _ = project.sources(Path(rebuilt["db"]), root=o.source.resolve())
        objects = (project.object_sizes(srcs), project.object_sizes(psrcs))
    else:
        binaries = None
        objects = tuple({p.relative_to(d).as_posix()[:-2]: int(text_size(p))
                         for p in sorted(d.rglob("*.o"))}
                        for d in (out / "objects" / "plain", out / "objects" / "plugin"))
    secs = steps.seconds()
    secs["report"] = t_report + time.monotonic() - t
    policy = out / ("earlier-policy" if evaluation.get("policy") == "earlier" else "train/policy")
    outputs = {"report": str(out / "report.md"), "policy": str(policy),
               "decision table": str(out / decisions.TABLE_FILE),
               "plugin": exported["plugin"], "cmake initial cache": exported["cmake"],
               "compile flags": exported["flags"], "build-system environment": exported["env"]}
    doc = report.build_report(
        project=name, kind=f"CMake source directory {o.source}" if cmake
        else f"compile database {o.compile_db}", budget=o.time_budget, steps=secs,
        binaries=binaries, test_binary=project.is_test_binary, objects=objects, tuned=tuned,
        search=search, evaluation=evaluation, tests=tests, training=steps.done("train"),
        previous=({"dir": previous["dir"], "reused": previous["reused"],
                   "modules": previous["modules"], "old_policy": previous["old_policy"]}
                  if previous else None), outputs=outputs, table=_table_figures(out, exported,
                                                                                rebuilt))
    doc["options"] = {**asdict(o), "output": str(o.output), "source": str(o.source),
                      "compile_db": str(o.compile_db), "previous": str(o.previous)}
    doc["run_seconds"] = run_seconds + time.monotonic() - t  # this invocation's wall time
    report.write(doc, out)
    steps.record("report", secs["report"])
    return doc


def _table_figures(out: Path, exported: dict, rebuilt: dict) -> dict[str, Any] | None:
    """The decision table's stats, its modules' paths and its hits in the rebuild."""
    from mlgo.serving.decision_table import load_table

    if "table" not in exported:
        return None
    keys = sorted(load_table(out / decisions.TABLE_FILE))
    return {**exported["table"], "keys": keys, "hits": rebuilt.get("table_hits")}
