"""The gym-style environment and both problems on the real clang (the basic episodes on each
installed LLVM version)."""

import pytest
from corpus_fixtures import make_generated_corpus, make_small_corpus, on_each_llvm, on_llvm

import mlgo.env
from corpus_tools.corpus import Corpus
from mlgo.compiler.cache import BaselineCache
from mlgo.problems import get_problem
from mlgo.protocol import for_llvm
from mlgo_base import toolchain
from mlgo_base.errors import CompileError, ProtocolError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, llvm_major):
    with on_llvm(llvm_major):
        return Corpus.load(make_small_corpus(tmp_path_factory.mktemp(f"c{llvm_major}-")))


@pytest.fixture(scope="module")
def evicting(tmp_path_factory, llvm_major):
    """A module where the greedy allocator evicts on every LLVM version (pressure.c's
    functions need no eviction on LLVM 22)."""
    with on_llvm(llvm_major):
        root = make_generated_corpus(tmp_path_factory.mktemp(f"e{llvm_major}-"), "regalloc", 2)
    return next(m for m in Corpus.load(root).modules if m.name == "gen/regalloc1.c")


@pytest.fixture
def cache(tmp_path):
    return BaselineCache(tmp_path / "cache")


def _mod(corpus, name):
    return next(m for m in corpus.modules if m.name == f"small/{name}")


@on_each_llvm
def test_header_comes_from_the_compiler(llvm_version):
    h = get_problem("inlining").header()
    # The compiler's own 38 features (on LLVM 19 and 22): mlgo leaves out
    # -inliner-interactive-include-default except for the llvm-default policy: LLVM 19 sends
    # `inlining_default` as 0 and overwrites callee_basic_block_count with the decision instead
    # (problem.py), and the plugin's FeatureMap has no such feature.
    assert h.feature_names == list(for_llvm(llvm_version.major).INLINE_FEATURES)
    assert len(h.features) == 38
    assert h.advice.name == "inlining_decision"
    assert {"cost_estimate", "threshold", "callsite_height"} <= set(h.feature_names)
    assert "inlining_default" not in h.feature_names
    r = get_problem("regalloc").header()
    assert r.advice.name == "index_to_evict"
    assert next(f for f in r.features if f.name == "mask").shape == (1, 33)


@on_each_llvm
def test_inlining_reset_step_and_reward(corpus, cache):
    env = mlgo.env.make("inlining", _mod(corpus, "calls.c"), cache=cache)
    obs, info = env.reset()
    assert obs is not None and obs["cost_estimate"].shape == (1,)
    steps, reward, done = 0, None, False
    while not done:
        obs, reward, done, _, info = env.step(0)  # never inline
        steps += 1
    assert steps >= 3 and obs is None
    res = info["result"]
    assert res.num_decisions == steps and res.measurement.total > 0
    # Never inlining keeps the static helpers: bigger than the default at -Oz.
    assert res.measurement.total > res.default.total and reward < 0
    assert reward == pytest.approx((res.default.total - res.measurement.total) / res.default.total)


@on_each_llvm
def test_cost_threshold_reproduces_default_on_small_module(corpus, cache):
    p = get_problem("inlining")
    env = mlgo.env.CompilerEnv(p, _mod(corpus, "calls.c"), cache=cache)
    res = mlgo.env.run_episode(env, p.heuristic("cost-threshold"))
    assert res.measurement.total == res.default.total


def test_llvm_default_replays_the_compilers_own_decisions(corpus, cache):
    # -inliner-interactive-include-default makes LLVM 19 send its default advisor's decision
    # (in the callee_basic_block_count slot, see problem.py); answering with it must give
    # exactly the object of a plain -Oz compile.
    p = get_problem("inlining").for_policy("llvm-default")
    own = for_llvm(toolchain.llvm_major()).INLINE_FEATURES
    assert p.header().feature_names == [*own, "inlining_default"]
    assert get_problem("inlining").header().feature_names == list(own)  # probed separately
    env = mlgo.env.CompilerEnv(p, _mod(corpus, "calls.c"), cache=cache)
    res = mlgo.env.run_episode(env, p.heuristic("llvm-default"))
    assert res.num_decisions >= 3 and set(res.actions) == {0, 1}
    assert res.measurement.total == res.default.total
    # Without the flag the decision is not there: a clear error, not a silent guess.
    plain = mlgo.env.CompilerEnv(get_problem("inlining"), _mod(corpus, "calls.c"), cache=cache)
    with pytest.raises(ProtocolError, match="inliner-interactive-include-default"):
        mlgo.env.run_episode(plain, p.heuristic("llvm-default"))
    assert get_problem("regalloc").for_policy("llvm-default").variant == ""


