"""corpus_tools.report: corpus analysis in a process pool, the summary table and JSON, filters,
and the train/validation split."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool, needs_llvm

import corpus_tools.report as report_mod
from corpus_tools.corpus import Corpus, Module, split_by_project, write_description
from corpus_tools.report import (
    analyze_corpus,
    filter_modules,
    rank_functions_by_pressure,
    run_report,
)
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

DATA = Path(__file__).parent / "data" / "ir"
pytestmark = needs_llvm("clang", "llvm-as")

# module name -> (project, source)
_MODULES = {
    "alpha/callgraph": ("alpha", "callgraph.ll"),
    "alpha/liveness": ("alpha", "liveness.ll"),
    "beta/loops": ("beta", "loops.ll"),
    "beta/calls": ("beta", "calls.c"),
}


def _make_corpus(root: Path, broken: bool = True) -> Path:
    names = []
    for name, (_, source) in _MODULES.items():
        bc = root / (name + ".bc")
        bc.parent.mkdir(parents=True, exist_ok=True)
        if source.endswith(".ll"):
            subprocess.run([llvm_tool("llvm-as"), str(DATA / source), "-o", str(bc)], check=True)
        else:
            subprocess.run([llvm_tool("clang"), "-O1", "-Xclang", "-disable-llvm-passes", "-emit-llvm",
                            "-c", str(DATA / source), "-o", str(bc)], check=True)
        names.append(name)
    if broken:
        # A module cut short, as an interrupted copy would leave it.
        data = (root / "beta/calls.bc").read_bytes()
        (root / "beta/broken.bc").write_bytes(data[: len(data) // 2])
        names.append("beta/broken")
    for name in names:
        (root / (name + ".cmd")).write_bytes(b"-c\0-O2")
    write_description(root, names, llvm_version=toolchain.llvm_major())
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return _make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def stats(corpus_dir) -> dict:
    return analyze_corpus(Corpus.load(corpus_dir), jobs=2)


def test_broken_module_is_reported_and_skipped(stats, corpus_dir):
    assert list(stats["modules"]) == list(_MODULES)
    assert list(stats["failures"]) == ["beta/broken"]
    failure = stats["failures"]["beta/broken"]
    assert failure["project"] == "beta"
    assert str(corpus_dir / "beta/broken.bc") in failure["error"]
    assert "bitcode" in failure["error"]


def test_summary_totals(stats):
    summary = stats["summary"]
    alpha = summary["projects"]["alpha"]
    assert (alpha["modules"], alpha["failed"], alpha["functions"]) == (2, 0, 12)
    assert alpha["decision_points"] == 10  # all in callgraph.ll
    assert alpha["external_calls"] == 1 + 2  # callgraph's @ext; liveness's @ext and @use
    assert alpha["max_pressure"] == 5  # liveness.ll's @loop
    beta = summary["projects"]["beta"]
    assert (beta["modules"], beta["failed"]) == (2, 1)
    assert beta["decision_points"] == stats["modules"]["beta/calls"]["decision_points"] > 0
    every = summary["all"]
    assert every["modules"] == 4 and every["failed"] == 1
    assert every["decision_points"] == alpha["decision_points"] + beta["decision_points"]
    pressures = [f["max_pressure"] for m in stats["modules"].values() for f in m["functions"]]
    assert every["functions"] == len(pressures)
    assert every["mean_pressure"] == round(sum(pressures) / len(pressures), 2)
    assert every["max_pressure"] == max(pressures)


def test_parallel_and_serial_agree(stats, corpus_dir):
    serial = analyze_corpus(Corpus.load(corpus_dir), jobs=1)
    assert serial == stats


def test_a_crashing_worker_only_loses_its_module(corpus_dir, monkeypatch):
    # Stand-in for LLVM aborting the process inside the bitcode reader. Workers are forked, so
    # they see the patched function.
    real = report_mod.analyze_module

    def crash_on_loops(path, name=None):
        if name == "beta/loops":
            os._exit(3)
        return real(path, name)

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("needs forked workers")
    monkeypatch.setattr(report_mod, "analyze_module", crash_on_loops)
    result = analyze_corpus(Corpus.load(corpus_dir), jobs=2)
    assert set(result["failures"]) == {"beta/loops", "beta/broken"}
    assert "process died" in result["failures"]["beta/loops"]["error"]
    assert set(result["modules"]) == {"alpha/callgraph", "alpha/liveness", "beta/calls"}


def test_run_report_prints_table_and_writes_json(corpus_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "report.json"
    assert run_report(corpus_dir, out, 2) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:4] == ["project", "modules", "failed", "functions"]
    rows = {line.split()[0]: line.split() for line in lines if line and line[0] != "-"}
    assert rows["alpha"][1:4] == ["2", "0", "12"]
    assert rows["all"][1:3] == ["4", "1"]
    assert "beta/broken.bc" in captured.err
    written = json.loads(out.read_text())
    assert written["summary"]["all"]["decision_points"] == int(rows["all"][4])
    assert written["modules"]["alpha/callgraph"]["functions"][0]["name"] == "leaf"


def test_run_report_fails_when_nothing_can_be_analysed(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "p").mkdir(parents=True)
    (root / "p/a.bc").write_bytes(b"BC\xc0\xde")
    (root / "p/a.cmd").write_bytes(b"-c")
    write_description(root, ["p/a"])
    assert run_report(root, None, 1) == 1
    assert "p/a.bc" in capsys.readouterr().err


def test_filters(stats):
    assert filter_modules(stats) == ["alpha/callgraph", "beta/calls"]
    assert filter_modules(stats, min_decision_points=0) == list(_MODULES)
    assert filter_modules(stats, min_decision_points=11) == (
        ["beta/calls"] if stats["modules"]["beta/calls"]["decision_points"] >= 11 else [])
    ranked = rank_functions_by_pressure(stats)
    assert len(ranked) == stats["summary"]["all"]["functions"]
    assert ranked[0][2] == stats["summary"]["all"]["max_pressure"]
    assert all(a[2] > b[2] or (a[2] == b[2] and a[:2] <= b[:2])
               for a, b in zip(ranked, ranked[1:], strict=False))
    assert ("alpha/liveness", "loop", 5) in ranked


# --------------------------------------------------------------------------------------------
# Splits (no files needed).


def _corpus(projects: dict[str, int]) -> Corpus:
    root = Path("/nonexistent")
    mods = [Module(f"{p}/m{i}", root, p) for p, n in projects.items() for i in range(n)]
    return Corpus(root, mods)


def test_split_keeps_projects_whole_and_is_deterministic():
    corpus = _corpus({f"proj{i}": 3 + i % 4 for i in range(12)})
    train, val = split_by_project(corpus, 0.25, seed=7)
    assert (train, val) == split_by_project(corpus, 0.25, seed=7)
    assert sorted(train + val) == sorted(m.name for m in corpus.modules)
    project = {m.name: m.project for m in corpus.modules}
    assert not {project[n] for n in train} & {project[n] for n in val}
    assert 0.25 * len(corpus) <= len(val) < 0.25 * len(corpus) + 7
    splits = {tuple(split_by_project(corpus, 0.25, seed=s)[1]) for s in range(6)}
    assert len(splits) > 1  # the seed matters


def test_split_is_the_same_in_another_process():
    # Python salts str hashes per process; the split must not depend on that.
    code = ("from pathlib import Path; "
            "from corpus_tools.corpus import Corpus, Module, split_by_project; "
            "c = Corpus(Path('/x'), [Module(f'p{i}/m{j}', Path('/x'), f'p{i}') "
            "for i in range(9) for j in range(2)]); print(split_by_project(c, 0.3, 1))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1
    corpus = Corpus(Path("/x"), [Module(f"p{i}/m{j}", Path("/x"), f"p{i}")
                                 for i in range(9) for j in range(2)])
    assert outputs.pop().strip() == str(split_by_project(corpus, 0.3, 1))


def test_single_project_falls_back_to_modules():
    corpus = _corpus({"lua": 34})
    train, val = split_by_project(corpus, 0.2, seed=0)
    assert len(val) == round(0.2 * 34) and len(train) == 34 - len(val)
    assert train == [n for n in (m.name for m in corpus.modules) if n not in set(val)]
    assert split_by_project(corpus, 0.2, seed=0) == (train, val)
    assert split_by_project(corpus, 0.2, seed=1) != (train, val)


def test_split_edge_cases():
    two = _corpus({"a": 5, "b": 1})
    train, val = split_by_project(two, 0.9, seed=3)
    assert train and val  # one project always trains, even for a large fraction
    assert split_by_project(two, 0.0, seed=3) == ([m.name for m in two.modules], [])
    tiny = _corpus({"solo": 2})
    assert [len(x) for x in split_by_project(tiny, 0.01, seed=0)] == [1, 1]
    with pytest.raises(MlgoError):
        split_by_project(two, 1.0, seed=0)
