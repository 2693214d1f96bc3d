"""The inliner pass plugin: built from a policy's C source against the chosen LLVM, loaded by the
stock clang of that version, and making exactly the decisions interactive mode makes with the
same heuristic (the serving tests on each installed LLVM version)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import llvm_tool, make_small_corpus, on_each_llvm, on_llvm

from corpus_tools.corpus import Corpus
from mlgo import env as mlgo_env
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.compiler.measure import text_size
from mlgo.policies import c_source
from mlgo.policies.shipped import resolve as resolve_shipped
from mlgo.problems import get_problem
from mlgo.protocol import for_llvm
from mlgo.serving import plugin
from mlgo.serving.build import BuildError
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llvm_major: int) -> Corpus:
    with on_llvm(llvm_major):
        return Corpus.load(make_small_corpus(tmp_path_factory.mktemp(f"plugin-corpus{llvm_major}")))


@pytest.fixture(scope="module")
def cost_threshold_plugin(llvm_major: int) -> Path:
    # The user's plugin cache (keyed by content and LLVM version): built once, reused by later
    # sessions.
    with on_llvm(llvm_major):
        return plugin.plugin_for("cost-threshold")


def _interactive(module, heuristic, workdir: Path) -> tuple[bytes, list[tuple[list[int], int]]]:
    """Object bytes and (features, decision) pairs of an interactive-mode compile."""
    problem = get_problem("inlining")
    base = workdir / "channel"
    argv = problem.compile_argv(module, workdir, base)
    decisions = []
    with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=120) as c:
        names = c.header.feature_names if not c.no_channel else []
        while (obs := c.next_observation()) is not None:
            action = heuristic(obs.features)
            decisions.append(([int(np.asarray(obs.features[n]).reshape(-1)[0]) for n in names],
                              action))
            c.answer(action)
        c.finish()
    assert names == list(for_llvm(toolchain.llvm_major()).INLINE_FEATURES)
    return (workdir / "out.o").read_bytes(), decisions


def _with_plugin(module, so: Path, workdir: Path) -> tuple[bytes, list[tuple[list[int], int]]]:
    """Object bytes and logged (features, decision) pairs of a plain -Oz compile with the plugin."""
    log = workdir / "plugin-decisions.txt"
    out = workdir / "plugin.o"
    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={so}"])
    subprocess.run([llvm_tool("clang"), *args, "-o", str(out)], check=True,
                   env=dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log)))
    decisions = []
    if log.exists():
        for line in log.read_text().splitlines():
            features, decision = line.split("->")
            decisions.append(([int(x) for x in features.split()], int(decision)))
    return out.read_bytes(), decisions


def test_feature_lists_match_the_compiler() -> None:
    inlining = get_problem("inlining").header()
    data = for_llvm(toolchain.llvm_major())
    assert inlining.feature_names == list(data.INLINE_FEATURES)
    regalloc = get_problem("regalloc").header()
    assert [(f.name, f.type, f.num_elements) for f in regalloc.features] == list(
        data.REGALLOC_FEATURES)


@on_each_llvm
def test_plugin_matches_interactive_mode(corpus: Corpus, cost_threshold_plugin: Path) -> None:
    problem = get_problem("inlining")
    heuristic = problem.heuristic("cost-threshold")
    total_decisions = 0
    for module in corpus.modules:
        workdir = make_workdir("mlgo-test-plugin-")
        try:
            ref_obj, ref_decisions = _interactive(module, heuristic, workdir)
            obj, decisions = _with_plugin(module, cost_threshold_plugin, workdir)
            assert decisions == ref_decisions, module.name
            assert obj == ref_obj, f"{module.name}: objects differ"
            plugin_text = text_size(workdir / "plugin.o")
        finally:
            remove_workdir(workdir)
        # And the size agrees with what training and evaluation see through mlgo.env.
        with mlgo_env.make(problem, module) as e:
            assert mlgo_env.run_episode(e, heuristic).measurement.total == plugin_text
        total_decisions += len(decisions)
    assert total_decisions >= 3  # calls.c alone has several call sites


@on_each_llvm
def test_trained_policy_plugin_matches_interactive_mode(corpus: Corpus) -> None:
    """The shipped inliner policy, compiled to C from its graph, decides in the plugin as its
    numpy twin decides in interactive mode, call site by call site."""
    from mlgo.policies.loading import numpy_policy

    so = plugin.plugin_for("inlining-oz")
    policy = numpy_policy("inlining", resolve_shipped("inlining-oz"))
    total = 0
    for module in corpus.modules:
        workdir = make_workdir("mlgo-test-plugin-")
        try:
            ref_obj, ref_decisions = _interactive(module, policy.act, workdir)
            obj, decisions = _with_plugin(module, so, workdir)
        finally:
            remove_workdir(workdir)
        assert decisions == ref_decisions, module.name
        assert obj == ref_obj, f"{module.name}: objects differ"
        total += len(decisions)
    assert total >= 3


@on_each_llvm
def test_plugin_decisions_follow_the_policy(corpus: Corpus, cost_threshold_plugin: Path,
                                            tmp_path: Path) -> None:
    """A different policy links into a different plugin and changes the code."""
    never = plugin.plugin_for("never")
    assert never != cost_threshold_plugin
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    _, with_threshold = _with_plugin(module, cost_threshold_plugin, tmp_path)
    threshold_size = text_size(tmp_path / "plugin.o")
    (tmp_path / "plugin-decisions.txt").unlink()
    _, with_never = _with_plugin(module, never, tmp_path)
    assert any(d == 1 for _, d in with_threshold)
    assert with_never and all(d == 0 for _, d in with_never)
    assert text_size(tmp_path / "plugin.o") != threshold_size


def test_policy_with_other_features_is_refused() -> None:
    names = list(for_llvm(toolchain.llvm_major()).INLINE_FEATURES)
    names[names.index("edge_count")] = "edge_count_v2"
    with pytest.raises(BuildError, match="edge_count_v2") as info:
        plugin.build_plugin(c_source.heuristic_c_source("inlining", "cost-threshold", names),
                            policy_label="renamed")
    assert ("the policy needs 'edge_count_v2' (int64_t x1), which the compiler does not send"
            in str(info.value))
    assert "'edge_count'" not in str(info.value)  # a feature no input reads is no problem


def test_inputs_bind_by_name_not_position(corpus: Corpus) -> None:
    """A policy declaring only the two features it reads, in another order than LLVM's, makes
    the same decisions through the plugin as cost-threshold in interactive mode."""
    source = c_source.heuristic_c_source("inlining", "cost-threshold",
                                         ["threshold", "cost_estimate"])
    so = plugin.build_plugin(source, policy_label="two-inputs")
    heuristic = get_problem("inlining").heuristic("cost-threshold")
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    workdir = make_workdir("mlgo-test-plugin-")
    try:
        ref_obj, ref_decisions = _interactive(module, heuristic, workdir)
        obj, decisions = _with_plugin(module, so, workdir)
    finally:
        remove_workdir(workdir)
    assert decisions == ref_decisions and any(d for _, d in decisions)
    assert obj == ref_obj


def test_binding_header_names_each_input_it_cannot_bind(tmp_path: Path) -> None:
    """policy_binding.h, shared by the programs that link a policy: inputs are found by name
    wherever the compiler sends them, extra compiler features are ignored, and a missing input
    or one of another type or count is named."""
    (tmp_path / "policy.c").write_text(c_source.heuristic_c_source("regalloc", "proxy", [
        ("use_def_density", "float", 33), ("mask", "int64_t", 33), ("progress", "float", 1)]))
    (tmp_path / "main.cpp").write_text("""
