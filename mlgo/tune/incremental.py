"""A re-tune of a later version of the code (`mlgo tune --previous EARLIER`), at a cost in
proportion to what changed. From the earlier run it takes:

- for modules whose fingerprint did not change (learn.fingerprint): their search results
  (learn.reuse_results) and their continuation's (reuse_continuations), and their rows of the
  earlier policy's evaluation, so the figure of what the earlier policy keeps on the new code
  compiles only the changed and new modules (old_policy_evaluation; a compile is
  deterministic, so an unchanged module's row is the one the earlier run measured);
- for changed modules the earlier decision table names: a start (warm_starts), one compile
  through the plugin's channel answering each call site the table names as the table does and
  the others as LLVM does, from which the strong search continues (learn.run_continuation);
- the search's share: at most what the earlier search spent on the modules now changed
  (search_bound: per module the seconds of its greedy search, and of its continuation when that
  found smaller code; a new module the earlier mean), with SHARE_HEADROOM, never the whole
  budget;
- training: the earlier policy fine-tuned (fine_tune_plan): one round, epochs in proportion to
  the decisions in changed and new modules, since the unchanged modules' targets are the ones
  the earlier policy was trained on."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus_tools.corpus import Corpus, Module
from mlgo.tune.decisions import TABLE_FILE, relative_path
from mlgo.workers.tasks import ModuleOutcome, failed_outcome

# The search share's margin over the earlier spend: new code may ask more decisions, and the
# machine's load differs between runs.
SHARE_HEADROOM = 1.25
# The fewest epochs a fine-tune runs, however little changed: the changed modules' targets are
# a small part of every epoch's batch, so fewer epochs would barely move the policy.
FINE_TUNE_MIN_EPOCHS = 100
WARM_DIR = "search-warm"  # the strong search from the earlier answers, per changed module


def earlier_modules(previous: Path) -> dict[str, str]:
    """The earlier run's corpus: {module name: its path relative to that project's root}."""
    corpus = Corpus.load(previous / "corpus", check_files=False)
    return {m.name: relative_path(m.name, m.project) for m in corpus.modules}


def earlier_spend(previous: Path) -> dict[str, float]:
    """Seconds the earlier search spent per module (by relative path) to reach its result: its
    greedy search's, and its continuation's when the continuation found smaller code than the
    greedy search (a reused result counts what its search took). A continuation runs until the
    budget is spent, so one that found nothing measures the budget's leftover, not the
    module's need."""
    from mlgo.search_store import load_result, result_path

    spend: dict[str, float] = {}
    for name, key in earlier_modules(previous).items():
        greedy = result_path(previous / "search", name)
        more = result_path(previous / "search-more", name)
        first = load_result(greedy, name) if greedy.is_file() else None
        if first is not None:
            spend[key] = float(first.seconds)
        if more.is_file():
            r = load_result(more, name)
            if first is None or r.policy_total < first.policy_total:
                spend[key] = (spend.get(key, 0.0)
                              + float(r.extra.get("search_seconds", r.seconds)))
    return spend


def reuse_continuations(previous: Path, modules: Sequence[Module], reused: dict[str, str],
                        more: Path, gin: str, comdat_weights: dict[str, float] | None) -> int:
    """Copy the earlier continuation's result of each unchanged module in `modules` (`reused`:
    {this run's name: the earlier run's}) into `more`, this run's continuation directory, with
    the fingerprint its continuation would give it; returns how many. The decision table takes
    per module the better of the greedy result and its continuation, and a re-tune continues on
    changed modules only: without these an unchanged module would lose what the earlier
    continuation found beyond its greedy result."""
    from mlgo.search import SearchConfig, search_identity
    from mlgo.search_store import (
        check_config,
        load_result,
        module_fingerprint,
        result_path,
        save_result,
    )

    # The identity run_continuation checks (its time budget is recorded as a yes or no).
    want = search_identity(SearchConfig(passes=1, budget=0, strategy="strong", time_budget=1.0),
                           gin_config=gin, comdat_weights=comdat_weights or None)
    todo = [m for m in modules if m.name in reused
            and result_path(previous / "search-more", reused[m.name]).is_file()]
    if not todo:
        return 0
    more.mkdir(parents=True, exist_ok=True)
    check_config(more, want)
    n = 0
    for m in todo:
        if result_path(more, m.name).is_file():
            continue
        r = load_result(result_path(previous / "search-more", reused[m.name]), reused[m.name])
        r.module = m.name
        save_result(more, r, module_fingerprint(m, want))
        n += 1
    return n


