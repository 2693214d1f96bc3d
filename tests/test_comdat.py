"""COMDAT-aware sizes: per-section ELF accounting, project totals as linking keeps them, and a
search objective that does not pay for removing COMDAT copies the linker merges anyway."""

import json
import subprocess

import pytest
from corpus_fixtures import llvm_tool

from corpus_tools.corpus import Corpus
from mlgo.cli.main import main
from mlgo.compiler.measure import comdat_objective, text_sections, text_size
from mlgo.search import (
    FlipSearch,
    SearchConfig,
    default_comdat_weights,
    run_search_task,
    search_corpus,
)
from mlgo.workers.pool import LocalPool
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

HEADER = """extern int tab[64];
inline int helper(int x) {
  int s = 0;
  for (int i = 0; i < x; i++) s += tab[(i * 7 + x) & 63] ^ (i << 3);
  return s * 3 + x;
}
"""
# a.cc calls the inline function once: inlining that call drops a.cc's COMDAT copy of helper
# (the object shrinks), but b.cc keeps its copy, so the linked program only grows.
SOURCES = {
    "a.cc": '#include "h.h"\nint a(int x) { return helper(x + 1) * 2; }\n',
    "b.cc": '#include "h.h"\nint b1(int x) { return helper(x); }\n'
            "int b2(int x) { return helper(x * 3) + 1; }\nint b3(int x) { return helper(x - 2) - 5; }\n",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cx")
    (root / "src").mkdir()
    (root / "src" / "h.h").write_text(HEADER)
    (root / "corpus" / "cx").mkdir(parents=True)
    for f, text in SOURCES.items():
        (root / "src" / f).write_text(text)
        subprocess.run([llvm_tool("clang++"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm",
                        "-c", str(root / "src" / f), "-o", str(root / "corpus" / "cx" / (f + ".bc"))],
                       check=True)
        (root / "corpus" / "cx" / (f + ".cmd")).write_bytes(b"-c\0-Oz")
    (root / "corpus" / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": ["cx/a.cc", "cx/b.cc"],
                    "llvm_version": toolchain.llvm_major()}))
    return Corpus.load(root / "corpus")


def test_text_sections_name_their_comdat_group(tmp_path):
    (tmp_path / "h.h").write_text(HEADER)
    (tmp_path / "b.cc").write_text(SOURCES["b.cc"])
    obj = tmp_path / "b.o"
    subprocess.run([llvm_tool("clang++"), "-Oz", "-c", str(tmp_path / "b.cc"), "-o", str(obj)], check=True)
    secs = text_sections(obj)
    groups = {s.name: s.comdat for s in secs}
    assert groups[".text"] is None and groups[".text._Z6helperi"] == "_Z6helperi"
    out = subprocess.run([llvm_tool("llvm-size"), "-A", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    expected = sum(int(line.split()[1]) for line in out.splitlines()
                   if line.startswith(".text"))
    assert text_size(obj) == expected == sum(s.size for s in secs)
    (tmp_path / "x.o").write_bytes(b"not an object")
    with pytest.raises(MlgoError, match="x.o: not an ELF file"):
        text_size(tmp_path / "x.o")
    (tmp_path / "t.o").write_bytes(obj.read_bytes()[:80])
    with pytest.raises(MlgoError, match="t.o"):
        text_size(tmp_path / "t.o")


@pytest.mark.usefixtures("isolated_cache")
def test_eval_counts_each_comdat_group_once_per_project(corpus, tmp_path, monkeypatch):
    report = tmp_path / "eval.json"
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus.root), "--policy",
                 "always", "--workers", "1", "--json", str(report)]) == 0
    rep = json.loads(report.read_text())
    mods = {m["module"]: m for m in rep["modules"]}
    helper = mods["cx/a.cc"]["comdat"]["_Z6helperi"][1]
    assert helper > 0 and mods["cx/b.cc"]["comdat"]["_Z6helperi"][1] == helper
    linked = rep["linked"]["cx"]
    # Under -Oz both objects carry helper: the linked project has it once.
    assert linked["default"] == rep["default_total"] - helper
    # `always` inlines every call, so no copy is left anywhere: linked == per-object sum.
    assert linked["policy"] == rep["policy_total"]
    assert rep["linked_relative_change"] == pytest.approx(
        (linked["policy"] - linked["default"]) / linked["default"])


