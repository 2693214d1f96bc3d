"""The strong inlining search: moves beyond single flips, and a schedule that spends a time
budget across a corpus where it pays (`mlgo search --strategy strong`; the greedy one-way search
of mlgo/search.py stays the default).

Why: on small modules the best decision vector is often one that no single flip of LLVM's
decisions leads to (inlining several call sites together, or none of a callee's call sites
where undoing any one alone saves nothing), so a greedy single-flip search stops short of it.

A decision vector is a path through a tree: the call sites the inliner asks about depend on the
earlier answers (inlining a call exposes the callee's calls). A compile is driven by an answer
function; two kinds of candidate:
  prefix  answer a fixed prefix, then LLVM's own decision everywhere after (exact: the same
          prefix always asks about the same call sites).
  plan    the current best trajectory with some answers changed: answers are matched to the
          asked call sites by a signature of the call site (callee and cost features), since
          after a changed answer the positions shift; an unmatched call site gets LLVM's answer.

Per module (StrongSearch.run), within its compile budget and deadline:
  enumerate  a module whose anchor asks at most `enumerate_max` decisions is searched
             exhaustively (every path of the tree, at most `enumerate_leaves` compiles);
             exhaustive is the best search there.
  batched    a module whose anchor asks at least `batch_min` decisions, when what is left of
             its budget would not cover a sweep of single flips (one compile each), first gets
             rounds of batched single flips (StrongSearch.batch_round): one compile tries
             many flips that change disjoint functions, each flip's effect read off its own
             functions' bytes; the flips predicted to save are then compiled together (then
             halves).
             Needs an attributing oracle (the plugin's compile, which names each call site).
             On a C++ module with 1,406 decisions (jsoncpp's json_writer.cpp), 300 s found
             -1.86% this way against -0.55% by single flips; where single flips had time to
             cover the module they did as well or better (benchmarks/RESULTS.md, "Search: how
             much there is to take").
  local      first-improvement hill climbing over the move list of the current best, rebuilt
             after every kept move: every single flip in both directions, then group moves (all
             call sites of one callee, all of one caller, everything, set to inline / not),
             then pairs of flips in one caller. A kept move restarts the list from the single
             flips (a second greedy pass after a group move).
  perturb    once no move improves: iterated local search from a random 2-4 flip perturbation
             of the best (kept only if its own local climb ends below the best), while budget
             is left (never without a budget: it has no natural end).

Across a corpus, with a time budget: mlgo/search_schedule.py.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corpus_tools.corpus import Module
from mlgo.problems.base import Measurement
from mlgo_base.errors import MlgoError, ProtocolError

STRATEGIES = ("greedy", "strong")
# Features of the call site that do not change when other call sites of the same caller are
# decided: they match a call site across compiles whose earlier answers differ.
SITE_FEATURES = ("callee_conditionally_executed_blocks", "is_callee_avail_external", "num_loops",
                 "is_multiple_blocks", "nr_ctant_params", "constant_args", "cost_estimate",
                 "threshold", "sroa_savings", "callsite_cost", "caller_users",
                 "is_caller_avail_external")
CALLEE_KEY = slice(0, 4)  # the callee's own features in a signature
COARSE_KEY = slice(0, 6)  # callee plus constant arguments: a looser match
CALLER_KEY = slice(10, 12)
MATCH_WINDOW = 64
STALLED_PERTURBATIONS = 50  # perturbations in a row that compiled nothing new: stop  # how far ahead of the last match a plan looks for the asked call site


def check_strategy(config: Any) -> None:
    """A SearchConfig's strategy settings, refused with one line when they make no sense."""
    if config.strategy not in STRATEGIES:
        raise MlgoError(f"unknown search strategy {config.strategy!r}; choose one of "
                        f"{', '.join(STRATEGIES)}")
    if config.time_budget < 0 or config.enumerate_max < 0:
        raise MlgoError("search time budget and enumerate_max must be at least 0")
    if config.enumerate_max > 12:
        raise MlgoError(f"enumerating trees of up to {config.enumerate_max} decisions means up "
                        "to thousands of compiles per module; at most 12")
    if config.strategy == "greedy" and config.time_budget:
        raise MlgoError("a time budget is for the strong search (--strategy strong)")
    if config.strategy == "strong" and (config.guide != "none" or config.flips != "all"):
        raise MlgoError("the strong search tries both directions and takes no guide: "
                        "--flips and --guide are for --strategy greedy")


