"""Greedy flip search (mlgo/search.py) on crafted -Oz modules compiled by the real clang (the
basic search on each installed LLVM version)."""

import json
import subprocess

import numpy as np
import pytest
from corpus_fixtures import llvm_tool, on_each_llvm, on_llvm

from corpus_tools.corpus import Corpus
from mlgo.compiler.cache import BaselineCache
from mlgo.search import (
    FlipSearch,
    SearchConfig,
    load_result,
    result_path,
    run_search_task,
    search_corpus,
)
from mlgo.workers.pool import LocalPool
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

# LLVM inlines `pick` (an external function: its body stays) at all 8 call sites at -Oz,
# yet each inlined copy is bigger than the call it replaces: every single flip to "no" pays.
EXTERNAL_CALLEE = "extern int g[64]; extern void use(int);\n" \
    "int pick(int i) { return g[i & 63] * 3 + i; }\n" + \
    "".join(f"void f{j}(int i) {{ use(pick(i + {j})); }}\n" for j in range(8))
# LLVM inlines nothing here (cost 10 > threshold 5), and inlining any one site is bigger.
NOTHING_TO_GAIN = "extern int g[64]; extern void use(int);\n" \
    "static int pick(int i) { int v = g[i & 63]; if (v > 7) v = v * 3 + i; return v ^ (i << 2); }\n" + \
    "".join(f"void f{j}(int i) {{ use(pick(i * {j + 3})); }}\n" for j in range(8))
SOURCES = {"external.c": EXTERNAL_CALLEE, "nothing.c": NOTHING_TO_GAIN}


def make_oz_corpus(root, sources=SOURCES):
    """-Oz-frontend IR (every function minsize optsize), one module per source."""
    (root / "src").mkdir(parents=True)
    (root / "corpus" / "t").mkdir(parents=True)
    names = []
    for fname, text in sources.items():
        src = root / "src" / fname
        src.write_text(text)
        name = "t/" + fname
        subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(src), "-o", str(root / "corpus" / (name + ".bc"))], check=True)
        (root / "corpus" / (name + ".cmd")).write_bytes(b"-c\0-Oz")
        names.append(name)
    (root / "corpus" / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names, "llvm_version": toolchain.llvm_major()}))
    return Corpus.load(root / "corpus")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, llvm_major):
    with on_llvm(llvm_major):
        return make_oz_corpus(tmp_path_factory.mktemp(f"oz{llvm_major}-"))


@pytest.fixture
def cache(tmp_path):
    return BaselineCache(tmp_path / "cache")


def _mod(corpus, name):
    return next(m for m in corpus.modules if m.name == f"t/{name}")


@on_each_llvm
def test_search_beats_oz_on_a_crafted_module(corpus, cache):
    s = FlipSearch(_mod(corpus, "external.c"), SearchConfig(passes=2), cache=cache)
    anchor, best, final = s.run()
    default = s.problem.baseline(_mod(corpus, "external.c"), cache).total
    assert anchor.actions == [1] * 8 and anchor.size == default  # LLVM's own -Oz decisions
    assert best.size < default and best.actions == [0] * 8 and best.llvm == [1] * 8
    # Each kept flip shrank the module: 8 kept in pass 1, none in pass 2 (converged).
    assert s.kept == 8 and s.passes == 2 and s.converged
    # anchor + 8 candidates + final plain replay: pass 2's 8 candidates ([0]*k + [1], then
    # LLVM's 1s) are the trajectories pass 1 kept, so none is compiled again.
    assert s.compiles == 1 + 8 + 1 and s.reused == 8
    assert final.measurement.total == best.size and len(final.observations) == 8
    assert "callee_basic_block_count" in final.observations[0]


@on_each_llvm
def test_search_keeps_nothing_that_does_not_shrink(corpus, cache):
    s = FlipSearch(_mod(corpus, "nothing.c"), SearchConfig(passes=3), cache=cache)
    anchor, best, _ = s.run()
    assert anchor.actions == [0] * 8
    # Every candidate was tried and none kept: the first pass changed nothing, so it stopped.
    assert best is anchor and s.kept == 0 and s.passes == 1 and s.converged
    assert s.compiles == 1 + 8 + 1