def test_llvm_default_records_release_features(corpus):
    # Recording under llvm-default replays LLVM's decisions on the plain compile, so the trace
    # holds the real callee_basic_block_count (not the decision LLVM 19 writes over it) and
    # LLVM's decisions as labels.
    from mlgo.workers.tasks import ModuleTask, PolicySpec, run_module

    out = run_module(ModuleTask("inlining", _mod(corpus, "strings.c"),
                                PolicySpec(builtin="llvm-default"), record=True))
    assert out.ok, out.error
    assert sorted(out.features) == sorted(for_llvm(toolchain.llvm_major()).INLINE_FEATURES)
    assert out.features["callee_basic_block_count"].max() > 1
    assert list(out.default_actions) == list(out.actions) and len(out.actions) >= 3
    assert out.policy_total == out.default_total


def test_replay_that_diverges_is_an_error(corpus, cache):
    env = mlgo.env.make("inlining", _mod(corpus, "calls.c"), cache=cache)
    recorded = mlgo.env.run_episode(env, lambda obs: 0).actions
    with pytest.raises(ProtocolError, match="asked for more"):
        mlgo.env.replay(env, recorded[:-1])
    with pytest.raises(ProtocolError, match="were recorded"):
        mlgo.env.replay(env, [*recorded, 0])
    assert mlgo.env.replay(env, recorded).num_decisions == len(recorded)


@on_each_llvm
def test_regalloc_reward_from_remarks(evicting, cache):
    p = get_problem("regalloc")
    env = mlgo.env.CompilerEnv(p, evicting, cache=cache)
    never = mlgo.env.run_episode(env, p.heuristic("never"))
    assert never.num_decisions > 0
    assert never.default.total > 0 and set(never.default.per_function) >= {"f1_0"}
    proxy = mlgo.env.run_episode(env, p.heuristic("proxy"))
    # Masked positions only: the compiler would reject anything else, so finishing proves it.
    assert proxy.measurement.total <= never.measurement.total


def test_baseline_is_cached(corpus, cache):
    p = get_problem("inlining")
    m = _mod(corpus, "leaf.c")
    first = p.baseline(m, cache)
    assert list(cache.root.rglob("*.json"))
    assert p.baseline(m, cache).total == first.total


def test_bad_bitcode_is_a_clear_error(tmp_path, cache):
    bad = tmp_path / "broken.bc"
    bad.write_bytes(b"BC\xc0\xde" + b"\x00" * 40)
    env = mlgo.env.make("inlining", bad, cache=cache)
    with pytest.raises(CompileError, match="broken"):
        env.reset()


def test_header_without_what_the_problem_needs_is_refused():
    from mlgo.protocol import Header, TensorSpec
    from mlgo_base.errors import ProtocolError

    p = get_problem("inlining")
    h = Header((TensorSpec("threshold", "int64_t", (1,)),), TensorSpec("inlining_decision", "int64_t", (1,)))
    with pytest.raises(ProtocolError, match="cost_estimate"):
        p.check_header(h, "hdr")
    r = get_problem("regalloc")
    bad_mask = Header((TensorSpec("mask", "int64_t", (1, 32)), TensorSpec("use_def_density", "float", (1, 32))),
                      TensorSpec("index_to_evict", "int64_t", (1,)))
    with pytest.raises(ProtocolError, match="32 positions"):
        r.check_header(bad_mask, "hdr")
    with pytest.raises(ProtocolError, match="expected advice"):
        r.check_header(Header(bad_mask.features, None), "hdr")