Answer = Callable[[int, tuple, int], int]  # (position, signature, LLVM's decision) -> decision


@dataclass
class Trajectory:
    """One compile: its objective, size, and per asked call site the answer, LLVM's own
    decision and the call site's signature."""

    objective: float
    size: float
    actions: list[int]
    llvm: list[int]
    sigs: list[tuple] = field(default_factory=list)
    per_function: dict[str, float] = field(default_factory=dict)
    # With an attributing oracle: the (caller, callee) of each asked call site, and the bytes
    # of each function of the object.
    sites: list[tuple[str, str]] = field(default_factory=list)
    function_bytes: dict[str, float] = field(default_factory=dict)


class Oracle:
    """Compiles a module under an answer function (one compile per call)."""

    # What a byte of a function is worth to the objective, for functions that are not worth a
    # byte (COMDAT functions under a COMDAT-aware objective); batched flips weigh by it.
    function_weights: dict[str, float] = {}

    def run(self, answer: Answer) -> Trajectory:
        raise NotImplementedError


class ModuleOracle(Oracle):
    """The real compile: clang-19's interactive inliner with LLVM's decision sent along.
    `attribute`: through mlgo's inliner plugin instead (the same decisions give the same
    object: benchmarks/RESULTS.md, "Serving: compile-time overhead and parity"), which names
    each call site's caller and callee, and with each function's bytes measured: what batched
    flips need."""

    def __init__(self, module: Module, objective: Callable[[Any], float] | None = None,
                 timeout: float = 300.0, cache: Any = None, attribute: bool = False,
                 function_weights: dict[str, float] | None = None) -> None:
        import copy

        from mlgo.compiler.cache import BaselineCache
        from mlgo.problems import get_problem
        from mlgo.problems.inlining.problem import LLVM_DEFAULT

        self.module = module
        self.problem = get_problem("inlining").for_policy(LLVM_DEFAULT)
        self.objective = objective or (lambda m: m.total)
        self.timeout = timeout
        self.cache = cache or BaselineCache()
        self.attribute = attribute
        self.function_weights = dict(function_weights or {})
        if attribute:
            from mlgo.serving.plugin import channel_plugin

            self.problem = copy.copy(self.problem)  # (its `plain`, the final replay's, stays)
            self.problem.plugin = str(channel_plugin())
            self.problem.function_sizes = True

    def run(self, answer: Answer) -> Trajectory:
        from mlgo.compiler.measure import FUNCTION_PREFIX
        from mlgo.env import CompilerEnv
        from mlgo.problems.inlining.problem import llvm_default

        env = CompilerEnv(self.problem, self.module, cache=self.cache, timeout=self.timeout,
                          record=False)
        actions: list[int] = []
        llvm: list[int] = []
        sigs: list[tuple] = []
        sites: list[tuple[str, str]] = []
        try:
            obs, info = env.reset()
            while obs is not None:
                d = llvm_default(obs)
                sig = tuple(int(np.asarray(obs[f]).reshape(-1)[0]) for f in SITE_FEATURES)
                if self.attribute:  # the names make a plan's matches exact across callers
                    site = info["call_site"]
                    sites.append((sys.intern(site.caller), sys.intern(site.callee)))
                    sig += sites[-1]
                a = int(answer(len(actions), sig, d))
                actions.append(a)
                llvm.append(d)
                sigs.append(sig)
                obs, _, _, _, info = env.step(a)
        finally:
            env.close()
        assert env.result is not None
        m = env.result.measurement
        per_function = {k: v for k, v in m.per_function.items()
                        if not k.startswith(FUNCTION_PREFIX)}
        functions = {sys.intern(k[len(FUNCTION_PREFIX):]): v for k, v in m.per_function.items()
                     if k.startswith(FUNCTION_PREFIX)}
        return Trajectory(float(self.objective(Measurement(m.total, per_function))), m.total,
                          actions, llvm, sigs, per_function, sites, functions)