def test_inlined_flips_try_only_what_llvm_inlines(corpus, cache):
    # LLVM inlines nothing in nothing.c: with flips="inlined" there is no candidate at all.
    s = FlipSearch(_mod(corpus, "nothing.c"), SearchConfig(passes=2, flips="inlined"), cache=cache)
    anchor, best, _ = s.run()
    assert best is anchor and s.compiles == 1 + 1
    # external.c: LLVM inlines all 8 sites, so the same 8 candidates as flips="all".
    s = FlipSearch(_mod(corpus, "external.c"), SearchConfig(passes=2, flips="inlined"), cache=cache)
    _, best, _ = s.run()
    assert best.actions == [0] * 8 and s.compiles == 1 + 8 + 1
    # "marginal": the same candidates, the call sites closest to the threshold first.
    s = FlipSearch(_mod(corpus, "external.c"), SearchConfig(passes=1, flips="marginal"),
                   cache=cache)
    anchor, best, _ = s.run()
    assert best.actions == [0] * 8 and s.compiles == 1 + 8 + 1
    assert len(anchor.margins) == 8 and all(m[0] > 0 for m in anchor.margins)
    order = s._order(anchor, set())
    assert [anchor.margins[k] for k in order] == sorted(anchor.margins)
    with pytest.raises(MlgoError, match="unknown search flips"):
        SearchConfig(flips="some")


def test_budget_caps_the_compiles_of_a_module(corpus, cache):
    s = FlipSearch(_mod(corpus, "external.c"), SearchConfig(passes=2, budget=5), cache=cache)
    anchor, best, final = s.run()
    assert s.compiles == 5 and not s.converged
    assert best.actions[:3] == [0, 0, 0] and best.size < anchor.size
    assert final.measurement.total == best.size
    with pytest.raises(MlgoError, match="budget below 3"):
        SearchConfig(budget=2)


def _constant_policy(tmp_path, inline: bool):
    """A policy directory whose network always answers `inline` (zero weights, output bias)."""
    from mlgo.policies.policy_dir import save_policy
    from mlgo.problems import get_problem
    from mlgo.problems.inlining.network import InliningNetwork

    header = get_problem("inlining").header()
    net = InliningNetwork(header.features, vocab={f.name: np.array([0.0, 1.0])
                                                  for f in header.features})
    arrays = net.unflatten_numpy(np.zeros(net.num_params, np.float32))
    last_bias = [n for n, _, _, _ in net._layout if n.endswith("/b")][-1]
    arrays[last_bias][:] = [-5.0, 5.0] if inline else [5.0, -5.0]
    flat = np.concatenate([arrays[n].reshape(-1) for n, _, _, _ in net._layout])
    d = tmp_path / ("always" if inline else "never")
    save_policy(d, net, flat, {"algorithm": "test"})
    return d


def test_guided_search_flips_only_where_the_policy_disagrees(corpus, cache, tmp_path):
    from mlgo.policies.loading import numpy_policy

    module = _mod(corpus, "external.c")
    agree = numpy_policy("inlining", _constant_policy(tmp_path, inline=True))
    s = FlipSearch(module, SearchConfig(guide="disagree"), guide=agree, cache=cache)
    anchor, best, _ = s.run()
    # anchor, one plain replay to rank (nothing to try), final replay
    assert best is anchor and s.compiles == 3
    disagree = numpy_policy("inlining", _constant_policy(tmp_path, inline=False))
    s = FlipSearch(module, SearchConfig(guide="disagree", passes=1), guide=disagree, cache=cache)
    _, best, _ = s.run()
    assert best.actions == [0] * 8
    # anchor + 8 candidates + a ranking replay before the pass and after each kept flip that
    # leaves something to try (not the last) + final
    assert s.compiles == 1 + 8 + 8 + 1