def search_bound(previous: Path, changed: Sequence[str], project: str,
                 workers: int) -> dict[str, Any]:
    """The search's share in a re-tune (module docstring): seconds of wall time for `workers`,
    from the earlier spend on the modules now changed (`changed`: this corpus's names) and the
    earlier mean for new ones."""
    spend = earlier_spend(previous)
    mean = sum(spend.values()) / len(spend) if spend else 0.0
    keys = [relative_path(m, project) for m in changed]
    known = [k for k in keys if k in spend]
    seconds = sum(spend[k] for k in known) + mean * (len(keys) - len(known))
    return {"seconds": round(SHARE_HEADROOM * seconds / max(workers, 1), 1),
            "earlier_seconds": round(seconds, 1), "changed": len(keys), "new": len(keys) - len(known)}


@dataclass
class WarmTask:
    """One changed module compiled through the plugin's channel, each call site the earlier
    table names answered as it did (`answers`: {(caller, callee, ordinal): 0 or 1})."""

    module: Module
    answers: dict[tuple[str, str, int], int]
    gin_config: str
    timeout: float
    plugin: str  # the plugin with no policy (mlgo.serving.plugin.channel_plugin)
    tag: int = 0


def run_warm_task(task: WarmTask) -> ModuleOutcome:
    """In a worker: the decisions of `task`'s compile; extra {"start": decisions, "kept": how
    many the earlier table answered}."""
    from mlgo.compiler.plugin_env import call_site
    from mlgo.env import CompilerEnv
    from mlgo.problems.inlining.problem import InliningForSize, llvm_default
    from mlgo.workers.tasks import apply_gin

    t0 = time.monotonic()
    try:
        apply_gin(task.gin_config)
        env = CompilerEnv(InliningForSize(plugin=task.plugin), task.module,
                          timeout=task.timeout, record=False)
        start: list[int] = []
        kept = 0
        try:
            obs, info = env.reset()
            while obs is not None:
                s = call_site(info["context"])
                a = task.answers.get((s.caller, s.callee, int(s.ordinal)))
                kept += a is not None
                start.append(int(llvm_default(obs) if a is None else a))
                obs, _, _, _, info = env.step(start[-1])
        finally:
            env.close()
        return ModuleOutcome(task.module.name, True, num_decisions=len(start),
                             seconds=time.monotonic() - t0, tag=task.tag,
                             extra={"start": start, "kept": kept})
    except Exception as e:
        return failed_outcome(task.module.name, e, t0, task.tag)


def warm_starts(modules: Sequence[Module], previous: Path, project: str, pool_of: Any, *,
                gin: str, timeout: float) -> dict[str, Any]:
    """The start of each module in `modules` the earlier decision table names (module
    docstring): {"starts": {module: decisions}, "kept": call sites answered as before,
    "decisions", "failed"}. `pool_of(task_fn)` makes the pool."""
    from mlgo.serving.decision_table import load_table
    from mlgo.serving.plugin import channel_plugin

    none = {"starts": {}, "kept": 0, "decisions": 0, "failed": []}
    if not (previous / TABLE_FILE).is_file():
        return none
    table = load_table(previous / TABLE_FILE)
    plugin = str(channel_plugin())
    tasks = []
    for m in modules:
        entries = table.get(relative_path(m.name, project))
        if entries:
            tasks.append(WarmTask(m, {(e[0], e[1], int(e[2])): int(e[3]) for e in entries},
                                  gin, timeout, plugin, tag=len(tasks)))
    if not tasks:
        return none
    pool = pool_of(run_warm_task)
    out = dict(none, starts={}, failed=[])
    try:
        for o in pool.run(tasks):
            if not o.ok:
                out["failed"].append(o.module)
                continue
            if o.extra["start"]:
                out["starts"][o.module] = o.extra["start"]
            out["kept"] += int(o.extra["kept"])
            out["decisions"] += int(o.num_decisions)
    finally:
        pool.close()
    return out