def prefix_answer(prefix: Sequence[int]) -> Answer:
    return lambda i, sig, d: prefix[i] if i < len(prefix) else d


def plan_answer(ref: Trajectory, answers: Sequence[int]) -> Answer:
    """`answers` along `ref`'s call sites, matched by signature (exact first, then coarse,
    within MATCH_WINDOW of the last match); LLVM's decision where nothing matches."""
    state = {"next": 0}
    # (a signature's names, when the oracle sends them, stay in the coarse key)
    coarse = [s[COARSE_KEY] + s[len(SITE_FEATURES):] for s in ref.sigs]

    def answer(i: int, sig: tuple, d: int) -> int:
        j0 = state["next"]
        window = range(j0, min(j0 + MATCH_WINDOW, len(ref.sigs)))
        hit = next((j for j in window if ref.sigs[j] == sig), None)
        if hit is None:
            key = sig[COARSE_KEY] + sig[len(SITE_FEATURES):]
            hit = next((j for j in window if coarse[j] == key), None)
        if hit is None:
            return d
        state["next"] = hit + 1
        return int(answers[hit])
    return answer


class OutOfBudget(Exception):
    pass


def _digest(*parts: Sequence[Any]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(repr(tuple(p)).encode())
        h.update(b"\1")
    return h.digest()


@dataclass
class StrongState:
    """What a search carries from one slice to the next (picklable)."""

    anchor: Trajectory | None = None
    best: Trajectory | None = None
    tried: set[bytes] = field(default_factory=set)  # move digests tried from `best`
    compiles: int = 0
    seconds: float = 0.0
    kept: int = 0
    enumerated: bool = False  # every path of the tree compiled: `best` is the optimum
    local_optimum: bool = False  # no move of the list improves `best`
    exhausted: bool = False  # perturbations keep landing on compiles already made
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (compiles, s, best)
    seed: int = 0
    cursor: int = 0  # the single flip the climb tries first
    # The tree as compiled so far: the call site (signature, LLVM's answer) asked after each
    # answered prefix, and the compiles by their full answers (both keyed by _digest).
    nodes: dict[bytes, tuple[tuple, int]] = field(default_factory=dict)
    leaves: dict[bytes, Trajectory] = field(default_factory=dict)
    batched: bool = False  # batched flip rounds ended (a sweep of every call site kept nothing)
    batch_cursor: int = 0  # the call site the next batched round starts from
    batch_swept: int = 0  # call sites the rounds since the last kept move covered


@dataclass(frozen=True)
class StrongConfig:
    budget: int = 0  # compiles (0: none)
    seconds: float = 0.0  # wall time (0: none)
    enumerate_max: int = 8  # anchor decisions up to which the tree is enumerated (0: never)
    enumerate_leaves: int = 1024
    pairs_max: int = 400  # pair moves per move list
    batch_min: int = 64  # anchor decisions from which batched flip rounds come first (0: never)
    batch_size: int = 32  # flips per batched compile at most
    batch_chunk: int = 16  # batched compiles per round, before its predicted gains are tried
    batch_singles: int = 8  # predicted gains then tried alone, when together they were not one


class StrongSearch:
    """The strong search on one module (see the module docstring)."""

    def __init__(self, oracle: Oracle, config: StrongConfig, state: StrongState | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.oracle = oracle
        self.config = config
        self.state = state or StrongState()
        self.clock = clock
        self._memo: dict[bytes, Trajectory] = {}  # by candidate
        self._compiles0 = self.state.compiles
        self._start = clock()
        self.rng = random.Random(self.state.seed)

    @property
    def done(self) -> bool:
        """Nothing left to try, whatever the budget."""
        return self.state.enumerated or self.state.exhausted

    def _can_perturb(self) -> bool:
        return bool(self.config.budget or self.config.seconds)

    # -- compiles -----------------------------------------------------------------------------
    def _known(self, answer: Answer) -> Trajectory | None:
        """The compile `answer` would make, if it is a path of the tree compiled before."""
        p: list[int] = []
        while True:
            leaf = self.state.leaves.get(_digest(p))
            if leaf is not None:
                return leaf
            node = self.state.nodes.get(_digest(p))
            if node is None:
                return None
            p.append(int(answer(len(p), *node)))

    def _compile(self, key: bytes, make_answer: Callable[[], Answer]) -> Trajectory:
        """The compile under the answer function `make_answer()` makes, or the earlier one
        that answered the same (compiles are deterministic)."""
        hit = self._memo.get(key) or self._known(make_answer())
        if hit is not None:
            self._memo[key] = hit
            return hit
        if self._spent():  # (a compile that would overrun the time is not started)
            raise OutOfBudget
        t0 = self.clock()
        traj = self.oracle.run(make_answer())
        s = self.state
        s.compiles += 1
        s.seconds += self.clock() - t0
        self._memo[key] = traj
        self._add_path(traj)
        if s.best is None or traj.objective < s.best.objective:
            if s.best is not None:
                s.kept += 1
            s.best = traj
            s.tried = set()
            s.local_optimum = False
        s.history.append((s.compiles, s.seconds, s.best.objective))
        return traj

    def _add_path(self, traj: Trajectory) -> None:
        for k in range(len(traj.actions)):
            self.state.nodes[_digest(traj.actions[:k])] = (traj.sigs[k], traj.llvm[k])
        self.state.leaves[_digest(traj.actions)] = traj

    def prefix(self, prefix: Sequence[int]) -> Trajectory:
        """Answer `prefix`, then LLVM's own decision at every later call site."""
        traj = self._compile(_digest(prefix), lambda: prefix_answer(prefix))
        if len(traj.actions) < len(prefix):
            raise ProtocolError(f"replay diverged: the compile asked for {len(traj.actions)} "
                                f"decisions, the prefix has {len(prefix)}")
        return traj

    def plan(self, ref: Trajectory, answers: Sequence[int]) -> Trajectory:
        """`answers` along `ref`'s call sites. Where they change one answer of `ref` and keep
        the rest, and the rest were LLVM's own, this is exactly a prefix candidate."""
        first = next((k for k, (x, y) in enumerate(zip(answers, ref.actions, strict=True))
                      if x != y), len(answers))
        if answers[first + 1:] == ref.actions[first + 1:] == ref.llvm[first + 1:]:
            return self.prefix(answers[:first + 1])
        return self._compile(_digest(ref.actions, answers, ref.sigs),
                             lambda: plan_answer(ref, answers))

    # -- moves --------------------------------------------------------------------------------
    def enumerate_tree(self, leaves: int) -> list[Trajectory]:
        """Every path of the decision tree (each a compile), fewest answers that differ from
        LLVM's first (so a budget that ends it early has tried the nearest paths: single
        flips, then pairs, ...); OutOfBudget past `leaves` compiles."""
        out: list[Trajectory] = []
        seen: set[bytes] = set()
        queue: list[tuple[int, int, list[int]]] = [(0, 0, [])]
        order = 0
        while queue:
            flips, _, p = heapq.heappop(queue)
            traj = self.prefix(p)
            key = _digest(traj.actions)
            if key not in seen:
                seen.add(key)
                out.append(traj)
                if len(out) > leaves:
                    raise OutOfBudget
            for k in range(len(p), len(traj.actions)):
                order += 1
                heapq.heappush(queue, (flips + 1, order, [*traj.actions[:k], 1 - traj.actions[k]]))
        return out

    def moves(self, best: Trajectory, start: int = 0) -> Iterator[list[int]]:
        """The answers of every move from `best`, most promising kinds first; single flips
        from position `start` on, then those before it."""
        a = best.actions
        n = len(a)
        for j in range(n):
            k = (start + j) % n
            yield [*a[:k], 1 - a[k], *a[k + 1:]]
        groups: dict[tuple, list[int]] = {}
        for k, s in enumerate(best.sigs):
            groups.setdefault(("callee", s[CALLEE_KEY]), []).append(k)
            groups.setdefault(("caller", s[CALLER_KEY]), []).append(k)
        groups[("all",)] = list(range(n))
        seen: set[tuple] = set()
        for members in groups.values():
            if len(members) < 2 or tuple(members) in seen:
                continue
            seen.add(tuple(members))
            for value in (0, 1):
                if any(a[k] != value for k in members):
                    yield [value if k in members else a[k] for k in range(n)]
        pairs = 0
        for members in sorted(seen, key=len):
            for i, x in enumerate(members):
                for y in members[i + 1:]:
                    if pairs >= self.config.pairs_max:
                        return
                    pairs += 1
                    b = list(a)
                    b[x], b[y] = 1 - b[x], 1 - b[y]
                    yield b

    def batch_round(self) -> bool:
        """One round of batched single flips from the best; True when it kept a move. Sets
        `batched` once the rounds since the last kept move have tried every call site.

        A compile answers the best's decisions with several of them flipped, chosen so that no
        two flips can change the same function: a flip changes its caller and every function
        the caller's code was inlined into, and the callee's own body only when the flip can
        remove or revive it (the callee is gone in the best, or the flip inlines a call that no
        other asked call site leaves standing). Each flip's change is then read off the bytes of
        its own functions, weighed as the objective weighs them. A round packs the flips from
        `batch_cursor` on into at most `batch_chunk` compiles of at most `batch_size` flips
        (a flip no compile has room for waits for a later round);
        the flips predicted to save are then compiled together, then the better half of them,
        and so on down to the best one alone, and when none of that is kept a few of the next
        alone. So a module with thousands of call sites is read in about a hundred compiles
        instead of thousands, and a round's gains are kept before the next round starts. A
        round whose compiles would hold fewer than two flips each on average ends the rounds
        instead: most call sites are then in the same few functions."""
        s = self.state
        best = s.best
        assert best is not None
        n = len(best.actions)
        if not best.sites or len(best.sites) != n or not best.function_bytes:
            s.batched = True
            return False
        into: dict[str, set[str]] = {}
        standing: dict[str, int] = {}  # call sites left calling each callee
        for (caller, callee), a in zip(best.sites, best.actions, strict=True):
            if a:
                into.setdefault(callee, set()).add(caller)
            else:
                standing[callee] = standing.get(callee, 0) + 1

        def footprint(j: int) -> set[str]:
            caller, callee = best.sites[j]
            out: set[str] = set()
            stack = [caller]
            while stack:
                f = stack.pop()
                if f not in out:
                    out.add(f)
                    stack.extend(into.get(f, ()))
            if callee not in best.function_bytes or (
                    not best.actions[j] and standing.get(callee, 0) <= 1):
                out.add(callee)
            return out

        def flipped(positions: Sequence[int]) -> list[int]:
            answers = list(best.actions)
            for j in positions:
                answers[j] = 1 - answers[j]
            return answers

        c = self.config
        feet: dict[int, set[str]] = {}
        batches: list[tuple[set[str], list[int]]] = []
        deferred = None  # the first call site left for a later round (no batch had room)
        for i in range(n):
            j = (s.batch_cursor + i) % n
            # (a full copy and digest per call site: only when something was tried from here)
            if s.tried and _digest(flipped([j])) in s.tried:
                continue
            fp = footprint(j)
            k = next((k for k, (used, members) in enumerate(batches)
                      if len(members) < c.batch_size and used.isdisjoint(fp)), None)
            if k is None:
                if len(batches) >= c.batch_chunk:
                    deferred = i if deferred is None else deferred
                    continue
                batches.append((set(), []))
                k = len(batches) - 1
            batches[k][0].update(fp)
            batches[k][1].append(j)
            feet[j] = fp
        if sum(len(m) for _, m in batches) < 2 * len(batches):
            # Most flips change the same few functions: a batch holds one or two of them, and
            # the climb's single flips, each kept as soon as it saves, do better there.
            s.batched = True
            return False
        if deferred is not None:
            s.batch_cursor = (s.batch_cursor + deferred) % n
        weight = self.oracle.function_weights
        predicted: dict[int, float] = {}
        for _, members in batches:  # (a batch that is smaller itself becomes the best)
            t = self.plan(best, flipped(members))
            for j in members:
                predicted[j] = sum(weight.get(f, 1.0) * (t.function_bytes.get(f, 0.0)
                                                         - best.function_bytes.get(f, 0.0))
                                   for f in feet[j])
        s.tried.update(_digest(flipped(m)) for _, m in batches if len(m) == 1)
        gains = [j for d, j in sorted((d, j) for j, d in predicted.items() if d < 0)]
        chosen = gains
        while chosen and s.best is best:
            self.plan(best, flipped(chosen))
            chosen = chosen[:len(chosen) // 2]
        for j in gains[1:1 + c.batch_singles]:
            key = _digest(flipped([j]))
            if s.best is best and key not in s.tried:
                s.tried.add(key)
                self.plan(best, flipped([j]))
        if s.best is not best:
            s.batch_swept = 0
            return True
        s.batch_swept += len(feet)
        s.batched = s.batch_swept >= n or not feet
        return False

    def climb(self) -> None:
        """First-improvement hill climbing over the move list until no move improves."""
        s = self.state
        while not s.local_optimum:
            assert s.best is not None
            best = s.best
            for answers in self.moves(best, s.cursor):
                key = _digest(answers)
                if key in s.tried:
                    continue
                s.tried.add(key)
                self.plan(best, answers)
                if s.best is not best:
                    # As in the greedy pass, go on after the first changed answer: the flips
                    # before it were just tried (from a trajectory that differs only later).
                    s.cursor = 1 + next((k for k, (x, y) in enumerate(
                        zip(s.best.actions, best.actions, strict=False)) if x != y), 0)
                    break
            else:
                s.local_optimum = True

    def perturb(self) -> None:
        """One round of iterated local search from a random perturbation of the best."""
        s = self.state
        assert s.best is not None
        best = s.best
        n = len(best.actions)
        if n < 2:
            self.state.exhausted = True
            return
        answers = list(best.actions)
        for k in self.rng.sample(range(n), min(n, self.rng.randint(2, 4))):
            answers[k] = 1 - answers[k]
        cur = self.plan(best, answers)
        for _ in range(3):  # a short single-flip climb from the perturbed point
            if s.best is not best:
                return
            better = None
            for k in range(len(cur.actions)):
                b = [*cur.actions[:k], 1 - cur.actions[k], *cur.actions[k + 1:]]
                t = self.plan(cur, b)
                if t.objective < cur.objective:
                    better = t
                    break
            if better is None:
                return
            cur = better

    def _spent(self) -> bool:
        c = self.config
        return bool((c.budget and self.state.compiles - self._compiles0 >= c.budget)
                    or (c.seconds and self.clock() - self._start + self._mean_compile()
                        > c.seconds))

    def _mean_compile(self) -> float:
        return self.state.seconds / self.state.compiles if self.state.compiles else 0.0

    def _fits(self, compiles: int) -> bool:
        """Whether `compiles` more compiles fit in what is left of the budget."""
        c = self.config
        if c.budget and compiles > c.budget - (self.state.compiles - self._compiles0):
            return False
        return not c.seconds or (compiles * self._mean_compile()
                                 <= c.seconds - (self.clock() - self._start))

    def _enumerate(self) -> None:
        try:
            self.enumerate_tree(self.config.enumerate_leaves)
            self.state.enumerated = True
        except OutOfBudget:
            if self._spent():
                raise

    def run(self) -> StrongState:
        """Enumerate a small tree when it fits the budget; otherwise climb, then enumerate a
        small tree as far as the budget goes (fewest flips first), then perturb."""
        s = self.state
        c = self.config
        try:
            if s.anchor is None:
                s.anchor = self.prefix([])
            n = len(s.anchor.actions)
            small = bool(c.enumerate_max) and n <= c.enumerate_max
            if small and not s.enumerated and self._fits(2 ** n):
                self._enumerate()
            if s.enumerated:
                return s
            while (c.batch_min and n >= c.batch_min and not s.batched
                   and not self._fits(len(s.best.actions) if s.best else n)):
                self.batch_round()
            self.climb()
            if small:
                self._enumerate()
                if s.enumerated:
                    return s
            stalled = 0
            while self._can_perturb() and not s.exhausted:
                before = s.compiles
                self.perturb()
                self.climb()
                stalled = 0 if s.compiles > before else stalled + 1
                s.exhausted = stalled >= STALLED_PERTURBATIONS
        except OutOfBudget:
            pass
        finally:
            s.seed = self.rng.randrange(1 << 30)
        return s