@pytest.mark.usefixtures("isolated_cache")
def test_search_corpus_writes_a_trace_and_resumes(corpus, tmp_path, monkeypatch):
    from mlgo.traces import read_trace

    out = tmp_path / "S"
    with LocalPool(1, task_fn=run_search_task) as pool:
        s = search_corpus(corpus.modules, out, SearchConfig(), pool, progress=False)
    assert s.modules == 2 and s.searched == 2 and s.skipped == 0 and not s.failed
    assert s.compiles == (1 + 8 + 1) + (1 + 8 + 1) and s.compiles_per_second > 0
    assert s.best_total < s.default_total
    traces = {t.module: t for t in read_trace(out)}
    ext = traces["t/external.c"]
    assert list(ext.actions) == [0] * 8 and list(ext.default_actions) == [1] * 8
    assert ext.policy_total < ext.default_total and ext.reward > 0
    assert len(ext.features) == 38  # the plain header: as a policy sees them in release
    assert list(traces["t/nothing.c"].actions) == [0] * 8 and traces["t/nothing.c"].reward == 0
    r = load_result(result_path(out, "t/external.c"))
    assert r.extra["kept"] == 8 and r.extra["flips_vs_llvm"] == 8
    # A second run finds every module done: no compile at all.
    with LocalPool(1, task_fn=run_search_task) as pool:
        again = search_corpus(corpus.modules, out, SearchConfig(), pool, progress=False)
    assert again.skipped == 2 and again.searched == 0 and again.compiles == 0
    assert again.best_total == s.best_total
    with LocalPool(1, task_fn=run_search_task) as pool, pytest.raises(MlgoError, match="passes"):
        search_corpus(corpus.modules, out, SearchConfig(passes=3), pool, progress=False)


