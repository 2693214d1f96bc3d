"""Greedy flip search: per module, decisions that beat an anchor (inlining: LLVM's own;
regalloc eviction: LLVM's default advisor restated as a rule), found with real compiles, recorded
as a trace that training reads. What differs between the problems is a DecisionSpace: the anchor
decision, the alternatives tried at a position and the flip order; the search is the same.

Per module (one worker runs the whole search; modules run in parallel):
  anchor  compile once answering LLVM's own decision at every call site (LLVM 19 sends it with
          -inliner-interactive-include-default, see problems/inlining/problem.py): the current
          best trajectory A (its actions) and its size.
  pass    for each position k of A (in order, or as a guiding policy ranks them):
          replay A[:k], answer 1 - A[k] at k, then LLVM's decision at every later call site
          (the compile after a flip asks about other call sites than A did, so A's suffix has
          no meaning there). Keep the candidate if its objective is strictly smaller.
          Accepting a flip at k keeps A[:k], so positions before k stay valid; those after it
          are tried afresh.
  stop    after `passes` passes, when a pass keeps nothing (converged), or when the module's
          compile budget is spent.
  reuse   a candidate that is the same compile as an earlier one (same forced prefix, or a
          prefix of a kept trajectory whose later answers were LLVM's own) is not compiled
          again. In position order a second pass is exactly the first one's candidates again
          (a kept flip at k changes nothing before k), so it costs no compile and keeps
          nothing; more passes only matter when a guide reorders the positions.
  record  replay the best actions on the plain compile (no include-default), so the features
          are the ones a policy sees in release; its size must equal the search's.

Regalloc (RegallocSpace): the anchor is `default-rule` (mlgo/policies/builtins.py; interactive
mode sends no default choice, and that rule compiles as the default does on nearly every hot
function: benchmarks/RESULTS.md, "The environment measures the real build"); the alternatives
at a position are evicting nothing (when
allowed) and the next candidate in the rule's order. Most eviction queries are in functions the
profiled run never executes, where no flip changes the trace reward, so positions are grouped
into functions by the `progress` feature (it restarts near 1 at each function's first query;
only a guess, used for order) and a group is skipped once `cold_tries` of its flips left every
profiled function's cost unchanged.

Guided by a policy (`guide`): the plain features of A give the policy's probability of
inlining at each position; "uncertain" tries positions where it is closest to 0.5 first,
"disagree" tries only positions where its greedy action differs from A. After each kept flip
the ranking is recomputed from a fresh plain replay of the new A (one compile).

On disk (resumable; mlgo/search_store.py has the layout, the fingerprints and the checks):
    S/search.json             configuration and compile settings (a re-run with other ones is
                              refused: every result would be stale)
    S/modules/<module>.npz    one module's best trajectory, features and figures (atomic), with
                              the module's name and fingerprint (bitcode, command, settings); a
                              module whose fingerprint changed, or whose file is unreadable or
                              another module's, is searched again after a warning
    S/trace.tfrecord, S/trace.json   every finished module's best trajectory: a trace
                              (mlgo/traces.py) whose `action` is the best decision and
                              `default_action` LLVM's decision at the same call site
    S/failures.json           modules whose search failed (retried on the next run)
    S/.lock                   held by the search using the directory (a second one is refused)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import Module
from mlgo.problems.search_space import DecisionSpace
from mlgo.search_store import (
    FAILURES,
    check_config,
    compile_settings,
    load_result,
    module_fingerprint,
    result_path,
    reusable_results,
    save_result,
    search_lock,
)
from mlgo.workers.tasks import ModuleOutcome, PolicySpec, failed_outcome
from mlgo_base.errors import MlgoError, ProtocolError, writing
from mlgo_base.files import atomic_write_text

log = logging.getLogger(__name__)

GUIDES = ("none", "uncertain", "disagree")
FLIPS = ("all", "inlined", "marginal")
SPACES = ("inlining", "regalloc")


@dataclass(frozen=True)
class SearchConfig:
    passes: int = 2
    budget: int = 0  # compiles per module, everything included (0: no limit)
    guide: str = "none"  # with a guiding policy: "uncertain" or "disagree"
    # "inlined": try only call sites the current best inlines (1 -> 0 flips; at -Oz LLVM
    # inlines few sites, so far fewer compiles); "marginal": the same, those whose cost was
    # closest to the threshold first (41 of the 64 flips kept on the training corpus:
    # benchmarks/results-archive-2026.md, "Search + imitation at corpus scale"), then by most
    # callee users; "all": every call site.
    flips: str = "all"
    # regalloc: flips in a function group that leave the profiled functions unchanged before
    # the group is skipped (0: never skip)
    cold_tries: int = 0
    # "strong": mlgo/search_strategy.py (inlining; group moves, enumeration of small trees, a
    # time budget for the whole corpus in seconds, 0: none)
    strategy: str = "greedy"
    time_budget: float = 0.0
    enumerate_max: int = 8  # strong: anchor decisions up to which a module is enumerated

    def __post_init__(self) -> None:
        from mlgo.search_strategy import check_strategy

        check_strategy(self)
        if self.guide not in GUIDES:
            raise MlgoError(f"unknown search guide {self.guide!r}; choose one of {', '.join(GUIDES)}")
        if self.passes < 1:
            raise MlgoError(f"search passes must be at least 1, got {self.passes}")
        if self.cold_tries < 0:
            raise MlgoError(f"search cold_tries must be at least 0, got {self.cold_tries}")
        if self.flips not in FLIPS:
            raise MlgoError(f"unknown search flips {self.flips!r}; choose one of {', '.join(FLIPS)}")
        if self.budget and self.budget < 3:
            raise MlgoError(f"a search budget below 3 compiles per module leaves no candidate "
                            f"(anchor and final replay take 2); got {self.budget}")


@dataclass(frozen=True)
class SearchTask:
    """One module's search, picklable for the local pool and Ray (`module` and `tag` are what
    the pools read)."""

    module: Module
    config: SearchConfig
    policy: PolicySpec | None = None  # the guide; None: positions in order
    gin_config: str = ""
    timeout: float = 300.0
    # Objective weights per COMDAT section (see measure.comdat_objective); empty: plain .text.
    comdat_weights: dict[str, float] = field(default_factory=dict, compare=False)
    tag: int = 0
    problem: str = "inlining"


@dataclass
class Candidate:
    objective: float
    size: float
    actions: list[int]
    llvm: list[int]  # LLVM's own decision at each of the compile's call sites
    # per position, DecisionSpace.key: inlining's "marginal" order, regalloc's `progress`
    margins: list[tuple[float, ...]] = field(default_factory=list)
    per_function: dict[str, float] = field(default_factory=dict)  # COMDAT bytes per group
    alts: list[list[int]] = field(default_factory=list)  # per position: the answers to try


def decision_space(problem: str) -> DecisionSpace:
    if problem == "inlining":
        from mlgo.problems.inlining.search_space import InliningSpace

        return InliningSpace()
    if problem == "regalloc":
        from mlgo.problems.regalloc.search_space import RegallocSpace

        return RegallocSpace()
    raise MlgoError(f"no search for problem {problem!r}; choose one of {', '.join(SPACES)}")


def function_groups(progress: Sequence[float], jump: float = 0.1) -> list[int]:
    """Per position, a guess at which function it belongs to: a new group wherever `progress`
    (queue size / the function's initial queue size) rises by more than `jump`."""
    groups, g = [], 0
    for k, p in enumerate(progress):
        if k and p > progress[k - 1] + jump:
            g += 1
        groups.append(g)
    return groups


class BudgetSpent(Exception):
    pass


def _key(prefix: Sequence[int]) -> tuple[int, bytes]:
    return len(prefix), hashlib.blake2b(bytes(prefix), digest_size=16).digest()


class FlipSearch:
    """The search on one module (see the module docstring)."""

    def __init__(self, module: Module, config: SearchConfig, *, guide: Any = None,
                 timeout: float = 300.0, objective: Callable[[Any], float] | None = None,
                 cache: Any = None, space: DecisionSpace | None = None) -> None:
        from mlgo.compiler.cache import BaselineCache

        self.space = space or decision_space("inlining")
        if self.space.name != "inlining" and (config.flips != "all" or config.guide != "none"):
            raise MlgoError(f"{self.space.name} search: only --flips all and no guide")
        self.module = module
        self.config = config
        self.guide = guide  # a LogitsPolicy or None
        self.timeout = timeout
        self.objective = objective or (lambda m: m.total)
        self.cache = cache or BaselineCache()
        self.problem = self.space.problem
        self.plain = self.space.plain
        self.compiles = 0
        self.reused = 0  # candidates answered from an identical earlier compile
        self._memo: dict[tuple[int, bytes], Candidate] = {}
        self.kept = 0
        self.skipped = 0  # positions passed over in function groups found cold
        self.passes = 0
        self.converged = False

    # -- compiles -----------------------------------------------------------------------------
    def _spend(self, reserve: int = 1) -> None:
        """Count one compile; BudgetSpent if it would eat into the `reserve` kept for the final
        replay."""
        if self.config.budget and self.compiles + 1 + reserve > self.config.budget:
            raise BudgetSpent
        self.compiles += 1

    def _remember(self, prefix: Sequence[int], cand: Candidate, every_prefix: bool) -> None:
        """Index a compiled candidate by its forced prefix; with `every_prefix`, also by each
        longer prefix of its actions (those were LLVM's own answers, so a candidate forcing
        them compiles exactly the same)."""
        self._memo[_key(prefix)] = cand
        if every_prefix:
            h = hashlib.blake2b(bytes(cand.actions[:len(prefix)]), digest_size=16)
            for i in range(len(prefix), len(cand.actions)):
                h.update(bytes([cand.actions[i]]))
                self._memo[(i + 1, h.copy().digest())] = cand

    def candidate(self, prefix: Sequence[int]) -> Candidate:
        """Compile answering `prefix` first, then LLVM's own decision at every call site (or
        reuse an earlier compile that is the same one: compiles are deterministic)."""
        from mlgo.env import CompilerEnv

        hit = self._memo.get(_key(prefix))
        if hit is not None:
            self.reused += 1
            return hit
        self._spend()
        env = CompilerEnv(self.problem, self.module, cache=self.cache, timeout=self.timeout,
                          record=False)
        actions: list[int] = []
        llvm: list[int] = []
        margins: list[tuple[float, ...]] = []
        alts: list[list[int]] = []
        try:
            obs, _ = env.reset()
            while obs is not None:
                d = self.space.anchor(obs)
                a = prefix[len(actions)] if len(actions) < len(prefix) else d
                actions.append(int(a))
                llvm.append(d)
                margins.append(self.space.key(obs))
                alts.append(self.space.alternatives(obs, int(a)))
                obs, _, _, _, _ = env.step(a)
        finally:
            env.close()
        if len(actions) < len(prefix):
            raise ProtocolError(f"{self.module.name}: replay diverged: the compile asked for "
                                f"{len(actions)} decisions, the prefix has {len(prefix)}")
        assert env.result is not None
        m = env.result.measurement
        cand = Candidate(float(self.objective(m)), m.total, actions, llvm,
                         per_function=m.per_function, margins=margins, alts=alts)
        self._remember(prefix, cand, every_prefix=False)
        return cand

    def plain_replay(self, actions: Sequence[int], reserve: int = 1):
        """The plain compile (features as a policy sees them) answering `actions`."""
        from mlgo.env import CompilerEnv, replay

        self._spend(reserve)
        env = CompilerEnv(self.plain, self.module, cache=self.cache, timeout=self.timeout,
                          record=True)
        return replay(env, list(actions))

    # -- ranking ------------------------------------------------------------------------------
    def _order(self, best: Candidate, tried: set[int]) -> list[int]:
        """Positions of `best` not yet tried, in the order to try them (guided: ranked by the
        policy)."""
        positions = [k for k in range(len(best.actions)) if k not in tried
                     and (self.config.flips == "all" or best.actions[k] == 1)]
        if self.config.flips == "marginal":
            positions.sort(key=lambda k: (*best.margins[k], k))
        if self.guide is None or self.config.guide == "none" or not positions:
            return positions
        obs = self.plain_replay(best.actions).observations
        logits = np.stack([self.guide.logits(o) for o in obs])
        z = logits - logits.max(axis=1, keepdims=True)
        p1 = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
        if self.config.guide == "disagree":
            return [k for k in positions if int(p1[k] > 0.5) != best.actions[k]]
        return sorted(positions, key=lambda k: (abs(p1[k] - 0.5), k))

    def _groups(self, best: Candidate) -> list[int]:
        """Per position of `best`, its function group (one group when none is ever skipped)."""
        if not self.config.cold_tries:
            return [0] * len(best.actions)
        return function_groups([m[0] for m in best.margins])

    # -- the search ---------------------------------------------------------------------------
    def run(self) -> tuple[Candidate, Candidate, Any]:
        """(anchor, best, plain replay of best)."""
        anchor = self.candidate([])
        self._remember([], anchor, every_prefix=True)
        best = anchor
        try:
            for _ in range(self.config.passes):
                self.passes += 1
                kept_before = self.kept
                tried: set[int] = set()
                neutral: dict[int, int] = {}  # group -> flips that changed no profiled function
                queue, groups = self._order(best, tried), self._groups(best)
                while queue:
                    k = queue.pop(0)
                    tried.add(k)
                    group = groups[k]
                    if self.config.cold_tries and neutral.get(group, 0) >= self.config.cold_tries:
                        self.skipped += 1
                        continue
                    for alt in best.alts[k]:
                        flipped = [*best.actions[:k], alt]
                        cand = self.candidate(flipped)
                        if cand.objective < best.objective:
                            best = cand
                            self.kept += 1
                            self._remember(flipped, cand, every_prefix=True)
                            # A[:k] is unchanged; later positions belong to a new trajectory.
                            tried = {t for t in tried if t <= k}
                            queue, groups = self._order(best, tried), self._groups(best)
                            break
                        if cand.per_function == best.per_function:
                            neutral[group] = neutral.get(group, 0) + 1
                if self.kept == kept_before:
                    self.converged = True
                    break
        except BudgetSpent:
            pass
        final = self.plain_replay(best.actions, reserve=0) if best.actions else None
        if final is not None and final.measurement.total != best.size:
            raise MlgoError(f"{self.module.name}: the best decisions replayed on the plain compile "
                            f"give {final.measurement.total:.0f} bytes, the search measured "
                            f"{best.size:.0f}")
        return anchor, best, final


def _guide_policy(spec: PolicySpec | None, problem: str = "inlining"):
    if spec is None:
        return None
    if problem != "inlining":
        raise MlgoError(f"a guided search is for inlining only, not {problem}")
    if spec.builtin is not None:
        raise MlgoError(f"a search guide must be a policy directory, not the built-in {spec.builtin!r}")
    from mlgo.policies.loading import numpy_policy

    return numpy_policy("inlining", spec.policy_dir, spec.params)


def run_search_task(task: SearchTask) -> ModuleOutcome:
    """One module's search in a worker. Never raises for a bad module: the outcome carries the
    error."""
    from mlgo.compiler.measure import comdat_objective, comdat_pairs
    from mlgo.protocol import stack_features
    from mlgo.workers.tasks import apply_gin, decision_call_sites

    t0 = time.monotonic()
    name = task.module.name
    try:
        apply_gin(task.gin_config)
        objective = comdat_objective(task.comdat_weights) if task.comdat_weights else None
        s = FlipSearch(task.module, task.config, guide=_guide_policy(task.policy, task.problem),
                       timeout=task.timeout, objective=objective,
                       space=decision_space(task.problem))
        anchor, best, final = s.run()
        default = s.problem.baseline(task.module, s.cache)
        default_obj = float(s.objective(default))
        extra = {
            "compiles": s.compiles, "reused": s.reused, "passes": s.passes, "kept": s.kept, "converged": s.converged,
            "skipped": s.skipped,
            "anchor_total": anchor.size, "anchor_objective": anchor.objective,
            "best_objective": best.objective, "default_objective": default_obj,
            "flips_vs_llvm": int(sum(a != d for a, d in zip(best.actions, best.llvm, strict=True))),
            "comdat": comdat_pairs(best.per_function, default.per_function),
        }
        out = ModuleOutcome(name, True, reward=_gain(default_obj, best.objective),
                            policy_total=best.size, default_total=default.total,
                            num_decisions=len(best.actions), seconds=time.monotonic() - t0,
                            extra=extra, tag=task.tag)
        if final is not None:
            out.features = stack_features(final.observations)
            out.actions = np.asarray(best.actions, dtype=np.int64)
            out.default_actions = np.asarray(best.llvm, dtype=np.int64)
            out.call_sites = decision_call_sites(s.plain, name, final.contexts, len(best.actions))
        return out
    except Exception as e:
        return failed_outcome(name, e, t0, task.tag)


def _gain(default: float, best: float) -> float:
    return (default - best) / default if default > 0 else 0.0


def _change(default: float, best: float) -> float:
    return (best - default) / default if default > 0 else 0.0


# -- over a corpus ---------------------------------------------------------------------------------
@dataclass
class SearchSummary:
    modules: int  # with a result (this run's and earlier ones)
    searched: int  # this run
    skipped: int  # finished by an earlier run
    failed: list[tuple[str, str]]
    compiles: int  # this run
    seconds: float  # this run's wall time
    workers: int
    default_total: float
    best_total: float
    default_objective: float
    best_objective: float
    linked_default: float  # every project as linking keeps it (mlgo/evaluate.py)
    linked_best: float
    problem: str = "inlining"

    @property
    def compiles_per_second(self) -> float:
        return self.compiles / self.seconds if self.seconds > 0 else 0.0

    @property
    def gain(self) -> float:
        """Objective gain over the default, over every module with a result."""
        return _gain(self.default_objective, self.best_objective)


def search_identity(config: SearchConfig, *, guide: PolicySpec | None = None,
                    gin_config: str = "", comdat_weights: dict[str, float] | None = None,
                    identity: dict[str, Any] | None = None,
                    problem: str = "inlining") -> dict[str, Any]:
    """What search_corpus records in S/search.json and fingerprints each result with (the
    compile settings under `gin_config`, applied to this process)."""
    from mlgo.problems import get_problem
    from mlgo.search_schedule import config_settings
    from mlgo.workers.tasks import apply_gin

    if problem not in SPACES:
        raise MlgoError(f"no search for problem {problem!r}; choose one of {', '.join(SPACES)}")
    apply_gin(gin_config)  # the compile settings below are the workers'
    weights = json.dumps(sorted((comdat_weights or {}).items())).encode()
    return {**config_settings(config), "guided": guide is not None, **(identity or {}),
            "problem": problem, "comdat": bool(comdat_weights),
            "comdat_weights": hashlib.sha256(weights).hexdigest()[:16] if comdat_weights else "",
            "settings": compile_settings(get_problem(problem))}


def search_corpus(modules: Sequence[Module], out_dir: Path, config: SearchConfig, pool: Any, *,
                  guide: PolicySpec | None = None, gin_config: str = "", timeout: float = 300.0,
                  comdat_weights: dict[str, float] | None = None,
                  progress: bool = True, identity: dict[str, Any] | None = None,
                  problem: str = "inlining") -> SearchSummary:
    """Search every module without a valid result in `out_dir` (mlgo/search_store.py says
    what is kept on resume), then write the trace of all of them. `pool` runs SearchTasks
    (make_pool(task_fn=run_search_task)); `identity` names what else makes this search distinct
    (e.g. the guide's origin) for the resume check."""
    from tqdm import tqdm

    from mlgo.search_schedule import search_outcomes

    out_dir = Path(out_dir)
    want = search_identity(config, guide=guide, gin_config=gin_config,
                           comdat_weights=comdat_weights, identity=identity, problem=problem)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    with search_lock(out_dir):
        check_config(out_dir, want)
        prints = {m.name: module_fingerprint(m, want) for m in modules}
        done = reusable_results(out_dir, prints)
        todo = [m for m in modules if m.name not in done]
        tasks = [SearchTask(m, config, guide, gin_config, timeout, dict(comdat_weights or {}),
                            problem=problem) for m in todo]
        failed: list[tuple[str, str]] = []
        compiles = 0
        t0 = time.monotonic()
        with tqdm(total=len(modules), initial=len(done), desc="search", unit="mod",
                  file=sys.stderr, disable=None if progress else True, dynamic_ncols=True) as bar:
            for out in search_outcomes(config, todo, tasks, pool, gin_config=gin_config,
                                       timeout=timeout, comdat_weights=comdat_weights):
                bar.update(1)
                if not out.ok:
                    failed.append((out.module, out.error))
                    continue
                compiles += int(out.extra["compiles"])
                save_result(out_dir, out, prints[out.module])
                done[out.module] = load_result(result_path(out_dir, out.module))
                bar.set_postfix(compiles_per_s=f"{compiles / max(time.monotonic() - t0, 1e-9):.2f}")
        seconds = time.monotonic() - t0
        atomic_write_text(out_dir / FAILURES, json.dumps(
            [{"module": m, "error": e} for m, e in failed], indent=1) + "\n")
        results = [done[m.name] for m in modules if m.name in done]
        write_trace(out_dir, results, {"config": asdict(config), "guided": guide is not None},
                    problem)
    from mlgo.evaluate import linked_totals

    project = {m.name: m.project for m in modules}
    linked = linked_totals({"module": r.module, "project": project[r.module],
                            "policy": r.policy_total, "default": r.default_total,
                            "comdat": r.extra.get("comdat", {})} for r in results)
    return SearchSummary(
        problem=problem, modules=len(results), searched=len(todo) - len(failed), skipped=len(modules) - len(todo),
        failed=failed, compiles=compiles, seconds=seconds,
        workers=int(getattr(pool, "workers", 1) or 1),
        default_total=sum(r.default_total for r in results),
        best_total=sum(r.policy_total for r in results),
        default_objective=sum(r.extra["default_objective"] for r in results),
        best_objective=sum(r.extra["best_objective"] for r in results),
        linked_default=sum(p["default"] for p in linked.values()),
        linked_best=sum(p["policy"] for p in linked.values()))


def default_comdat_weights(modules: Sequence[Module], pool: Any, gin_config: str = "",
                           timeout: float = 300.0) -> dict[str, float]:
    """1/n per COMDAT text group, n = how many of `modules` define it under the default
    compile (cached baselines; `pool` runs ModuleTasks)."""
    from mlgo.compiler.measure import comdat_weights
    from mlgo.workers.tasks import ModuleTask

    tasks = [ModuleTask("inlining", m, PolicySpec(builtin="default"), gin_config=gin_config,
                        timeout=timeout) for m in modules]
    return comdat_weights({k: d for k, (_, d) in o.per_function.items()}
                          for o in pool.run(tasks) if o.ok)


def write_trace(out_dir: Path, results: Sequence[ModuleOutcome], meta: dict[str, Any],
                problem: str = "inlining") -> None:
    """The trace of the best trajectories (rewritten whole: it is cheap beside the search)."""
    from mlgo.problems import get_problem
    from mlgo.traces import TraceWriter

    header = get_problem(problem).header()
    writer = TraceWriter(out_dir, header, {"problem": problem, "policy": "search", **meta})
    for r in sorted(results, key=lambda r: r.module):
        writer.add(r)
    writer.close({"no_decisions": sum(r.actions is None for r in results)})


def format_modules(out_dir: Path, modules: Sequence[Module]) -> str:
    """One line per module with a result: decisions, compiles, kept flips, sizes."""
    lines = [f"{'module':40s} {'sites':>5s} {'compiles':>8s} {'reused':>6s} {'kept':>4s} "
             f"{'-Oz':>8s} {'best':>8s} {'change':>8s}"]
    for m in modules:
        path = result_path(out_dir, m.name)
        if not path.is_file():
            continue
        r = load_result(path, m.name)
        lines.append(f"{m.name:40s} {r.num_decisions:5d} {r.extra['compiles']:8d} "
                     f"{r.extra.get('reused', 0):6d} {r.extra['kept']:4d} {r.default_total:8.0f} "
                     f"{r.policy_total:8.0f} {100 * _change(r.default_total, r.policy_total):+7.2f}%")
    return "\n".join(lines)


def format_summary(s: SearchSummary) -> str:
    if s.problem != "inlining":
        return "\n".join([
            f"searched {s.searched} module(s) ({s.skipped} finished earlier, {len(s.failed)} "
            f"failed): {s.compiles} compiles in {s.seconds:.1f}s on {s.workers} worker(s)",
            f"{s.modules} module(s) with a result: {s.problem} objective {s.default_total:.0f} "
            f"(default) -> {s.best_total:.0f} (best), "
            f"{100 * _change(s.default_total, s.best_total):+.3f}% vs the default"])
    lines = [
        f"searched {s.searched} module(s) ({s.skipped} finished earlier, {len(s.failed)} failed): "
        f"{s.compiles} compiles in {s.seconds:.1f}s = {s.compiles_per_second:.2f} compiles/s "
        f"on {s.workers} worker(s) ({s.compiles_per_second / max(s.workers, 1):.2f} per worker)",
        f"{s.modules} module(s) with a result: .text {s.default_total:.0f} (-Oz) -> "
        f"{s.best_total:.0f} (best), {100 * _change(s.default_total, s.best_total):+.2f}% vs -Oz "
        "per object",
    ]
    if s.linked_default != s.default_total:
        lines.append(f"as linking keeps it (each COMDAT text group once per project): "
                     f"{s.linked_default:.0f} -> {s.linked_best:.0f}, "
                     f"{100 * _change(s.linked_default, s.linked_best):+.2f}%")
    if s.best_objective != s.best_total:
        lines.append(f"COMDAT-weighted objective (what the search minimized): "
                     f"{100 * _change(s.default_objective, s.best_objective):+.2f}%")
    return "\n".join(lines)