def warm_search(modules: Sequence[Module], previous: Path, out: Path, project: str,
                base: dict[str, Any], search_dir: Path, config: Any, *, deadline: float,
                workers: int, ray: str | None, gin: str, timeout: float,
                say: Callable[[str], None]) -> dict[str, Any]:
    """A re-tune's changed `modules` that the earlier table names: the strong search from
    their warm starts (recorded as the step "warm-starts" of OUT, for a resumed run), in their
    share of the search's time (search_bound on them alone, ending by `deadline`); the results
    join `search_dir` (whose search has `config`), where training and the table read them."""
    from mlgo.tune import learn
    from mlgo.tune.progress import Steps
    from mlgo.workers.pool import make_pool

    steps = Steps(out)
    ws = steps.done("warm-starts")
    if ws is None:
        t = time.monotonic()
        found = warm_starts(modules, previous, project,
                            lambda fn: make_pool(workers, ray, task_fn=fn), gin=gin,
                            timeout=timeout)
        ws = steps.record("warm-starts", time.monotonic() - t, found)
    starts = ws["starts"]
    say(f"re-tune: {len(starts)} changed module(s) start from the earlier answers "
        f"({ws['kept']:,} of their {ws['decisions']:,} call sites answered as before)")
    warm = [m for m in modules if m.name in starts]
    if not warm:
        return {"modules": 0, "compiles": 0, "starts": 0, "kept": 0, "decisions": 0,
                "joined": 0}
    bound = search_bound(previous, [m.name for m in warm], project, workers)
    res = learn.run_continuation(warm, search_dir, out / WARM_DIR, base,
                                 deadline=min(deadline, time.monotonic() + bound["seconds"]),
                                 workers=workers, ray=ray, gin=gin, timeout=timeout,
                                 comdat_weights=base["comdat_weights"], starts=starts)
    prints = learn.search_fingerprints(warm, config, gin, base["comdat_weights"])
    return {**res, "starts": len(starts), "kept": ws["kept"], "decisions": ws["decisions"],
            "joined": copy_results(warm, out / WARM_DIR, search_dir, prints)}


def copy_results(modules: Sequence[Module], src: Path, dst: Path,
                 prints: dict[str, str]) -> int:
    """Each module's result in `src` copied into `dst` with its fingerprint there (`prints`),
    unless `dst` has one: the warm search's results join the search's, which training and the
    table read (and which a resumed search then skips)."""
    from mlgo.search_store import load_result, result_path, save_result

    n = 0
    for m in modules:
        if result_path(src, m.name).is_file() and not result_path(dst, m.name).is_file():
            save_result(dst, load_result(result_path(src, m.name), m.name), prints[m.name])
            n += 1
    return n


def old_policy_evaluation(corpus: Corpus, previous: Path, prints: dict[str, str], pool: Any,
                          gin: str, timeout: float, json_path: Path) -> dict[str, Any]:
    """What the earlier policy keeps on this code (learn.evaluate's figures), its rows of
    unchanged modules taken from the earlier run's evaluation of that policy (OUT/eval.json),
    the others compiled; "evaluated" and "rows_reused" say which."""
    from mlgo.evaluate import EvalReport, write_json
    from mlgo.tune import learn

    policy = previous / "train" / "policy"
    rows: dict[str, dict[str, Any]] = {}
    earlier_eval = previous / "eval.json"
    old_prints_path = previous / "fingerprints.json"
    if earlier_eval.is_file() and old_prints_path.is_file():
        by_name = {r["module"]: r for r in json.loads(earlier_eval.read_text())["modules"]}
        by_print = {fp: by_name[n] for n, fp in json.loads(old_prints_path.read_text()).items()
                    if n in by_name}
        project = {m.name: m.project for m in corpus.modules}
        for name, fp in prints.items():
            if fp in by_print and name in project:
                rows[name] = {**by_print[fp], "module": name, "project": project[name]}
    todo = [m for m in corpus.modules if m.name not in rows]
    rep = EvalReport("inlining", str(policy), ".text")
    if todo:
        part = json_path.with_name(json_path.stem + "-compiled.json")
        learn.evaluate(Corpus(corpus.root, todo, extra=dict(corpus.extra)), policy, pool, gin,
                       timeout, part)
        doc = json.loads(part.read_text())
        rep.modules += doc["modules"]
        rep.failures += doc["failures"]
    rep.modules += rows.values()
    rep.modules.sort(key=lambda r: r["module"])
    write_json(rep, json_path)
    return {**learn.evaluation_figures(rep), "evaluated": len(todo), "rows_reused": len(rows)}


def fine_tune_plan(plan: dict[str, Any], changed_decisions: int, base: dict[str, Any],
                   workers: int) -> dict[str, Any]:
    """learn.train_plan's plan for fine-tuning the earlier policy (module docstring): one
    round; the planned epochs times the changed and new modules' share of the decisions, at
    least FINE_TUNE_MIN_EPOCHS (never more than planned)."""
    from mlgo.tune import learn

    total = max(int(plan["decisions"]), 1)
    share = min(changed_decisions / total, 1.0)
    epochs = min(int(plan["epochs"]), max(FINE_TUNE_MIN_EPOCHS,
                                          math.ceil(plan["epochs"] * share)))
    compile_s = sum(r["seconds"] for r in base["modules"].values()) / max(workers, 1)
    return {**plan, "epochs": epochs, "rounds": 1, "fine_tune": True,
            "changed_decisions": changed_decisions,
            "seconds": round(learn.train_seconds(total, compile_s, epochs, 1), 1)}
