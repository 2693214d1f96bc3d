"""The learning half of `mlgo tune`: the corpus of the tuned compiles, their baseline compiles,
the search (`run_search`, the one place the search is called, and `run_continuation`, the strong
search from its results), imitation, evaluation, export,
the reuse of an earlier tune's search results for modules whose code did not change, and the
planning of training's time (train_plan: its cost grows with decisions x epochs x rounds).

A module's fingerprint (for that reuse) is the SHA-256 of its IR as text without its debug
information (`opt --strip-debug`), with the source root's path replaced by a placeholder and the
ModuleID/source_filename lines dropped, plus its .cmd: two releases unpacked in different
directories give the same fingerprint for an unchanged file, so does a file whose code moved to
other lines (an edited comment, a header grown above it: only debug locations change, and they
change no inlining decision nor .text byte), and any change to its code or its compile flags
gives another. The fingerprint starts with its recipe, FINGERPRINT_RECIPE, so that an earlier
tune's fingerprints made another way are not taken for changed code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from corpus_tools.corpus import Corpus, Module
from mlgo_base import process, toolchain
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_bytes, atomic_write_text

# Compiles a module's search takes, for planning only (C searches of 1 -> 0 flips usually
# stop well before the per-module budget).
SEARCH_COMPILES_GUESS = 10
# Training's cost: full-batch steps of own_project.gin's network took 29-31 us per decision and
# epoch at 500-16,000 decisions (load 2.6-3.8), about 4 ms per step besides; muparser's training
# (15,237 decisions, 1,500 epochs: 897 s at load 3-8, its rollout included) gives about 38 us.
TRAIN_SECONDS_PER_DECISION_EPOCH = 40e-6
TRAIN_SECONDS_PER_EPOCH = 5e-3
TRAIN_FIXED_SECONDS = 40.0  # TensorFlow, the vocab
# The most of the budget training is planned for when --gin_bindings does not set the epochs;
# never fewer than MIN_EPOCHS. The decision table serves the searched modules, so the policy
# answers only outside it, and search time is worth more than epochs: on yaml-cpp 0.7.0 the
# search gained about 0.13% of .text a minute in its greedy phase and its continuation alike
# (2.63% in 20.2 minutes, 1.87% in 14.5) while training took 12 (benchmarks/RESULTS.md).
TRAIN_SHARE = 0.10
MIN_EPOCHS = 100
OWN_PROJECT_GIN = Path(__file__).resolve().parent.parent / "problems" / "inlining" / "own_project.gin"
# The modules training never sees, so that whether the policy should answer outside the
# decision table (tests, new code) is judged on code it did not learn from: this share of the
# modules that ask decisions, when at least HOLD_OUT_MIN_MODULES do.
HOLD_OUT_FRACTION = 0.2
HOLD_OUT_MIN_MODULES = 3


def gin_config(rounds: int, comdat_weights: Path | None, bindings: Sequence[str] = ()) -> str:
    """The imitation settings for one project's own code (own_project.gin), `rounds` rounds,
    COMDAT weights when the code has COMDAT groups; applied to this process, returned as text
    for the workers."""
    from mlgo.configurables import default_gin_file
    from mlgo.training.gin_config import parse_gin

    files = [f for f in (default_gin_file("inlining", "imitation"), OWN_PROJECT_GIN) if f]
    extra = [f"imitation.ImitationConfig.rounds = {rounds}"]
    if comdat_weights is not None:
        extra.append(f"inlining.InliningForSize.comdat_weights = '{comdat_weights}'")
    return parse_gin(files, [*extra, *bindings])


def extract(db_entries: list[dict], root: Path, project: str, out: Path, work: Path, *,
            jobs: int, timeout: float) -> dict[str, Any]:
    """The -Oz IR of the chosen compiles (`db_entries`: compile_commands.json entries) into
    the corpus `out`."""
    from corpus_tools.extract import extract_compile_db

    db = work / "tuned_compile_commands.json"
    atomic_write_text(db, json.dumps(db_entries, indent=1) + "\n")
    summary = extract_compile_db(db, out, project=project, root=root, jobs=jobs, timeout=timeout,
                                 progress=False, opt_level="-Oz")
    corpus = Corpus.load(out) if (out / "corpus_description.json").is_file() else None
    if corpus is None or not corpus.modules:
        first = summary.failed[0].stderr.strip().splitlines()[:1] if summary.failed else []
        raise MlgoError(f"{db}: no module could be extracted"
                        + (f" ({first[0]})" if first else ""))
    return {"modules": len(corpus.modules), "failed": [f.source for f in summary.failed]}


def baseline(modules: Sequence[Module], pool: Any, gin: str, timeout: float) -> dict[str, Any]:
    """Each module compiled once with LLVM's own decisions: {module: {size, seconds,
    decisions}} and the COMDAT weights (1/n per text group defined by n modules). `decisions`
    (the inlining decisions LLVM asks, counted by a second compile that answers them as LLVM
    does) sizes the training estimate; `seconds` is the plain compile's."""
    from mlgo.compiler.measure import comdat_weights
    from mlgo.problems.inlining.problem import LLVM_DEFAULT
    from mlgo.workers.tasks import ModuleTask, PolicySpec

    tasks = [ModuleTask("inlining", m, PolicySpec(builtin="default"), gin_config=gin,
                        timeout=timeout) for m in modules]
    rows, groups, failed = {}, [], []
    for o in pool.run(tasks):
        if not o.ok:
            failed.append(o.module)
            continue
        rows[o.module] = {"size": o.default_total, "seconds": round(o.seconds, 3)}
        groups.append({k: d for k, (_, d) in o.per_function.items()})
    if not rows:
        raise MlgoError("no module of the corpus compiles (see the errors above)")
    counted = [ModuleTask("inlining", m, PolicySpec(builtin=LLVM_DEFAULT), gin_config=gin,
                          timeout=timeout) for m in modules if m.name in rows]
    for o in pool.run(counted):
        if not o.ok:
            raise MlgoError(f"{o.module}: compiles as LLVM decides, but not when its decisions "
                            f"are asked for: {o.error.strip().splitlines()[0] if o.error else '?'}")
        rows[o.module]["decisions"] = int(o.num_decisions)
    return {"modules": rows, "failed": failed, "comdat_weights": comdat_weights(groups)}


