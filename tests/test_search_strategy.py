"""The strong inlining search (mlgo/search_strategy.py): its moves, enumeration and budgets on
fake decision trees, and on a crafted -Oz module compiled by the real clang-19 where inlining
none of a callee's call sites is best while undoing any one of them alone loses."""

import pytest
from corpus_fixtures import generated_source
from test_search import make_oz_corpus

from mlgo.compiler.cache import BaselineCache
from mlgo.search import FlipSearch, SearchConfig, load_result, result_path, search_corpus
from mlgo.search_schedule import run_strong_task, slice_seconds
from mlgo.search_strategy import (
    ModuleOracle,
    Oracle,
    StrongConfig,
    StrongSearch,
    Trajectory,
    prefix_answer,
)
from mlgo.workers.pool import LocalPool
from mlgo_base.errors import MlgoError


def sig(callee: int, caller: int, cost: int = 0) -> tuple:
    """A call site's signature laid out as search_strategy.SITE_FEATURES."""
    return (callee, 0, 0, 0, 0, 0, cost, 5, 0, 0, caller, 0)


class FakeOracle(Oracle):
    """A compile as a queue of call sites (name, signature, LLVM's answer) asked in order;
    inlining a site in `exposes` asks next about the site it exposes (as inlining a callee
    exposes its calls). The objective is a function of {site name: answer}."""

    def __init__(self, sites, objective, exposes=None):
        self.sites, self.objective, self.exposes = sites, objective, exposes or {}
        self.compiles = 0

    def run(self, answer):
        self.compiles += 1
        queue, actions, llvm, sigs, asked = list(self.sites), [], [], [], {}
        while queue:
            name, s, d = queue.pop(0)
            a = answer(len(actions), s, d)
            actions.append(a)
            llvm.append(d)
            sigs.append(s)
            asked[name] = a
            if a == 1 and name in self.exposes:
                queue.insert(0, self.exposes[name])
        size = float(self.objective(asked))
        return Trajectory(size, size, actions, llvm, sigs)


def none_of_three(asked):
    """Three call sites of callee 1 (LLVM inlines them all): inlining none of them is 10 bytes
    smaller, undoing any one or two alone is not. A fourth site (callee 2) is neutral."""
    inlined = sum(asked[n] for n in ("a", "b", "c"))
    return 100 - 10 * (inlined == 0) + 3 * (0 < inlined < 3)


THREE_SITES = [("a", sig(1, 7), 1), ("d", sig(2, 8), 0), ("b", sig(1, 9), 1), ("c", sig(1, 9), 1)]


def test_group_move_reaches_what_single_flips_miss():
    oracle = FakeOracle(THREE_SITES, none_of_three)
    anchor = oracle.run(prefix_answer([]))
    # No single flip of the anchor improves it: a one-flip greedy search stops at 100.
    for k in range(4):
        flipped = [*anchor.actions[:k], 1 - anchor.actions[k]]
        assert oracle.run(prefix_answer(flipped)).objective >= anchor.objective
    s = StrongSearch(FakeOracle(THREE_SITES, none_of_three), StrongConfig(enumerate_max=0))
    state = s.run()
    assert state.best.objective == 90
    assert [a for a, x in zip(state.best.actions, state.best.sigs, strict=True) if x[0] == 1] == [0, 0, 0]
    assert state.local_optimum and not state.enumerated


def test_enumeration_covers_every_path_once():
    # Inlining "a" exposes "e"; inlining "e" exposes "f": paths differ in length.
    exposes = {"a": ("e", sig(3, 7), 1), "e": ("f", sig(4, 7), 0)}
    def objective(asked):
        return 50 + sum(v * (i + 1) for i, v in enumerate(asked.values())) - 20 * asked.get("f", 0)
    oracle = FakeOracle(THREE_SITES[:2], objective, exposes)
    leaves = StrongSearch(oracle, StrongConfig()).enumerate_tree(1024)

    def paths(prefix):  # brute force: every answer vector the tree allows
        t = FakeOracle(THREE_SITES[:2], objective, exposes).run(prefix_answer(prefix))
        if len(t.actions) == len(prefix):
            return [t]
        return paths([*prefix, 0]) + paths([*prefix, 1])

    every = paths([])
    assert sorted(tuple(t.actions) for t in leaves) == sorted(tuple(t.actions) for t in every)
    assert oracle.compiles == len(every) == 8  # no path compiled twice
    assert min(t.objective for t in leaves) == min(t.objective for t in every)
    # With the enumeration in run(), the optimum is found and marked as such.
    state = StrongSearch(FakeOracle(THREE_SITES[:2], objective, exposes), StrongConfig()).run()
    assert state.enumerated and state.best.objective == min(t.objective for t in every)