@pytest.mark.usefixtures("isolated_cache")
def test_comdat_aware_search_does_not_pay_for_merged_copies(corpus, tmp_path, monkeypatch):
    a = next(m for m in corpus.modules if m.name == "cx/a.cc")
    plain = FlipSearch(a, SearchConfig())
    anchor, best, _ = plain.run()
    # Per object, inlining a.cc's only call to helper pays (its COMDAT copy goes) ...
    assert anchor.actions == [0] and best.actions == [1] and best.size < anchor.size
    with LocalPool(1) as pool:
        weights = default_comdat_weights(corpus.modules, pool)
    assert weights == {"comdat:_Z6helperi": 0.5}
    # ... but the linked program keeps b.cc's copy: counted at 1/2, the flip is not kept.
    aware = FlipSearch(a, SearchConfig(), objective=comdat_objective(weights))
    _, best_aware, _ = aware.run()
    assert best_aware.actions == [0] and aware.kept == 0
    with LocalPool(1, task_fn=run_search_task) as pool:
        per_object = search_corpus(corpus.modules, tmp_path / "S0", SearchConfig(), pool,
                                   progress=False)
        s = search_corpus(corpus.modules, tmp_path / "S", SearchConfig(), pool,
                          comdat_weights=weights, progress=False)
    # The per-object search "gains", and the linked project grows by about helper's size.
    assert per_object.best_total < per_object.default_total
    assert per_object.linked_best > per_object.linked_default + 40
    assert s.best_total == s.default_total and s.best_objective == s.default_objective
    assert s.linked_best == s.linked_default < s.default_total
    helper = plain.problem.baseline(a).per_function["comdat:_Z6helperi"]
    # two copies of helper, each charged half
    assert s.default_objective == s.default_total - helper


@pytest.mark.usefixtures("isolated_cache")
def test_reward_with_comdat_weights_does_not_pay_for_a_merged_copy(corpus, tmp_path, monkeypatch):
    import mlgo.env
    from mlgo.problems.inlining.problem import InliningForSize

    a = next(m for m in corpus.modules if m.name == "cx/a.cc")
    per_object = mlgo.env.run_episode(mlgo.env.CompilerEnv(InliningForSize(), a),
                                      lambda obs: 1)
    assert per_object.reward > 0  # inlining the one call drops a.cc's copy of helper
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"comdat:_Z6helperi": 0.5}))
    aware = InliningForSize(comdat_weights=str(weights))
    assert aware.for_policy("llvm-default").comdat_weights == str(weights)
    res = mlgo.env.run_episode(mlgo.env.CompilerEnv(aware, a), lambda obs: 1)
    assert res.measurement.total == per_object.measurement.total and res.reward < 0
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(MlgoError, match="bad.json: COMDAT weights must be"):
        mlgo.env.run_episode(mlgo.env.CompilerEnv(
            InliningForSize(comdat_weights=str(tmp_path / "bad.json")), a), lambda obs: 1)


@pytest.mark.usefixtures("isolated_cache")
def test_cli_search_comdat_aware_writes_its_weights(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "S"
    assert main(["search", "--problem", "inlining", "--corpus", str(corpus.root), "-o", str(out),
                 "--workers", "1", "--comdat-aware", "--per-module"]) == 0
    assert json.loads((out / "comdat_weights.json").read_text()) == {"comdat:_Z6helperi": 0.5}
    printed = capsys.readouterr().out
    assert "COMDAT-weighted objective" in printed and "as linking keeps it" in printed
    assert json.loads((out / "search.json").read_text())["comdat"] is True


def test_eval_table_shows_linked_sizes_only_with_comdat_groups():
    from mlgo.evaluate import EvalReport, format_table

    row = {"module": "p/a", "project": "p", "default": 100.0, "policy": 90.0,
           "relative_change": -0.1, "decisions": 1, "seconds": 0.1}
    rep = EvalReport("inlining", "x", ".text bytes", [dict(row, comdat={})])
    assert "linked" not in format_table(rep)
    rep = EvalReport("inlining", "x", ".text bytes", [
        dict(row, comdat={"g": [30.0, 30.0]}),
        dict(row, module="p/b", comdat={"g": [0.0, 30.0]})])
    table = format_table(rep)
    # default: 200 - 30 (one copy of g merged); policy: 180 (its one copy of g is kept)
    assert "linked" in table and rep.linked()["p"]["default"] == 170.0
    assert rep.linked()["p"]["policy"] == 180.0 and "+5.88%" in table
