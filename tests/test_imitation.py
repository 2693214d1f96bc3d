"""`mlgo train --algorithm imitation`: cloning the best of search, LLVM and the policy, in
rounds where the policy guides the next search; on crafted -Oz modules with the real clang-19."""

import json

import pytest
from corpus_fixtures import SOURCES as SMALL
from corpus_fixtures import llvm_tool
from test_search import EXTERNAL_CALLEE, NOTHING_TO_GAIN, make_oz_corpus

from mlgo.cli.main import main
from mlgo.policies.loading import numpy_policy
from mlgo_base import toolchain

# Held out: the same pattern as EXTERNAL_CALLEE with another body and more callers.
VALIDATION = "extern int h[32]; extern void put(long);\n" \
    "int choose(int i) { return h[i & 31] * 5 - i; }\n" + \
    "".join(f"void g{j}(int i) {{ put(choose(i - {j})); }}\n" for j in range(10))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("oz")
    c = make_oz_corpus(root, {"external.c": EXTERNAL_CALLEE, "nothing.c": NOTHING_TO_GAIN,
                              "calls.c": SMALL["calls.c"], "validation.c": VALIDATION})
    return c.root


def _search_then_run_dir(corpus, tmp_path, train):
    """Search `corpus` once (the cache in tmp_path) and make a run directory whose split trains
    on `train` and validates on t/validation.c: what an imitation run starts from."""
    search = tmp_path / "S"
    assert main(["search", "--problem", "inlining", "--corpus", str(corpus), "-o", str(search),
                 "--workers", "1", "--passes", "1"]) == 0
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"train": train, "validation": ["t/validation.c"]}))
    return search, out


@pytest.mark.usefixtures("isolated_cache")
def test_imitation_rounds_learn_from_search(corpus, tmp_path, monkeypatch):
    from mlgo.traces import read_trace

    train = ["t/external.c", "t/nothing.c", "t/calls.c"]
    search, out = _search_then_run_dir(corpus, tmp_path, train)
    argv = ["train", "--problem", "inlining", "--algorithm", "imitation", "--corpus", str(corpus),
            "-o", str(out), "--search", str(search), "--workers", "1",
            "--gin_bindings", "imitation.ImitationConfig.rounds = 2",
            "--gin_bindings", "imitation.ImitationConfig.epochs = 40"]
    assert main(argv) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in log] == [0, 1]
    first, second = log
    # Round 0 learns from the given search; round 1 searched again, guided by the policy.
    assert "search/compiles" not in first and second["search/compiles"] > 0
    assert not (out / "search" / "round-0").exists() and (out / "search" / "round-1" / "trace.json").is_file()
    assert first["imitation/modules"] == 3 and first["imitation/search_gain"] > 0.05
    assert first["imitation/best_gain"] >= first["imitation/search_gain"]
    assert first["imitation/from_search"] >= 1
    # The kept flips are counted, and how many of them the cloned policy makes.
    assert first["imitation/flips"] >= 1 and 0.0 <= first["imitation/agreement_flips"] <= 1.0
    # After cloning the search's best, the policy itself beats -Oz on the training modules
    # and, on the held-out module of the same pattern, the validation split.
    assert second["imitation/policy_gain"] > 0.05
    assert second["validation/relative_change"] < -0.05
    policy = numpy_policy("inlining", out / "policy")
    ext = next(t for t in read_trace(search) if t.module == "t/external.c")
    steps = [{k: v[i] for k, v in ext.features.items()} for i in range(len(ext.actions))]
    assert [policy.act(o) for o in steps] == [0] * 8
    # Running the same command again finds the run finished.
    assert main(argv) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.usefixtures("isolated_cache")
def test_imitation_without_a_search_searches_first(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"train": ["t/external.c", "t/calls.c"],
                                                "validation": ["t/validation.c"]}))
    assert main(["train", "--problem", "inlining", "--algorithm", "imitation", "--corpus",
                 str(corpus), "-o", str(out), "--workers", "1",
                 "--gin_bindings", "imitation.ImitationConfig.rounds = 1"]) == 0
    (log,) = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log["search/compiles"] > 0 and log["imitation/search_gain"] > 0.05
    assert (out / "search" / "round-0" / "trace.json").is_file()
    # Only the training modules were searched: the validation split plays no part.
    assert sorted(p.name for p in (out / "search" / "round-0" / "modules" / "t").iterdir()) == [
        "calls.c.npz", "external.c.npz"]


def test_decision_weights_put_the_gain_on_the_kept_flips():
    import numpy as np

    from mlgo.training.imitation import ImitationConfig, Trajectory, decision_weights

    f = {"x": np.zeros((3, 1))}
    searched = Trajectory("search", 0.01, f, np.array([0, 1, 1]), llvm=np.array([1, 1, 1]))
    rollout = Trajectory("policy", 0.0, f, np.array([1, 0, 1]))  # LLVM's decisions unknown
    w = decision_weights([searched, rollout], gain_weight=100.0, flip_weight=3.0)
    # The module 1% better weighs 2x; its one kept flip 3x more; mean 1.
    assert np.allclose(w / w[3], [6, 2, 2, 1, 1, 1]) and np.isclose(w.mean(), 1.0)
    with pytest.raises(Exception, match="flip_weight"):
        ImitationConfig(flip_weight=0.0)