def test_plan_keeps_later_answers_where_positions_shift():
    # The best so far answers "d" against LLVM; a plan that inlines "a" (exposing "e" before
    # "d") must still answer "d" as the best did, at its new position.
    exposes = {"a": ("e", sig(3, 7), 1)}
    sites = [("a", sig(1, 7), 0), ("d", sig(2, 8), 0)]
    oracle = FakeOracle(sites, lambda asked: 10, exposes)
    s = StrongSearch(oracle, StrongConfig())
    ref = s.prefix([0, 1])  # "d" inlined
    t = s.plan(ref, [1, 1])
    assert t.actions == [1, 1, 1] and t.sigs[2] == sig(2, 8)


def test_compile_and_time_budgets_are_respected():
    oracle = FakeOracle(THREE_SITES, none_of_three)
    state = StrongSearch(oracle, StrongConfig(budget=3, enumerate_max=0)).run()
    assert oracle.compiles == state.compiles == 3

    class SlowOracle(FakeOracle):
        now = 0.0

        def run(self, answer):  # each compile takes one second
            SlowOracle.now += 1.0
            return super().run(answer)
    oracle = SlowOracle(THREE_SITES, none_of_three)
    StrongSearch(oracle, StrongConfig(seconds=4.0, enumerate_max=0), clock=lambda: SlowOracle.now).run()
    assert oracle.compiles == 4
    # A budget leaves perturbation on; a search with nothing left to try still stops.
    oracle = FakeOracle(THREE_SITES[:2], lambda asked: 5)
    s = StrongSearch(oracle, StrongConfig(budget=10_000, enumerate_max=0))
    s.run()
    assert s.done and oracle.compiles == 4  # the 4 paths of a 2-site tree, once each


class SizedOracle(Oracle):
    """Call sites (caller, callee, LLVM's answer, bytes of the caller when inlined, when not)
    asked in order, each caller's bytes its sites' sum, the callees external (always kept):
    what an attributing oracle reports, with `pairs` adding bytes to a caller when two of its
    sites are both flipped from LLVM's answer (an interaction a batch must not trust)."""

    def __init__(self, sites, pairs=None, weights=None):
        self.sites, self.pairs = sites, pairs or {}
        self.function_weights = weights or {}
        self.compiles = 0

    def run(self, answer):
        self.compiles += 1
        actions, llvm, sigs, names, sizes = [], [], [], [], {}
        for i, (caller, callee, d, inlined, called) in enumerate(self.sites):
            a = answer(len(actions), sig(i, i), d)
            actions.append(a)
            llvm.append(d)
            sigs.append(sig(i, i))
            names.append((caller, callee))
            sizes[caller] = sizes.get(caller, 0) + (inlined if a else called)
            sizes.setdefault(callee, 50)
        for (i, j), (where, extra) in self.pairs.items():
            if actions[i] != llvm[i] and actions[j] != llvm[j]:
                sizes[where] = sizes.get(where, 0) + extra
        objective = float(sum(self.function_weights.get(f, 1.0) * v for f, v in sizes.items()))
        return Trajectory(objective, float(sum(sizes.values())), actions, llvm, sigs, {}, names,
                          {k: float(v) for k, v in sizes.items()})


