"""The strong search across a corpus (`mlgo search --strategy strong`, mlgo/search_strategy.py
searches one module): with a time budget, rounds of per-module slices on the worker pool, the
search's state travelling with each slice.

Round one gives every module an equal share of half the budget; later rounds split what is left
by each module's gain per second so far (bytes saved plus a 1% prior of its size, over the
seconds spent), each slice at most half the remainder, so no module eats the budget. A module
leaves when its search is complete (enumerated, nothing new left to try, or its compile budget
spent); a slice starts no compile that would overrun it (by the module's mean compile time); one
compile per module is kept for the final replay on the plain compile, which records the features
a policy sees. A module that leaves is replayed in the slice that ended its search and its result
is yielded (and saved by search_corpus) at once, so a run killed later keeps it.

Continuing another search (`starts`: a decision vector per module, e.g. the greedy search's best,
with `rates`: the gain per second it showed): a module's first slice compiles LLVM's decisions
(the anchor) and the start, and climbs from the start; every round splits the time by rate, and
a module that never got a slice yields nothing (its start stays the best known).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from corpus_tools.corpus import Module
from mlgo.search_strategy import (
    ModuleOracle,
    OutOfBudget,
    StrongConfig,
    StrongSearch,
    StrongState,
    _digest,
)
from mlgo.workers.tasks import ModuleOutcome, failed_outcome
from mlgo_base.errors import MlgoError

STRATEGY_FIELDS = ("strategy", "time_budget", "enumerate_max")


def config_settings(config: Any) -> dict[str, Any]:
    """A SearchConfig as its search directory records it: the strategy's fields only when they
    differ from the default, so searches written before they existed keep resuming. A time
    budget is recorded as there being one, not its length: the length is how long one run may
    take, so a resumed run (e.g. mlgo tune's, with what is left of its budget) may give another."""
    settings = {k: v for k, v in asdict(config).items()
                if k not in STRATEGY_FIELDS or v != getattr(type(config), k)}
    if "time_budget" in settings:
        settings["time_budget"] = True
    return settings


def search_outcomes(config: Any, modules: Sequence[Module], tasks: Sequence[Any], pool: Any,
                    **kwargs: Any) -> Iterator[ModuleOutcome]:
    """The modules' results under the config's strategy: the greedy search runs `tasks`
    (SearchTasks) as they are, the strong one schedules `modules` itself."""
    if config.strategy == "strong":
        return strong_outcomes(modules, config, pool, **kwargs)
    return pool.run(tasks) if tasks else iter(())


@dataclass(frozen=True)
class StrongTask:
    """One slice of one module's strong search, picklable for the pools (`module` and `tag`
    are what they read). `seconds` 0: no time limit; `finish`: replay the best on the plain
    compile and return the module's result; `finish_when_done`: the same when this slice ends
    the module's search."""

    module: Module
    config: Any  # mlgo.search.SearchConfig
    state: StrongState | None = None
    seconds: float = 0.0
    finish: bool = True
    gin_config: str = ""
    timeout: float = 300.0
    comdat_weights: dict[str, float] = field(default_factory=dict, compare=False)
    tag: int = 0
    search: bool = True  # False: no search beyond `state` (just the anchor when it is None)
    finish_when_done: bool = True
    start: tuple[int, ...] = ()  # with no `state`: the decisions the search starts from


def strong_config(config: Any, seconds: float, compiles_done: int) -> StrongConfig:
    """The slice's limits from a SearchConfig: its per-module compile budget (one compile kept
    for the final plain replay) and the slice's seconds."""
    budget = max(config.budget - 1 - compiles_done, 0) if config.budget else 0
    if config.budget and budget == 0:
        budget = -1  # spent: compile nothing more
    return StrongConfig(budget=budget, seconds=seconds, enumerate_max=config.enumerate_max)


def run_strong_task(task: StrongTask) -> ModuleOutcome:
    """One slice in a worker. Never raises for a bad module: the outcome carries the error."""
    from mlgo.compiler.measure import COMDAT_PREFIX, comdat_objective
    from mlgo.workers.tasks import apply_gin

    t0 = time.monotonic()
    name = task.module.name
    try:
        apply_gin(task.gin_config)
        objective = comdat_objective(task.comdat_weights) if task.comdat_weights else None
        state = task.state or StrongState(seed=int.from_bytes(_digest([name])[:4], "little"))
        limits = (strong_config(task.config, task.seconds, state.compiles) if task.search
                  else StrongConfig(budget=1 if state.anchor is None else -1))
        # Batched flips need call-site names and function sizes: the plugin's compile.
        # A C++ inline function is its own COMDAT group, named as the function.
        oracle = ModuleOracle(task.module, objective, task.timeout,
                              attribute=bool(limits.batch_min), function_weights={
                                  k.removeprefix(COMDAT_PREFIX): w
                                  for k, w in task.comdat_weights.items()})
        search = StrongSearch(oracle, limits, state)
        if task.start and task.state is None and limits.budget >= 0:
            try:  # the anchor first (the result's reference), then the start: the best so far
                state.anchor = search.prefix([])
                search.prefix(list(task.start))
            except OutOfBudget:
                pass
        if limits.budget >= 0:
            search.run()
        out = ModuleOutcome(name, True, seconds=time.monotonic() - t0, tag=task.tag)
        budget_spent = bool(task.config.budget) and state.compiles >= task.config.budget - 1
        done = search.done or budget_spent or not (limits.budget or limits.seconds)
        out.extra = {"state": state, "done": done}
        if task.finish or (task.finish_when_done and done and state.best is not None):
            _finish(oracle, state, out)  # (replaces `extra` with the result's)
        return out
    except Exception as e:
        return failed_outcome(name, e, t0, task.tag)


def _finish(oracle: ModuleOracle, state: StrongState, out: ModuleOutcome) -> None:
    """The module's result as mlgo/search.py records it: the best replayed on the plain compile
    (its features are what a policy sees in release; its size must equal the search's)."""
    from mlgo.compiler.measure import comdat_pairs
    from mlgo.env import CompilerEnv, replay
    from mlgo.protocol import stack_features

    anchor, best = state.anchor, state.best
    assert anchor is not None and best is not None
    default = oracle.problem.baseline(oracle.module, oracle.cache)
    default_obj = float(oracle.objective(default))
    if best.actions:
        env = CompilerEnv(oracle.problem.plain, oracle.module, cache=oracle.cache,
                          timeout=oracle.timeout, record=True)
        final = replay(env, list(best.actions))
        state.compiles += 1
        if final.measurement.total != best.size:
            raise MlgoError(f"{oracle.module.name}: the best decisions replayed on the plain "
                            f"compile give {final.measurement.total:.0f} bytes, the search "
                            f"measured {best.size:.0f}")
        out.features = stack_features(final.observations)
        out.actions = np.asarray(best.actions, dtype=np.int64)
        out.default_actions = np.asarray(best.llvm, dtype=np.int64)
    out.reward = (default_obj - best.objective) / default_obj if default_obj > 0 else 0.0
    out.policy_total, out.default_total = best.size, default.total
    out.num_decisions = len(best.actions)
    out.extra = {
        "strategy": "strong", "compiles": state.compiles, "reused": 0, "passes": 0,
        "kept": state.kept, "converged": state.enumerated or state.local_optimum,
        "enumerated": state.enumerated, "skipped": 0,
        "anchor_total": anchor.size, "anchor_objective": anchor.objective,
        "best_objective": best.objective, "default_objective": default_obj,
        "flips_vs_llvm": int(sum(a != d for a, d in zip(best.actions, best.llvm, strict=True))),
        "comdat": comdat_pairs(best.per_function, default.per_function),
        "search_seconds": state.seconds,
    }


def slice_seconds(remaining: float, workers: int, rates: dict[str, float],
                  first_round: bool) -> dict[str, float]:
    """Seconds per module for the next round: round one splits half the worker-seconds left
    evenly; later rounds split them by gain rate, each slice at most half of them."""
    if not rates:
        return {}
    pool_seconds = remaining * max(workers, 1)
    if first_round:
        return {m: pool_seconds / 2 / len(rates) for m in rates}
    total = sum(rates.values())
    share = {m: (r / total if total > 0 else 1 / len(rates)) for m, r in rates.items()}
    return {m: min(pool_seconds * s, pool_seconds / 2) for m, s in share.items()}


def strong_outcomes(modules: Sequence[Module], config: Any, pool: Any, *, gin_config: str = "",
                    timeout: float = 300.0, comdat_weights: dict[str, float] | None = None,
                    clock: Callable[[], float] = time.monotonic,
                    min_slice: float = 2.0, starts: dict[str, Sequence[int]] | None = None,
                    rates: dict[str, float] | None = None) -> Iterator[ModuleOutcome]:
    """Each module's result (or failure) once its search ends. `pool` runs StrongTasks
    (make_pool(task_fn=run_strong_task)). Without `config.time_budget`: one task per module,
    searched to its local optimum (and perturbed while its compile budget lasts). `starts`
    and `rates` (needs a time budget): continue from those decisions (module docstring)."""
    weights = dict(comdat_weights or {})
    starts = dict(starts or {})

    def task(m: Module, state: StrongState | None, seconds: float, finish: bool,
             search: bool = True) -> StrongTask:
        return StrongTask(m, config, state, seconds, finish, gin_config, timeout, weights,
                          search=search, start=tuple(starts.get(m.name, ())))

    if not config.time_budget:
        yield from pool.run([task(m, None, 0.0, True) for m in modules])
        return
    start = clock()
    by_name = {m.name: m for m in modules}
    states: dict[str, StrongState | None] = {m.name: None for m in modules}
    given = dict(rates or {})
    rates = {m.name: max(given.get(m.name, 1.0), 1e-12) for m in modules}
    spent: dict[str, tuple[int, float]] = {}  # compiles and seconds per module, finished too
    first = not given  # a first round of equal shares, unless the rates are known
    workers = int(getattr(pool, "workers", 1) or 1)
    # A finish compile per module at the end: keep roughly one compile's time per module free.
    reserve = 0.0
    while rates:
        remaining = config.time_budget - (clock() - start) - reserve
        seconds = slice_seconds(remaining, workers, rates, first)
        seconds = {n: s for n, s in seconds.items() if s >= min_slice}
        if not seconds:
            break
        first = False
        before = sum(c for c, _ in spent.values())
        for out in pool.run([task(by_name[n], states[n], s, False) for n, s in seconds.items()]):
            if not out.ok or "state" not in out.extra:  # failed, or finished with its result
                rates.pop(out.module, None)
                states.pop(out.module, None)
                if out.ok:
                    spent[out.module] = (int(out.extra["compiles"]),
                                         float(out.extra["search_seconds"]))
                yield out
                continue
            st: StrongState = out.extra["state"]
            states[out.module] = st
            spent[out.module] = (st.compiles, st.seconds)
            if st.best is None or st.anchor is None:
                rates.pop(out.module, None)
                continue
            # Gain from where this search started (a continued one: its start), per second.
            begun = starts.get(out.module)
            ref = st.leaves.get(_digest(list(begun))) if begun else None
            start_objective = ref.objective if ref is not None else st.anchor.objective
            rates[out.module] = ((start_objective - st.best.objective
                                  + 0.01 * st.anchor.objective)
                                 / max(st.seconds, 1e-3))
        compiles = sum(c for c, _ in spent.values())
        if compiles == before:  # every slice was too short for one more compile
            break
        seconds_spent = sum(s for _, s in spent.values())
        reserve = len(states) * (seconds_spent / max(compiles, 1)) / workers
    # (A continued module that never got a slice has nothing to replay: its start stands.)
    final = {n: st for n, st in states.items() if st is not None or not starts}
    if final:
        yield from pool.run([task(by_name[n], st, 0.0, True, search=False)
                             for n, st in final.items()])