#include "policy_binding.h"
#include <cstdio>
int main() {
  std::vector<mlgo::CompilerFeature> Ok = {
      {"extra", "float", 2}, {"mask", "int64_t", 33}, {"use_def_density", "float", 33},
      {"progress", "float", 1}};
  mlgo::PolicyBinding A = mlgo::bindPolicyInputs(Ok);
  std::printf("%zu %zu %zu [%s]\\n", A.Index[0], A.Index[1], A.Index[2], A.Error.c_str());
  std::vector<mlgo::CompilerFeature> Bad = {
      {"mask", "int64_t", 32}, {"use_def_density", "int64_t", 33}};
  std::printf("%s\\n", mlgo::bindPolicyInputs(Bad).Error.c_str());
}
""")
    shutil.copy(Path(plugin.SOURCE_DIR) / plugin.BINDING_HEADER, tmp_path)
    subprocess.run([llvm_tool("clang"), "-c", str(tmp_path / "policy.c"), "-o", str(tmp_path / "policy.o")],
                   check=True)
    subprocess.run([llvm_tool("clang++"), "-std=c++17", "-Wall", "-Werror", str(tmp_path / "main.cpp"),
                    str(tmp_path / "policy.o"), "-lm", "-o", str(tmp_path / "bind")], check=True)
    out = subprocess.run([str(tmp_path / "bind")], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "2 1 3 []",
        "the policy was trained on other features than this compiler sends:",
        "  the policy needs 'use_def_density' (float x33), the compiler sends int64_t x33",
        "  the policy needs 'mask' (int64_t x33), the compiler sends int64_t x32",
        "  the policy needs 'progress' (float x1), which the compiler does not send",
    ]


def test_cache_key_covers_the_llvm_version(monkeypatch: pytest.MonkeyPatch,
                                           cost_threshold_plugin: Path) -> None:
    real = plugin.llvm_dev()
    seen: list[str] = []

    def fake_cached_artifact(kind, key, filename, build):
        seen.append(key)
        return Path("/nonexistent") / filename

    monkeypatch.setattr(plugin, "cached_artifact", fake_cached_artifact)
    monkeypatch.setattr(plugin, "plugin_object", lambda: cost_threshold_plugin)
    source = c_source.heuristic_c_source("inlining", "cost-threshold")
    plugin.build_plugin(source)
    monkeypatch.setattr(plugin, "llvm_dev", lambda: plugin.LlvmDev(real.llvm_config, "19.1.99",
                                                                   real.cxxflags))
    plugin.build_plugin(source)
    assert len(seen) == 2 and seen[0] != seen[1]


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(MlgoError, match="cost-threshold.*shipped policy .*inlining-oz"):
        plugin.policy_source("no-such-policy", "inlining")
    # The default heuristics are plain clang: say so rather than "unknown".
    with pytest.raises(MlgoError, match="needs no plugin"):
        plugin.policy_source("llvm-default", "inlining")


def test_cli_prints_the_plugin_path(capsys, cost_threshold_plugin: Path) -> None:
    import argparse

    from mlgo.cli import plugin as plugin_cli

    parser = argparse.ArgumentParser()
    plugin_cli.register(parser.add_subparsers())
    args = parser.parse_args(["plugin", "cost-threshold"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(cost_threshold_plugin)


@pytest.mark.usefixtures("isolated_cache")
def test_builtin_heuristic_c_is_cached_and_then_served_without_numpy() -> None:
    """mlgo-clang resolves its policy on every compile: once a built-in heuristic's C is
    cached, resolving it imports no numpy (~0.15 s of each compile through Python)."""
    import hashlib
    import sys

    code = ("import hashlib, sys\nfrom mlgo.serving.plugin import policy_source\n"
            "source, label = policy_source('proxy', 'regalloc')\n"
            "print('numpy' in sys.modules, label, hashlib.sha256(source.encode()).hexdigest())")
    first, again = (subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True, timeout=120).stdout.split()
                    for _ in range(2))
    want = hashlib.sha256(c_source.heuristic_c_source("regalloc", "proxy").encode()).hexdigest()
    assert first == ["True", "proxy", want] and again == ["False", "proxy", want]


@pytest.mark.usefixtures("isolated_cache")
def test_trained_policy_c_source_is_cached_by_content(tmp_path, monkeypatch):
    """mlgo-clang asks for a policy's C on every compile: the second ask must not regenerate
    it, and changed weights, or changed code generating the C, must."""
    from mlgo.policies import c_source
    from mlgo.policies.policy_dir import load_policy, save_policy

    policy = tmp_path / "policy"
    shutil.copytree(resolve_shipped("regalloc"), policy)
    first, _ = plugin.trained_policy_source(policy, "regalloc")

    def refuse(*a, **k):
        raise AssertionError("regenerated although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(c_source, "policy_c_source", refuse)
        again, _ = plugin.trained_policy_source(policy, "regalloc")
    assert again == first
    net, params, meta = load_policy(policy, problem="regalloc")
    save_policy(policy, net, params * 2, meta)
    changed, _ = plugin.trained_policy_source(policy, "regalloc")
    assert changed != first
    # the operations' C emitter (mlgo/policies/ops.py) is part of the key
    generator = plugin.generator_files()
    assert Path(plugin.SOURCE_DIR).parent / "policies" / "ops.py" in generator
    edited = tmp_path / "ops.py"
    edited.write_bytes(generator[0].read_bytes() + b"# edited\n")
    assert (plugin._source_key("regalloc", policy, [edited, *generator[1:]])
            != plugin._source_key("regalloc", policy, generator))