def test_batched_flips_find_independent_savings_in_few_compiles():
    # 40 callers, one call site each; flipping 5 of them saves bytes, the rest cost.
    saving = {3, 11, 19, 27, 35}
    sites = [(f"f{i}", f"g{i}", 1, 20 if i not in saving else 30, 25) for i in range(40)]
    optimum = sum(25 if i in saving else 20 for i in range(40)) + 40 * 50
    oracle = SizedOracle(sites)
    state = StrongSearch(oracle, StrongConfig(budget=6, enumerate_max=0, batch_min=8)).run()
    assert state.best.objective == optimum
    # anchor, two batches (32 + 8 flips), the five predicted savings together
    assert state.history[3][0] == 4 and state.history[3][2] == optimum
    # With a budget that covers a sweep of single flips, the climb's single flips come first.
    flips = []

    class Logged(SizedOracle):
        def run(self, answer):
            t = super().run(answer)
            flips.append(sum(a != d for a, d in zip(t.actions, t.llvm, strict=True)))
            return t
    state = StrongSearch(Logged(sites), StrongConfig(budget=41, enumerate_max=0,
                                                     batch_min=8)).run()
    assert not state.batched and flips[:5] == [0, 1, 1, 1, 1]
    flips.clear()
    StrongSearch(Logged(sites), StrongConfig(budget=39, enumerate_max=0, batch_min=8)).run()
    assert flips[:3] == [0, 32, 8]
    # Without batches, six compiles reach at most five single flips.
    unbatched = StrongSearch(SizedOracle(sites), StrongConfig(budget=6, enumerate_max=0,
                                                              batch_min=0)).run()
    assert unbatched.best.objective > optimum


def test_batched_rounds_keep_gains_as_they_go_and_end_after_a_sweep():
    # Rounds of one compile of 8 flips: the saving at site 3 is kept after the first round,
    # the one at 35 in the fifth; the rounds end once a sweep of all 40 sites keeps nothing.
    sites = [(f"f{i}", f"g{i}", 1, 30 if i in (3, 35) else 20, 25) for i in range(40)]
    s = StrongSearch(SizedOracle(sites), StrongConfig(budget=200, enumerate_max=0, batch_min=8,
                                                      batch_size=8, batch_chunk=1))
    s.state.anchor = s.prefix([])
    assert s.batch_round() and s.state.batch_cursor == 8
    flips = [k for k, (a, d) in enumerate(zip(s.state.best.actions, s.state.best.llvm,
                                              strict=True)) if a != d]
    assert flips == [3]
    rounds = 1
    while not s.state.batched:
        s.batch_round()
        rounds += 1
    assert s.state.best.objective == s.state.anchor.objective - 10
    assert rounds == 5 + 5  # the fifth keeps site 35; then a sweep of five keeps nothing


def test_batched_flips_that_clash_together_are_tried_in_halves():
    # Two flips in one caller: each saves 5 alone, together they cost 20 more.
    sites = [("f", "g", 1, 30, 25), ("f", "h", 1, 30, 25), *[(f"k{i}", f"m{i}", 1, 20, 25)
                                                                for i in range(10)]]
    oracle = SizedOracle(sites, pairs={(0, 1): ("f", 20)})
    s = StrongSearch(oracle, StrongConfig(budget=20, enumerate_max=0, batch_min=8))
    s.state.anchor = s.prefix([])
    assert s.batch_round()  # the two share their caller: separate batches, both predicted -5
    assert s.state.best.objective == s.state.anchor.objective - 5
    assert sum(a != d for a, d in zip(s.state.best.actions, s.state.best.llvm, strict=True)) == 1
    assert not s.batch_round()  # the other alone is tried again from the new best: it clashes


def test_batched_rounds_end_where_flips_share_their_functions():
    # Every call site is in one caller: a batch would hold one flip, so the rounds end at once
    # (no compile) and the climb's single flips take over.
    sites = [("f", f"g{i}", 1, 30 if i == 5 else 20, 25) for i in range(12)]
    oracle = SizedOracle(sites)
    s = StrongSearch(oracle, StrongConfig(budget=40, enumerate_max=0, batch_min=8))
    s.state.anchor = s.prefix([])
    assert not s.batch_round() and s.state.batched and oracle.compiles == 1
    assert s.run().best.objective == s.state.anchor.objective - 5