def _train_residual(problem, corpus, out, search, *bindings):
    """One imitation round of `problem`'s residual network from `search`; its log line."""
    config = {"inlining": "InliningNetworkConfig", "regalloc": "RegallocNetworkConfig"}[problem]
    assert main(["train", "--problem", problem, "--algorithm", "imitation", "--corpus",
                 str(corpus), "-o", str(out), "--search", str(search), "--workers", "1",
                 "--gin_bindings", f"{problem}.{config}.residual = True",
                 "--gin_bindings", "imitation.ImitationConfig.rounds = 1",
                 "--gin_bindings", "imitation.ImitationConfig.epochs = 40", *bindings]) == 0
    (log,) = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return log


def _rule_along(search, module, problem, rule):
    """The trace of `module`'s best in `search`, its observations, and `rule`'s decision at each."""
    from mlgo.policies import builtins
    from mlgo.traces import read_trace

    trace = next(t for t in read_trace(search) if t.module == module)
    steps = [{k: v[i] for k, v in trace.features.items()} for i in range(len(trace.actions))]
    return trace, steps, [builtins.heuristic(problem, rule)(o) for o in steps]


@pytest.mark.usefixtures("isolated_cache")
def test_residual_policy_starts_at_the_rule_and_learns_a_flip(corpus, tmp_path, monkeypatch):
    import numpy as np

    search, out = _search_then_run_dir(corpus, tmp_path, ["t/external.c", "t/calls.c"])
    log = _train_residual("inlining", corpus, out, search)
    ext, steps, rule = _rule_along(search, "t/external.c", "inlining", "cost-threshold")
    # The search's best does not inline where LLVM's rule does: that is a flip to learn.
    assert list(ext.actions) == [0] * 8 and sum(rule) >= 1
    assert log["imitation/flips"] >= 1 and log["imitation/agreement_flips"] == 1.0
    policy = numpy_policy("inlining", out / "policy")
    assert policy.network.config.residual
    assert [policy.act(o) for o in steps] == [0] * 8
    # The policy before cloning was the rule, whose gain on these modules is -Oz's or close.
    fresh = numpy_policy("inlining", out / "structure")
    assert [fresh.act(o) for o in steps] == rule
    assert np.isclose(log["imitation/policy_gain"], 0.0, atol=0.02)
    assert log["validation/relative_change"] < -0.05


def _regalloc_run_dir(tmp_path):
    """A -O2 corpus of three register-pressure modules and a run directory training on two."""
    import subprocess

    from test_search import PRESSURE

    root = tmp_path / "corpus"
    (root / "t").mkdir(parents=True)
    names = []
    for fname, text in (("spin.c", PRESSURE), ("pressure.c", SMALL["pressure.c"]),
                        ("calls.c", SMALL["calls.c"])):
        (tmp_path / fname).write_text(text)
        subprocess.run([llvm_tool("clang"), "-O2", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(tmp_path / fname), "-o", str(root / "t" / (fname + ".bc"))], check=True)
        (root / "t" / (fname + ".cmd")).write_bytes(b"-c\0-O2")
        names.append("t/" + fname)
    (root / "corpus_description.json").write_text(json.dumps({"has_thinlto": False, "modules": names,
                                                                        "llvm_version": toolchain.llvm_major()}))
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"train": ["t/spin.c", "t/calls.c"],
                                                "validation": ["t/pressure.c"]}))
    return root, out


@pytest.mark.usefixtures("isolated_cache")
def test_regalloc_imitation_searches_from_the_default_rule(tmp_path, monkeypatch):
    root, out = _regalloc_run_dir(tmp_path)
    assert main(["train", "--problem", "regalloc", "--algorithm", "imitation", "--corpus",
                 str(root), "-o", str(out), "--workers", "1",
                 "--gin_bindings", "imitation.ImitationConfig.rounds = 1",
                 "--gin_bindings", "imitation.ImitationConfig.search_cold_tries = 0"]) == 0
    (log,) = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    # The search ran from the default-rule on the training modules and kept flips there.
    assert log["search/compiles"] > 10 and log["imitation/search_gain"] > 0.05
    assert log["imitation/flips"] >= 1 and log["imitation/decisions"] > 20
    search = out / "search" / "round-0"
    assert json.loads((search / "search.json").read_text())["problem"] == "regalloc"
    assert json.loads((search / "trace.json").read_text())["problem"] == "regalloc"
    assert (out / "policy").is_dir()


@pytest.mark.usefixtures("isolated_cache")
def test_residual_regalloc_policy_starts_at_the_default_rule_and_learns_flips(tmp_path, monkeypatch):
    import numpy as np

    root, out = _regalloc_run_dir(tmp_path)
    search = tmp_path / "S"
    assert main(["search", "--problem", "regalloc", "--corpus", str(root), "-o", str(search),
                 "--workers", "1", "--cold-tries", "0"]) == 0
    log = _train_residual("regalloc", root, out, search,
                          "--gin_bindings", "imitation.ImitationConfig.flip_weight = 20.0")
    spin, steps, rule = _rule_along(search, "t/spin.c", "regalloc", "default-rule")
    assert list(spin.default_actions) == rule and list(spin.actions) != rule  # flips to learn
    # The policy before cloning is the rule itself, on the search's observations; its rollout
    # compiles as the default does (the rule's compile of these modules is the default's).
    fresh = numpy_policy("regalloc", out / "structure")
    assert fresh.network.config.residual and [fresh.act(o) for o in steps] == rule
    assert log["imitation/policy_gain"] == pytest.approx(0.0, abs=1e-9)  # rule == default here
    # After cloning it takes some of the search's flips, and leaves the rule where the search does not.
    policy = numpy_policy("regalloc", out / "policy")
    assert log["imitation/flips"] >= 1 and log["imitation/agreement_flips"] > 0
    kept = [policy.act(o) == a for o, a, r in zip(steps, spin.actions, rule, strict=True) if a == r]
    assert np.mean(kept) > 0.9