def has_decision_counts(base: dict[str, Any]) -> bool:
    """Whether a baseline record counts each module's decisions (older tunes' do not)."""
    return all("decisions" in r for r in base["modules"].values())


def train_seconds(decisions: int, compile_s: float, epochs: int, rounds: int) -> float:
    """Training's estimate: fixed costs, the policy's rollout on the modules (recorded: about
    1.5 baseline compiles), the epochs over the decisions, each later round's guided search."""
    return (TRAIN_FIXED_SECONDS + 1.5 * compile_s
            + rounds * epochs * (TRAIN_SECONDS_PER_EPOCH
                                 + TRAIN_SECONDS_PER_DECISION_EPOCH * decisions)
            + (rounds - 1) * SEARCH_COMPILES_GUESS * compile_s)


def train_plan(decisions: int, base: dict[str, Any], workers: int, budget: float,
               bindings: tuple[str, ...]) -> dict[str, Any]:
    """The epochs training runs and its estimated seconds, with the imitation settings gin
    holds now: the configured epochs, or fewer when they would take more than TRAIN_SHARE of
    the budget (never fewer than MIN_EPOCHS; never when --gin_bindings sets the epochs)."""
    from mlgo.training.imitation import ImitationConfig

    cfg = ImitationConfig()
    compile_s = sum(r["seconds"] for r in base["modules"].values()) / max(workers, 1)
    epochs = cfg.epochs
    pinned = any("ImitationConfig.epochs" in b for b in bindings)
    cap = TRAIN_SHARE * budget
    if not pinned and train_seconds(decisions, compile_s, epochs, cfg.rounds) > cap:
        per_epoch = cfg.rounds * (TRAIN_SECONDS_PER_EPOCH
                                  + TRAIN_SECONDS_PER_DECISION_EPOCH * decisions)
        fit = int((cap - train_seconds(decisions, compile_s, 0, cfg.rounds)) / per_epoch)
        epochs = min(epochs, max(MIN_EPOCHS, fit))
    return {"decisions": decisions, "epochs": epochs, "configured_epochs": cfg.epochs,
            "rounds": cfg.rounds,
            "seconds": round(train_seconds(decisions, compile_s, epochs, cfg.rounds), 1)}