def test_batched_flips_weigh_bytes_as_the_objective_does():
    # Flipping in "a" saves 3 bytes; in "b", a COMDAT function worth 0.1 a byte, 10 bytes (1 of
    # the objective); both together cost 50 elsewhere. Weighed, "a" alone is tried first.
    sites = [("a", "x", 1, 23, 20), ("b", "y", 1, 30, 20),
             *[(f"k{i}", f"m{i}", 1, 20, 25) for i in range(8)]]
    oracle = SizedOracle(sites, pairs={(0, 1): ("z", 50)}, weights={"b": 0.1})
    s = StrongSearch(oracle, StrongConfig(budget=20, enumerate_max=0, batch_min=8,
                                          batch_singles=0))
    s.state.anchor = s.prefix([])
    assert s.batch_round()
    assert s.state.best.objective == s.state.anchor.objective - 3
    oracle.function_weights = {}  # (what a raw-byte prediction would have kept)
    s = StrongSearch(oracle, StrongConfig(budget=20, enumerate_max=0, batch_min=8,
                                          batch_singles=0))
    s.state.anchor = s.prefix([])
    s.batch_round()
    assert s.state.best.actions[1] != s.state.best.llvm[1]


def test_batch_footprints_follow_code_inlined_into_other_functions():
    # "h" is inlined into "f": a flip inside h changes f's bytes too, so h's flip and f's own
    # flip never share a compile.
    class Nested(SizedOracle):
        def run(self, answer):
            t = super().run(answer)
            if t.actions[0]:  # f inlined h: h's bytes (with its own decision) appear in f
                t.function_bytes["f"] += t.function_bytes["h"]
            t.objective = t.size = sum(t.function_bytes.values())
            return t
    sites = [("f", "h", 1, 5, 200), ("h", "x", 1, 30, 40), ("f", "y", 1, 30, 40),  # none saves
             *[(f"k{i}", f"m{i}", 1, 20, 25) for i in range(10)]]
    s = StrongSearch(Nested(sites), StrongConfig(budget=20, enumerate_max=0, batch_min=8))
    s.state.anchor = s.prefix([])
    compiled = []
    real_plan = s.plan
    s.plan = lambda ref, answers: compiled.append(list(answers)) or real_plan(ref, answers)
    s.batch_round()
    flips = [sum(a != b for a, b in zip(c, s.state.anchor.actions, strict=True)) for c in compiled]
    assert flips == [11, 1, 1]  # (without h's inliner in its footprint: [12, 1])


def test_schedule_splits_time_without_letting_a_module_eat_it():
    rates = {"a": 100.0, "b": 1.0, "c": 1.0}
    first = slice_seconds(60.0, 2, rates, first_round=True)
    assert first == {"a": 20.0, "b": 20.0, "c": 20.0}  # half of 120 worker-seconds, evenly
    later = slice_seconds(60.0, 2, rates, first_round=False)
    assert later["a"] == 60.0  # capped at half of what is left
    assert later["b"] == pytest.approx(120 / 102) and sum(later.values()) <= 120.0


def test_strategy_settings_are_checked():
    with pytest.raises(MlgoError, match="strong search"):
        SearchConfig(time_budget=60.0)
    with pytest.raises(MlgoError, match="unknown search strategy"):
        SearchConfig(strategy="best")
    with pytest.raises(MlgoError, match="--flips and --guide"):
        SearchConfig(strategy="strong", flips="inlined")


# -- the real compiler ------------------------------------------------------------------------------
# LLVM inlines `pick` at its three call sites (its body is then deleted). Undoing one site keeps
# the body and two copies (bigger); inlining none keeps the body once and three calls: smallest.
NONE_OF_THREE = ("extern int g[64]; extern void use(int);\n"
                 "static int pick(int i) { return g[i & 63] * 3 + i; }\n"
                 + "".join(f"void f{j}(int i) {{ use(pick(i + {j})); }}\n" for j in range(3)))


@pytest.fixture(scope="module")
def none_corpus(tmp_path_factory):
    return make_oz_corpus(tmp_path_factory.mktemp("none"), {"none.c": NONE_OF_THREE})


def test_real_module_where_inlining_none_is_best(none_corpus, tmp_path):
    module = none_corpus.modules[0]
    cache = BaselineCache(tmp_path / "cache")
    anchor, greedy, _ = FlipSearch(module, SearchConfig(), cache=cache).run()
    assert anchor.actions == [1, 1, 1] and greedy.objective == anchor.objective
    state = StrongSearch(ModuleOracle(module, cache=cache), StrongConfig(enumerate_max=0)).run()
    assert state.best.actions == [0, 0, 0] and state.best.objective < greedy.objective