@pytest.mark.usefixtures("isolated_cache")
def test_cli_search(corpus, tmp_path, monkeypatch, capsys):
    from mlgo.cli.main import main

    rc = main(["search", "--problem", "inlining", "--corpus", str(corpus.root), "-o",
               str(tmp_path / "S"), "--workers", "1", "--budget", "6"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "compiles/s" in out and "2 module(s) with a result" in out
    assert (tmp_path / "S" / "modules" / "t" / "external.c.npz").is_file()


class _Scripted(FlipSearch):
    """The search's logic over a made-up objective (no compiles): 4 call sites, LLVM says
    inline everywhere; size = 100 + per-site cost of the answer."""

    COST = {0: (5, 0), 1: (0, 0), 2: (0, 7), 3: (3, 1)}  # site: (cost if 0, cost if 1)

    def __init__(self, config):
        self.module = None
        self.config, self.guide = config, None
        self.compiles = self.kept = self.passes = self.reused = self.skipped = 0
        self._memo = {}
        self.converged = False

    def candidate(self, prefix):
        self._spend()
        from mlgo.search import Candidate

        actions = list(prefix) + [1] * (4 - len(prefix))
        size = 100 + sum(self.COST[k][a] for k, a in enumerate(actions))
        return Candidate(size, size, actions, [1] * 4, alts=[[1 - a] for a in actions])

    def plain_replay(self, actions, reserve=1):
        self._spend(reserve)


def test_acceptance_keeps_only_strictly_smaller_candidates():
    s = _Scripted(SearchConfig(passes=2))
    _, best, _ = s.run()
    # Site 0: 0 costs more (rejected); site 1: equal (rejected: not smaller); site 2: 0 is
    # smaller (kept); site 3: 0 costs more (rejected). Pass 2 keeps nothing.
    assert best.actions == [1, 1, 0, 1] and best.size == 100 + 0 + 0 + 0 + 1
    assert s.kept == 1 and s.passes == 2 and s.converged


@pytest.mark.usefixtures("isolated_cache")
def test_search_on_ray_matches_the_local_pool(corpus, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from mlgo.workers.pool import make_pool

    pool = make_pool(1, "local", task_fn=run_search_task)
    try:
        s = search_corpus(corpus.modules, tmp_path / "R", SearchConfig(), pool, progress=False)
    finally:
        pool.close()
    assert not ray.is_initialized()
    with LocalPool(1, task_fn=run_search_task) as local:
        ref = search_corpus(corpus.modules, tmp_path / "L", SearchConfig(), local, progress=False)
    assert not s.failed and (s.best_total, s.compiles) == (ref.best_total, ref.compiles)
    for m in corpus.modules:
        a, b = load_result(result_path(tmp_path / "R", m.name)), load_result(result_path(tmp_path / "L", m.name))
        assert list(a.actions) == list(b.actions) and a.policy_total == b.policy_total


# -- regalloc eviction --------------------------------------------------------------------------
# 16 long-lived values across a loop with calls: more than the callee-saved registers hold, so
# the allocator evicts, and the default's choices are not the cheapest (a search keeps flips).
PRESSURE = """extern void use(long);
long spin(const long *a, int n) {
  long x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3], x4 = a[4], x5 = a[5], x6 = a[6], x7 = a[7];
  long y0 = a[8], y1 = a[9], y2 = a[10], y3 = a[11], y4 = a[12], y5 = a[13], y6 = a[14], y7 = a[15];
  for (int i = 16; i < n; i++) {
    long v = a[i];
    x0 += v ^ y7; x1 ^= x0 + v; x2 += x1 * 3; x3 ^= x2 >> 1; x4 += x3 ^ y0; x5 ^= x4 + y1;
    x6 += x5 * 5; x7 ^= x6 + y2;
    if (v & 1) { use(x7); y0 += x0; y1 ^= x1; }
    y2 += x2; y3 ^= x3 + y2; y4 += y3 ^ x4; y5 ^= y4 + x5; y6 += y5 * 7; y7 ^= y6 + x6;
    if (v & 2) use(y7);
  }
  return x0 ^ x1 ^ x2 ^ x3 ^ x4 ^ x5 ^ x6 ^ x7 ^ y0 ^ y1 ^ y2 ^ y3 ^ y4 ^ y5 ^ y6 ^ y7;
}
"""


@pytest.fixture(scope="module")
def o2_corpus(tmp_path_factory):
    """-O2-frontend IR of PRESSURE and of a module with no eviction at all."""
    root = tmp_path_factory.mktemp("o2")
    (root / "corpus" / "t").mkdir(parents=True)
    names = []
    for fname, text in (("spin.c", PRESSURE), ("leaf.c", "int leaf(int x) { return x + 1; }\n")):
        src = root / fname
        src.write_text(text)
        subprocess.run([llvm_tool("clang"), "-O2", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(src), "-o", str(root / "corpus" / "t" / (fname + ".bc"))], check=True)
        (root / "corpus" / "t" / (fname + ".cmd")).write_bytes(b"-c\0-O2")
        names.append("t/" + fname)
    (root / "corpus" / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names, "llvm_version": toolchain.llvm_major()}))
    return Corpus.load(root / "corpus")


def test_regalloc_search_beats_the_default_rule(o2_corpus, cache):
    from mlgo.env import CompilerEnv, run_episode
    from mlgo.problems.regalloc.problem import default_rule
    from mlgo.problems.regalloc.search_space import RegallocSpace

    m = next(x for x in o2_corpus.modules if x.name == "t/spin.c")
    s = FlipSearch(m, SearchConfig(passes=1), cache=cache, space=RegallocSpace())
    anchor, best, final = s.run()
    rule = run_episode(CompilerEnv(s.problem, m, cache=cache), default_rule)
    # The anchor is the default-rule's compile (here also the default's: same spill cost).
    assert anchor.objective == rule.measurement.total == s.problem.baseline(m, cache).total
    assert len(anchor.actions) == rule.num_decisions > 20
    assert s.kept >= 1 and best.objective < anchor.objective
    assert final.measurement.total == best.size and len(final.observations) == len(best.actions)
    # `llvm` is the default-rule's answer along the best path, and the kept answers differ
    assert best.llvm == [default_rule(o) for o in final.observations]
    assert best.actions != best.llvm


def test_fresh_residual_regalloc_network_compiles_as_the_default_rule(o2_corpus, cache):
    from mlgo.env import CompilerEnv, run_episode
    from mlgo.policies.policy import NumpyPolicy
    from mlgo.problems import get_problem
    from mlgo.problems.regalloc.network import RegallocNetworkConfig, build_network
    from mlgo.problems.regalloc.problem import default_rule

    m = next(x for x in o2_corpus.modules if x.name == "t/spin.c")
    problem = get_problem("regalloc")
    net = build_network(problem.header(), None, RegallocNetworkConfig(residual=True))
    seen = []

    def rule(obs):
        seen.append(obs)
        return default_rule(obs)

    by_rule = run_episode(CompilerEnv(problem, m, cache=cache), rule)
    by_net = run_episode(CompilerEnv(problem, m, cache=cache), NumpyPolicy(net, net.init_params(1)).act)
    # on every observation of a real compile, and so the compile itself
    assert len(seen) > 20 and by_net.num_decisions == by_rule.num_decisions
    logits = net.logits_numpy(net.init_params(1), {k: np.stack([o[k] for o in seen]) for k in seen[0]})
    assert np.argmax(logits, axis=1).tolist() == [default_rule(o) for o in seen]
    assert by_net.measurement.total == by_rule.measurement.total


def test_regalloc_alternatives_are_evict_nothing_then_the_next_candidate():
    from mlgo.problems.regalloc.search_space import RegallocSpace
    from mlgo.search import function_groups

    def obs(mask, weight, broken):
        o = {"mask": np.zeros((1, 33), np.int64), "use_def_density": np.zeros((1, 33), np.float32),
             "nr_broken_hints": np.zeros((1, 33), np.float32)}
        for i, (w, b) in enumerate(zip(weight, broken, strict=True)):
            o["mask"][0, mask[i]] = 1
            o["use_def_density"][0, mask[i]] = w
            o["nr_broken_hints"][0, mask[i]] = b
        return o

    space = RegallocSpace.__new__(RegallocSpace)  # alternatives() needs no compiler
    o = obs([0, 3, 5, 32], [0.5, 0.2, 0.1, 0.9], [0, 0, 1, 0])
    assert space.alternatives(o, 3) == [32, 0]  # 5 is lighter but breaks a hint
    assert space.alternatives(o, 32) == [3]
    must = obs([0, 3, 5], [0.5, 0.2, 0.1], [0, 0, 0])  # evicting nothing is not allowed
    assert space.alternatives(must, 5) == [3]
    assert space.alternatives(obs([4], [0.1], [0]), 4) == []
    assert function_groups([0.9, 0.8, 0.5, 0.95, 0.9, 0.2, 0.7]) == [0, 0, 0, 1, 1, 1, 2]


@pytest.mark.usefixtures("isolated_cache")
def test_cli_regalloc_search_writes_a_regalloc_trace(o2_corpus, tmp_path, monkeypatch, capsys):
    from mlgo.cli.main import main
    from mlgo.traces import read_trace

    args = ["search", "--problem", "regalloc", "--corpus", str(o2_corpus.root), "-o",
            str(tmp_path / "S"), "--workers", "1", "--budget", "8"]
    assert main(args) == 0
    assert "2 module(s) with a result: regalloc objective" in capsys.readouterr().out
    traces = {t.module: t for t in read_trace(tmp_path / "S")}
    spin = traces["t/spin.c"]
    assert len(spin.actions) > 20 and "use_def_density" in spin.features
    assert spin.policy_total <= spin.default_total
    assert json.loads((tmp_path / "S" / "search.json").read_text())["problem"] == "regalloc"
    # spin's first two flips change no function's cost, so (one function, --cold-tries 2)
    # the rest is skipped: anchor, 2 flips, final replay
    r = load_result(result_path(tmp_path / "S", "t/spin.c"))
    assert r.extra["compiles"] == 4 and r.extra["skipped"] > 0
    assert main([*args[:6], str(tmp_path / "S0"), *args[7:], "--cold-tries", "0"]) == 0
    r = load_result(result_path(tmp_path / "S0", "t/spin.c"))
    assert r.extra["compiles"] == 8 and r.extra["skipped"] == 0
    capsys.readouterr()
    assert main([*args, "--flips", "inlined"]) == 2
    assert "are for inlining only" in capsys.readouterr().err