def searched_decisions(modules: Sequence[Module], search_dir: Path) -> int:
    """The decisions training will see: those of the modules with a search result."""
    from mlgo.search_store import load_result, result_path

    return sum(int(load_result(result_path(search_dir, m.name), m.name).num_decisions)
               for m in modules if result_path(search_dir, m.name).is_file())


def search_order(modules: Sequence[Module], base: dict[str, dict],
                 seconds_per_worker: float = float("inf")) -> list[Module]:
    """Modules in the order the search takes them: most -Oz bytes per second of compile
    first, so a budget that runs out leaves the modules least worth a compile; but a module
    whose search would not fit in a worker's share of the time (at SEARCH_COMPILES_GUESS
    compiles) goes last, since a search cut short keeps nothing."""
    def key(m: Module) -> tuple[bool, float]:
        b = base.get(m.name, {"size": 0.0, "seconds": 1.0})
        fits = SEARCH_COMPILES_GUESS * b["seconds"] <= seconds_per_worker
        return (not fits, -b["size"] / max(b["seconds"], 0.05))

    return sorted((m for m in modules if m.name in base), key=key)


def search_config(strategy: str, module_budget: int, flips: str, time_budget: float) -> Any:
    """The SearchConfig of tune's search (`time_budget`: for the strong one)."""
    from mlgo.search import SearchConfig

    if strategy == "strong":
        return SearchConfig(passes=1, budget=module_budget, strategy="strong",
                            time_budget=time_budget)
    return SearchConfig(passes=1, budget=module_budget, flips=flips)


def search_fingerprints(modules: Sequence[Module], config: Any, gin: str,
                        comdat_weights: dict[str, float] | None) -> dict[str, str]:
    """Each module's fingerprint as run_search's search_corpus will check its result."""
    from mlgo.search import module_fingerprint, search_identity

    want = search_identity(config, gin_config=gin, comdat_weights=comdat_weights or None)
    return {m.name: module_fingerprint(m, want) for m in modules}


class _CountingPool:
    """A pool whose run() reports each module that finished (a strong search's slices that do
    not end a module carry its state, not a result)."""

    def __init__(self, pool: Any, tick: Callable[[int], None]) -> None:
        self.pool, self.tick, self.finished = pool, tick, 0
        self.workers = getattr(pool, "workers", 1)

    def run(self, tasks: Sequence[Any]) -> Any:
        for out in self.pool.run(tasks):
            if not out.ok or "state" not in out.extra:
                self.finished += 1
                self.tick(self.finished)
            yield out