def test_attributing_oracle_names_call_sites_and_sizes_functions(none_corpus, tmp_path):
    module = none_corpus.modules[0]
    cache = BaselineCache(tmp_path / "cache")
    plain = ModuleOracle(module, cache=cache)
    named = ModuleOracle(module, cache=cache, attribute=True)
    for answers in ([1, 1, 1], [0, 0, 0]):
        a, b = plain.run(prefix_answer(answers)), named.run(prefix_answer(answers))
        assert (b.actions, b.llvm) == (a.actions, a.llvm)
        assert b.sigs == [x + y for x, y in zip(a.sigs, b.sites, strict=True)]  # names added
        assert b.objective == a.objective and not a.sites and not a.function_bytes
        assert sorted(b.sites) == [("f0", "pick"), ("f1", "pick"), ("f2", "pick")]
        assert {"f0", "f1", "f2"} <= set(b.function_bytes)
        # pick's body is deleted once every call is inlined, kept when none is
        assert ("pick" in b.function_bytes) == (answers == [0, 0, 0])
        assert sum(b.function_bytes.values()) <= b.size


def test_search_corpus_strong_with_a_time_budget(none_corpus, tmp_path):
    config = SearchConfig(strategy="strong", time_budget=60.0)
    with LocalPool(1, task_fn=run_strong_task) as pool:
        summary = search_corpus(none_corpus.modules, tmp_path / "s", config, pool, progress=False)
    assert summary.modules == 1 and not summary.failed
    r = load_result(result_path(tmp_path / "s", none_corpus.modules[0].name))
    assert list(r.actions) == [0, 0, 0] and r.extra["enumerated"]
    assert r.policy_total < r.default_total and r.features  # replayed on the plain compile


class StopAfterFirstRound:
    """A pool that runs the first round of slices, then stops the search as a kill would."""

    def __init__(self, pool):
        self.pool, self.workers = pool, pool.workers

    def run(self, tasks):
        yield from self.pool.run(tasks)
        raise KeyboardInterrupt


def test_an_interrupted_strong_time_budget_search_keeps_the_modules_it_finished(tmp_path):
    corpus = make_oz_corpus(tmp_path / "c", {"none.c": NONE_OF_THREE,
                                             "big.c": generated_source("inlining", 0)})
    out = tmp_path / "s"
    with LocalPool(1, task_fn=run_strong_task) as pool, pytest.raises(KeyboardInterrupt):
        search_corpus(corpus.modules, out, SearchConfig(strategy="strong", time_budget=20.0),
                      StopAfterFirstRound(pool), progress=False)
    # none.c is enumerated within its first slice: its result was saved then, replayed.
    small = result_path(out, "t/none.c")
    r = load_result(small)
    assert list(r.actions) == [0, 0, 0] and r.extra["enumerated"] and r.features
    saved = small.stat().st_mtime_ns
    # Resumed with what is left of a run's time (another budget): none.c is not searched again.
    with LocalPool(1, task_fn=run_strong_task) as pool:
        summary = search_corpus(corpus.modules, out,
                                SearchConfig(strategy="strong", time_budget=10.0), pool,
                                progress=False)
    assert summary.modules == 2 and summary.skipped >= 1 and not summary.failed
    assert small.stat().st_mtime_ns == saved


def test_cli_strong_search_and_its_refusals(none_corpus, tmp_path, capsys):
    from mlgo.cli.main import main

    base = ["search", "--problem", "inlining", "--corpus", str(none_corpus.root), "--workers", "1"]
    assert main([*base, "-o", str(tmp_path / "g"), "--time-budget", "1m"]) == 2
    assert "--time-budget is for --strategy strong" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "-o", str(tmp_path / "g"), "--strategy", "strong", "--time-budget", "5x"])
    assert "not a number: '5x'" in capsys.readouterr().err
    out = tmp_path / "s"
    assert main([*base, "-o", str(out), "--strategy", "strong", "--time-budget", "1m"]) == 0
    assert "-Oz" in capsys.readouterr().out
    assert list(load_result(result_path(out, none_corpus.modules[0].name)).actions) == [0, 0, 0]
    # The same directory with other strategy settings is refused, not mixed.
    assert main([*base, "-o", str(out), "--strategy", "strong"]) == 2
    assert "other settings (time_budget)" in capsys.readouterr().err