def run_search(modules: Sequence[Module], out: Path, *, strategy: str, module_budget: int,
               flips: str, deadline: float, workers: int | None, ray: str | None, gin: str,
               timeout: float, comdat_weights: dict[str, float] | None,
               tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The search, ended at `deadline` (time.monotonic()): the seam between tune and
    mlgo/search.py. "strong": the strong search with the time to the deadline as its budget
    (mlgo/search_schedule.py: it starts no compile it would overrun, keeps the best found for
    every module, and saves each module as its search ends); "greedy": the single-flip search of
    each module in the order given, its workers killed at the deadline (a module cut short
    keeps nothing). Either way a later (or resumed) run searches only the modules without a
    result. `tick(n)`: n modules finished in this run."""
    import time

    from mlgo.search import run_search_task, search_corpus
    from mlgo.search_schedule import run_strong_task
    from mlgo.tune.deadline_pool import DeadlinePool
    from mlgo.workers.pool import make_pool

    report = tick or (lambda n: None)
    config = search_config(strategy, module_budget, flips, max(deadline - time.monotonic(), 1.0))
    pool: Any
    if strategy == "strong":
        inner = make_pool(workers, ray, task_fn=run_strong_task)
        pool = _CountingPool(inner, report)
    else:
        inner = pool = DeadlinePool(run_search_task, deadline, workers=workers, ray_address=ray,
                                    tick=lambda p: report(p.finished))
    try:
        s = search_corpus(modules, out, config, pool, gin_config=gin, timeout=timeout,
                          comdat_weights=comdat_weights or None, progress=False)
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()
    stopped = bool(getattr(pool, "stopped", False))
    return {"config": asdict(config), "modules": s.modules,
            # finished in this run (search_corpus counts the ones a deadline cut short too)
            "searched": s.modules - s.skipped,
            "skipped": s.skipped, "failed": [m for m, _ in s.failed], "compiles": s.compiles,
            "search_seconds": round(s.seconds, 3), "stopped_by_budget": stopped,
            "unfinished": list(getattr(pool, "unfinished", [])),
            "default_total": s.default_total, "best_total": s.best_total,
            "linked_default": s.linked_default, "linked_best": s.linked_best,
            "gain": (s.linked_default - s.linked_best) / s.linked_default
            if s.linked_default else 0.0}


def run_continuation(modules: Sequence[Module], greedy: Path, out: Path, base: dict[str, Any], *,
                     deadline: float, workers: int | None, ray: str | None, gin: str,
                     timeout: float, comdat_weights: dict[str, float] | None,
                     tick: Callable[[int], None] | None = None,
                     starts: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """The strong search (mlgo/search_schedule.py) from each module's greedy best in `greedy`
    until `deadline`, by gain per second (the greedy search's own to begin with: bytes saved
    plus 1% of the module's size, over its compiles times the module's baseline seconds). Each
    module's result is saved in `out` as its search ends; a module with one there already
    (from a killed run) is not searched again. The greedy results are left as they are.
    `starts` ({module: decisions}, e.g. a re-tune's earlier answers) replaces the greedy
    results: the modules in it start from those, at rates of 1% of their size per baseline
    second."""
    import time

    from mlgo.search import SearchConfig, search_identity
    from mlgo.search_schedule import run_strong_task, strong_outcomes
    from mlgo.search_store import (
        check_config,
        load_result,
        module_fingerprint,
        result_path,
        reusable_results,
        save_result,
        search_lock,
    )
    from mlgo.workers.pool import make_pool

    report = tick or (lambda n: None)
    t0 = time.monotonic()
    config = SearchConfig(passes=1, budget=0, strategy="strong",
                          time_budget=max(deadline - t0, 1.0))
    want = search_identity(config, gin_config=gin, comdat_weights=comdat_weights or None)
    out.mkdir(parents=True, exist_ok=True)
    with search_lock(out):
        check_config(out, want)
        prints = {m.name: module_fingerprint(m, want) for m in modules}
        done = reusable_results(out, prints)
        first_decisions: dict[str, list[int]] = {}
        rates: dict[str, float] = {}
        for m in modules:
            path = result_path(greedy, m.name)
            if starts is not None:
                b = base["modules"].get(m.name)
                if m.name not in done and starts.get(m.name) and b:
                    first_decisions[m.name] = [int(a) for a in starts[m.name]]
                    rates[m.name] = 0.01 * float(b["size"]) / max(float(b["seconds"]), 0.05)
                continue
            if m.name in done or not path.is_file():
                continue
            r = load_result(path, m.name)
            if r.actions is None or len(r.actions) == 0:
                continue  # no decision to make
            first_decisions[m.name] = [int(a) for a in r.actions]
            d, b = float(r.extra["default_objective"]), float(r.extra["best_objective"])
            seconds = (max(int(r.extra.get("compiles", 1)), 1)
                       * max(float(base["modules"].get(m.name, {}).get("seconds", 1.0)), 0.05))
            rates[m.name] = (d - b + 0.01 * d) / seconds
        todo = [m for m in modules if m.name in first_decisions]
        compiles, finished, failed = 0, 0, []
        if todo:
            pool = make_pool(workers, ray, task_fn=run_strong_task)
            try:
                for o in strong_outcomes(todo, config, pool, gin_config=gin, timeout=timeout,
                                         comdat_weights=comdat_weights or None, starts=first_decisions,
                                         rates=rates):
                    finished += 1
                    report(finished)
                    if not o.ok:
                        failed.append(o.module)
                        continue
                    compiles += int(o.extra["compiles"])
                    save_result(out, o, prints[o.module])
            finally:
                pool.close()
    return {"modules": len(todo), "earlier": len(done), "compiles": compiles,
            "failed": failed, "seconds": round(time.monotonic() - t0, 3)}


def best_results(modules: Sequence[Module], dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Per module, the result of `dirs` with the smallest objective (the first on a tie), copied
    into `out` (rebuilt whole): what the decision table serves. Returns its figures, as linked,
    with how many modules a later directory improved and by how many bytes."""
    from mlgo.evaluate import linked_totals
    from mlgo.search_store import load_result, result_path

    shutil.rmtree(out, ignore_errors=True)
    rows, improved, saved = [], 0, 0.0
    for m in modules:
        found = []
        for d in dirs:
            path = result_path(d, m.name)
            if path.is_file():
                found.append((load_result(path, m.name), path))
        if not found:
            continue
        first = found[0][0]
        r, path = min(found, key=lambda rp: float(rp[0].extra["best_objective"]))
        if r is not first:
            improved += 1
            saved += first.policy_total - r.policy_total
        dest = result_path(out, m.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        rows.append({"module": m.name, "project": m.project, "policy": r.policy_total,
                     "default": r.default_total, "comdat": r.extra.get("comdat", {})})
    linked = linked_totals(rows).values()
    ld = sum(p["default"] for p in linked)
    lb = sum(p["policy"] for p in linked)
    return {"modules": len(rows), "improved": improved, "bytes_beyond_first": saved,
            "linked_default": ld, "linked_best": lb, "gain": (ld - lb) / ld if ld else 0.0}


def reach_curve(modules: Sequence[Module], dirs: Sequence[Path], base: dict[str, Any],
                started: float) -> list[tuple[float, float]]:
    """The search's reach over time: (minutes since `started` (a time.time()), bytes saved
    over all tuned modules' -Oz bytes) each time a result was saved in one of `dirs` (by the
    file's time; a module keeps its best result so far). Per object, COMDAT groups not
    merged."""
    from mlgo.search_store import load_result, result_path

    events = []
    for d in dirs:
        for m in modules:
            path = result_path(d, m.name)
            if path.is_file():
                r = load_result(path, m.name)
                events.append((path.stat().st_mtime, m.name, r.default_total - r.policy_total))
    total = sum(float(r["size"]) for r in base["modules"].values()) or 1.0
    best: dict[str, float] = {}
    curve = [(0.0, 0.0)]
    for t, name, gain in sorted(events):
        best[name] = max(best.get(name, 0.0), gain)
        curve.append((round(max(t - started, 0.0) / 60, 3), sum(best.values()) / total))
    return curve


def held_out_modules(modules: Sequence[Module], base: dict[str, dict], project: str) -> list[str]:
    """The keys (source paths relative to the project, as the decision table names modules) of
    the modules training leaves out: HOLD_OUT_FRACTION of those that ask decisions, at least
    one, chosen by a hash of the key, so a resumed run and a re-tune of a later release hold
    out the same files. None when fewer than HOLD_OUT_MIN_MODULES ask decisions."""
    from mlgo.tune.decisions import relative_path

    asking = [relative_path(m.name, project) for m in modules
              if base.get(m.name, {}).get("decisions", 1) > 0]
    if len(asking) < HOLD_OUT_MIN_MODULES:
        return []
    ranked = sorted(asking, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    return sorted(ranked[:max(1, round(HOLD_OUT_FRACTION * len(ranked)))])


def train(corpus: Corpus, search: Path, out: Path, *, gin: str, workers: int | None,
          ray: str | None, timeout: float, warmstart: Path | None = None,
          deadline: float | None = None) -> dict[str, Any]:
    """Imitation of the search's best decisions on every module of `corpus` (no validation
    split of its own: tune holds modules out by passing a subset), its cloning stopped at
    `deadline` (time.monotonic()) keeping the last completed epoch. Returns {"policy", "rounds":
    [{"round", "epochs", "of", "stopped"}], "stopped_by_deadline"}."""
    from mlgo.problems import get_problem
    from mlgo.search import run_search_task
    from mlgo.training.imitation import ImitationConfig
    from mlgo.training.pipeline import train as train_run
    from mlgo.workers.pool import make_pool

    train_run(get_problem("inlining"), "imitation", corpus, out,
              pool=make_pool(workers, ray), gin_config=gin, warmstart=warmstart,
              validation_fraction=0.0, timeout=timeout, search=search,
              search_pool=make_pool(workers, ray, task_fn=run_search_task), deadline=deadline)
    policy = out / "policy"
    if not policy.is_dir():
        raise MlgoError(f"{out}: training wrote no policy")
    planned = ImitationConfig()
    rounds = []
    log = out / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        row = json.loads(line)
        if "imitation/epochs" in row:  # (the latest line of a round redone after a kill wins)
            rounds = [r for r in rounds if r["round"] != int(row["iteration"])]
            rounds.append({"round": int(row["iteration"]), "epochs": int(row["imitation/epochs"]),
                           "of": planned.epochs,
                           "stopped": bool(row.get("imitation/stopped_by_deadline", 0))})
    return {"policy": str(policy), "rounds": rounds, "planned_rounds": planned.rounds,
            "stopped_by_deadline": any(r["stopped"] for r in rounds)
            or len(rounds) < planned.rounds}


def evaluate(corpus: Corpus, policy: Path, pool: Any, gin: str, timeout: float,
             json_path: Path) -> dict[str, Any]:
    """The policy against -Oz on every module of `corpus`, per object and as linked."""
    from mlgo.evaluate import collect, write_json
    from mlgo.workers.tasks import ModuleTask, PolicySpec

    spec = PolicySpec.named(str(policy))
    tasks = [ModuleTask("inlining", m, spec, gin_config=gin, timeout=timeout)
             for m in corpus.modules]
    rep = collect("inlining", str(policy), ".text", corpus, pool.run(tasks))
    if not rep.modules:
        raise MlgoError(f"{policy}: no module of the corpus compiled with the policy")
    write_json(rep, json_path)
    return evaluation_figures(rep)


def evaluation_figures(rep: Any) -> dict[str, Any]:
    """An EvalReport's totals, per object and as linked, and the modules that failed."""
    projects = rep.linked().values()
    return {"relative_change": rep.relative_change,
            "linked_relative_change": rep.linked_relative_change,
            "default_total": rep.default_total, "policy_total": rep.policy_total,
            "linked_default": sum(p["default"] for p in projects),
            "linked_policy": sum(p["policy"] for p in projects),
            "failed": [f["module"] for f in rep.failures]}


def export(policy: Path, out: Path, table: Path | None = None,
           served: str | None = None) -> dict[str, Any]:
    """The policy's SavedModel and manifest (OUT/export) and the plugin serving `served`
    (default: the policy; or a built-in rule) with the decision table `table` linked in
    (mlgo/tune/decisions.py), copied to OUT/plugin/ so the output directory serves them on
    its own."""
    from mlgo.export.bundle import export_policy
    from mlgo.serving.plugin import plugin_for

    export_policy(policy, out / "export", aot=False, force=True)
    built = plugin_for(served or str(policy), table)
    plugin = out / "plugin" / built.name
    atomic_write_bytes(plugin, built.read_bytes())
    os.chmod(plugin, 0o755)
    return {"plugin": str(plugin)}


def write_flags(plugin: Path, policy: Path, out: Path) -> dict[str, str]:
    """OUT/mlgo.cmake (cmake -C), OUT/flags.txt (compile flags, one line) and OUT/flags.env
    (CC, CXX, CFLAGS, CXXFLAGS, LDFLAGS for `set -a; . flags.env`) serving the plugin."""
    import shlex

    from mlgo.serving.cmake import initial_cache

    cc, cxx = toolchain.locate("clang"), toolchain.locate("clang++")
    cmake = out / "mlgo.cmake"
    atomic_write_text(cmake, initial_cache(str(plugin), str(policy), {"C": cc, "CXX": cxx}))
    compile_flags = f"-Oz -fpass-plugin={plugin}"
    link_flags = f"-fuse-ld=lld -Wl,--load-pass-plugin={plugin}"
    atomic_write_text(out / "flags.txt", compile_flags + "\n")
    env = {"CC": cc, "CXX": cxx, "CFLAGS": compile_flags, "CXXFLAGS": compile_flags,
           "LDFLAGS": link_flags}
    atomic_write_text(out / "flags.env",
                      f"# mlgo tune: the tuned inliner for any build system ({toolchain.clang_name()}, lld)\n"
                      + "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    return {"cmake": str(cmake), "flags": str(out / "flags.txt"), "env": str(out / "flags.env")}


# -- incremental re-tuning ----------------------------------------------------------------------
FINGERPRINT_RECIPE = "nodebug-sha256"


def fingerprint(module: Module, root: Path) -> str:
    """See the module docstring."""
    dis = process.run([toolchain.find_tool("opt", check_version=False).path, "--strip-debug",
                       "-S", str(module.bc_path), "-o", "-"],
                      what=f"reading {module.name} without its debug information", timeout=300)
    h = hashlib.sha256()
    for line in dis.stdout.replace(str(root), "<root>").splitlines():
        if not line.startswith(("; ModuleID", "source_filename")):
            h.update(line.encode() + b"\n")
    h.update(module.cmd_path.read_bytes().replace(str(root).encode(), b"<root>"))
    return f"{FINGERPRINT_RECIPE}:{h.hexdigest()}"


def fingerprints(corpus: Corpus, root: Path, jobs: int) -> dict[str, str]:
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        return dict(zip((m.name for m in corpus.modules),
                        ex.map(lambda m: fingerprint(m, root), corpus.modules), strict=True))


def reuse_results(previous: Path, new_prints: dict[str, str], search: Path,
                  config: dict[str, Any], search_prints: dict[str, str]) -> dict[str, Any]:
    """Copy the earlier tune's search result of every module whose fingerprint is unchanged
    into `search` (under its new name, with its fingerprint for this search:
    `search_prints`), when the earlier search had the same settings."""
    from mlgo.search_store import CONFIG, load_result, result_path, save_result

    old_prints_path = previous / "fingerprints.json"
    old_config_path = previous / "search" / CONFIG
    if not old_prints_path.is_file() or not old_config_path.is_file():
        raise MlgoError(f"{previous}: not the output of an earlier `mlgo tune` "
                        "(no fingerprints.json or search/search.json)")
    old_config = json.loads(old_config_path.read_text())
    if any(old_config.get(k) != v for k, v in config.items()):
        return {"reused": {}, "why_none": f"{old_config_path}: other search settings"}
    old_prints = json.loads(old_prints_path.read_text())
    if any(not fp.startswith(FINGERPRINT_RECIPE + ":") for fp in old_prints.values()):
        return {"reused": {}, "why_none": f"{old_prints_path}: fingerprints made by an older "
                "mlgo (another recipe), which cannot tell unchanged modules"}
    by_print: dict[str, str] = {}
    for name, fp in old_prints.items():
        if result_path(previous / "search", name).is_file():
            by_print.setdefault(fp, name)
    reused = {}
    for name, fp in new_prints.items():
        old = by_print.get(fp)
        if old is None:
            continue
        if not result_path(search, name).is_file():
            r = load_result(result_path(previous / "search", old))
            r.module = name
            save_result(search, r, search_prints[name])
        reused[name] = old
    return {"reused": reused}


def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
