"""Decisions joined to the llvmlite call graph: a hand-written C module whose call-graph facts
are known (a callee with two callers, an address-taken function, a two-function recursion, a
function kept only by `used`), the call sites carried from a real plugin compile through the
worker's outcome, a trace and a search result file, traces without call sites still reading,
and decisions whose caller or callee is not in the graph counted and reported."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import llvm_tool, needs_llvm, run_mlgo

from corpus_tools.corpus import Corpus
from corpus_tools.report import (
    DECISION_FACTS,
    UNMATCHED,
    ModuleDecisions,
    decision_table,
    join_decisions,
    module_call_graph,
)
from mlgo.problems import get_problem
from mlgo.search_store import load_result, result_path, save_result
from mlgo.traces import (
    CALL_GRAPH_MATCHED,
    TraceWriter,
    decision_graph_features,
    read_trace,
    trace_decisions,
)
from mlgo.workers.tasks import CallSites, ModuleOutcome, ModuleTask, PolicySpec, run_module
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

SOURCE = r"""
static int g(int x) { return x * 3 + 1; }
static int h(int x) { return x - 7; }
int (*table[1])(int) = { h };
static int even(int n);
static int odd(int n) { return n == 0 ? 0 : even(n - 1); }
static int even(int n) { return n == 0 ? 1 : odd(n - 1); }
__attribute__((used)) static int kept(int x) { return x + 2; }
const char *label = "@g @kept";
int f1(int x) { return g(x) + g(x + 1) + h(x); }
int f2(int x) { return g(x) * odd(x); }
"""
MODULE = "join/m"

needs_clang = needs_llvm("clang", "llvm-dis")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("join") / "corpus"
    (root / "join").mkdir(parents=True)
    src = root.parent / "m.c"
    src.write_text(SOURCE)
    subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(src), "-o", str(root / (MODULE + ".bc"))], check=True)
    (root / (MODULE + ".cmd")).write_bytes(b"-c\0-Oz")
    (root / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": [MODULE], "opt_level": "-Oz",
                    "llvm_version": toolchain.llvm_major()}))
    return Corpus.load(root)


def _instructions_by_llvm_dis(bc: Path) -> dict[str, int]:
    """Instructions per defined function, counted in LLVM's own disassembly."""
    text = subprocess.run([llvm_tool("llvm-dis"), str(bc), "-o", "-"], check=True, capture_output=True,
                          text=True).stdout
    counts: dict[str, int] = {}
    for m in re.finditer(r"^define [^@]*@([\w.]+)\(.*?\n(.*?)^}", text, re.M | re.S):
        counts[m.group(1)] = sum(1 for line in m.group(2).splitlines()
                                 if line.startswith("  ") and not line.lstrip().startswith(";"))
    return counts


def _decisions(pairs: list[tuple[str, str]], actions: list[int], defaults: list[int]
               ) -> ModuleDecisions:
    seen: dict[tuple[str, str], int] = {}
    ordinals = []
    for p in pairs:
        ordinals.append(seen.get(p, 0))
        seen[p] = ordinals[-1] + 1
    return ModuleDecisions([c for c, _ in pairs], [g for _, g in pairs], ordinals, actions, defaults)


@needs_clang
def test_call_graph_facts_of_the_hand_written_module(corpus: Corpus) -> None:
    module = corpus.modules[0]
    graph = module_call_graph(module.bc_path)
    f1_g = graph.facts("f1", "g")
    assert {k: f1_g[k] for k in ("callee_callers", "callee_call_sites", "pair_call_sites",
                                 "callee_address_taken", "callee_internal", "callee_scc_size",
                                 "callee_height", "caller_height", "same_scc")} == {
        "callee_callers": 2, "callee_call_sites": 3, "pair_call_sites": 2,
        "callee_address_taken": 0, "callee_internal": 1, "callee_scc_size": 1,
        "callee_height": 0, "caller_height": 1, "same_scc": 0}
    assert graph.facts("f2", "g")["pair_call_sites"] == 1
    # h is stored in `table`; `kept` only in llvm.compiler.used, g and kept only named in a string.
    assert graph.facts("f1", "h")["callee_address_taken"] == 1
    assert graph.facts("f1", "h")["callee_callers"] == 1
    assert graph.address_taken == {"h"}
    odd = graph.facts("f2", "odd")
    assert (odd["callee_scc_size"], odd["same_scc"], odd["callee_height"], odd["caller_height"]) \
        == (2, 0, 0, 1)
    assert graph.facts("odd", "even")["same_scc"] == 1
    assert graph.facts("f1", "g")["callee_internal"] == 1
    assert graph.internal["f1"] is False
    by_dis = _instructions_by_llvm_dis(module.bc_path)
    for caller, callee in (("f1", "g"), ("f2", "odd"), ("odd", "even")):
        facts = graph.facts(caller, callee)
        assert facts["callee_instructions"] == by_dis[callee]
        assert facts["caller_instructions"] == by_dis[caller]


@needs_clang
def test_unmatched_decisions_are_counted_and_reported(corpus: Corpus) -> None:
    pairs = [("f1", "g"), ("f1", "g"), ("f1.clone", "g"), ("f2", "g.1"), ("f2", "odd")]
    d = _decisions(pairs, actions=[1, 0, 1, 0, 1], defaults=[1, 1, 0, 0, 1])
    joined = join_decisions(corpus, {MODULE: d})
    assert joined.matched[MODULE] == [True, True, False, False, True]
    assert [(c, g, o, w) for _, c, g, o, w in joined.unmatched] == [
        ("f1.clone", "g", 0, "caller"), ("f2", "g.1", 0, "callee")]
    # odd is called by f2 and even
    assert joined.facts[MODULE]["callee_callers"] == [2, 2, UNMATCHED, UNMATCHED, 2]
    table = decision_table(joined, {MODULE: d})
    assert (table["decisions"], table["inlined"], table["flipped"], table["unmatched"],
            table["unmatched_flipped"]) == (5, 3, 2, 2, 1)
    # the matched decisions only: two about g (one flipped), one about odd
    assert table["facts"]["callee_callers"] == {"2": {"decisions": 3, "inlined": 2, "flipped": 1}}
    assert table["facts"]["callee_scc_size"] == {
        "1": {"decisions": 2, "inlined": 1, "flipped": 1},
        "2": {"decisions": 1, "inlined": 1, "flipped": 0}}
    assert table["facts"]["callee_call_sites"]["3-4"] == {"decisions": 2, "inlined": 1, "flipped": 1}
    with pytest.raises(MlgoError, match="module other/x is not in the corpus"):
        join_decisions(corpus, {"other/x": d})


def test_a_module_llvmlite_cannot_read_has_its_decisions_unmatched(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "bad.bc").write_bytes(b"BC\xc0\xde garbage")
    (root / "bad.cmd").write_bytes(b"-c")
    (root / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": ["bad"]}))
    d = _decisions([("a", "b")], [1], [0])
    joined = join_decisions(Corpus.load(root), {"bad": d})
    assert joined.matched["bad"] == [False]
    assert "bad.bc" in joined.unanalysed["bad"]
    assert joined.unmatched[0][4] == "the module's analysis"


def _outcome(module: str, actions: list[int], sites: CallSites | None) -> ModuleOutcome:
    header = get_problem("inlining").header()
    steps = len(actions)
    return ModuleOutcome(
        module, True, reward=0.5, policy_total=10.0, default_total=20.0, num_decisions=steps,
        features={f.name: np.zeros((steps, *f.shape), dtype=f.dtype) for f in header.features},
        actions=np.asarray(actions, dtype=np.int64),
        default_actions=np.asarray([1] * steps, dtype=np.int64), call_sites=sites)


def test_traces_carry_call_sites_and_traces_without_them_still_read(tmp_path: Path) -> None:
    header = get_problem("inlining").header()
    sites = CallSites(["f1", "f1"], ["g", "g"], [0, 1], ["m.c:9:24", ""])
    with_sites = tmp_path / "with"
    w = TraceWriter(with_sites, header, {"problem": "inlining"})
    w.add(_outcome(MODULE, [1, 0], sites))
    w.close()
    without = tmp_path / "without"  # what interactive mode (and every older trace) has
    w = TraceWriter(without, header, {"problem": "inlining"})
    w.add(_outcome(MODULE, [1, 0], None))
    w.close()

    [t] = read_trace(with_sites, call_sites=True)
    assert t.call_sites == sites
    [t] = read_trace(with_sites)  # what training reads: no call-site columns
    assert t.call_sites is None and list(t.actions) == [1, 0]
    [t] = read_trace(without, call_sites=True)
    assert t.call_sites is None and list(t.actions) == [1, 0]
    assert trace_decisions(with_sites)[MODULE].callers == ["f1", "f1"]
    with pytest.raises(MlgoError, match="has no call-site identities"):
        trace_decisions(without)


def test_search_results_keep_call_sites(tmp_path: Path) -> None:
    sites = CallSites(["f1"], ["g"], [0], [""])
    (tmp_path / "modules" / "join").mkdir(parents=True)
    save_result(tmp_path, _outcome(MODULE, [0], sites), "fp")
    assert load_result(result_path(tmp_path, MODULE), MODULE, "fp").call_sites == sites
    save_result(tmp_path, _outcome(MODULE, [0], None), "fp")
    assert load_result(result_path(tmp_path, MODULE), MODULE, "fp").call_sites is None


@needs_clang
def test_interactive_mode_records_no_call_sites(corpus: Corpus) -> None:
    """Interactive mode sends a context line too, which names no call site: its recorded
    compiles carry none (and do not fail for it)."""
    out = run_module(ModuleTask("inlining", corpus.modules[0], PolicySpec.named("cost-threshold"),
                                record=True, timeout=120))
    assert out.ok, out.error
    assert len(out.actions) > 0 and out.call_sites is None


@needs_clang
def test_plugin_compile_to_trace_to_joined_features(corpus: Corpus, tmp_path: Path) -> None:
    """A real compile under the plugin: its decisions name call sites of the module, which the
    trace keeps and the join finds in the graph; `mlgo corpus report --decisions` tabulates them."""
    from mlgo.serving.plugin import channel_plugin

    so = channel_plugin()
    module = corpus.modules[0]
    out = run_module(ModuleTask("inlining", module, PolicySpec.named("cost-threshold"), record=True,
                                gin_config=f"inlining.InliningForSize.plugin = {str(so)!r}",
                                timeout=120))
    assert out.ok, out.error
    assert out.call_sites is not None and len(out.call_sites) == len(out.actions) > 0
    pairs = list(zip(out.call_sites.caller, out.call_sites.callee, strict=True))
    assert pairs.count(("f1", "g")) == 2 and ("f1", "h") in pairs and ("f2", "odd") in pairs
    assert [o for (c, g), o in zip(pairs, out.call_sites.ordinal, strict=True)
            if (c, g) == ("f1", "g")] == [0, 1]

    trace = tmp_path / "trace"
    w = TraceWriter(trace, get_problem("inlining").header(), {"problem": "inlining"})
    w.add(out)
    w.close()
    features = decision_graph_features(trace, corpus.root)[MODULE]
    assert set(features) == {*DECISION_FACTS, CALL_GRAPH_MATCHED}
    graph = module_call_graph(module.bc_path)
    for i, (caller, callee) in enumerate(pairs):
        if caller in graph and callee in graph:
            assert features[CALL_GRAPH_MATCHED][i] == 1
            assert {f: int(features[f][i]) for f in DECISION_FACTS} == graph.facts(caller, callee)
        else:
            assert features[CALL_GRAPH_MATCHED][i] == 0
    i = pairs.index(("f1", "h"))
    assert features["callee_address_taken"][i] == 1 and features["callee_callers"][i] == 1

    report = tmp_path / "report.json"
    proc = run_mlgo("corpus", "report", str(corpus.root), "-j", "1", "--decisions", str(trace),
                    "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    assert f"decisions of {trace}: {len(pairs)}" in proc.stdout
    assert "callee_address_taken" in proc.stdout
    decisions = json.loads(report.read_text())["decisions"]
    assert decisions["decisions"] == len(pairs)
    assert sum(r["decisions"] for r in decisions["facts"]["same_scc"].values()) \
        == len(pairs) - decisions["unmatched"]


@needs_clang
def test_search_with_plugin_names_call_sites(corpus: Corpus, tmp_path: Path) -> None:
    """`mlgo search --env plugin`: the result file and the search's trace keep the call sites,
    so `--decisions` takes the search directory."""
    search = tmp_path / "search"
    proc = run_mlgo("search", "--problem", "inlining", "--corpus", str(corpus.root), "--workers",
                    "1", "--env", "plugin", "--budget", "12", "-o", str(search), timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = load_result(result_path(search, MODULE))
    assert result.call_sites is not None and len(result.call_sites) == len(result.actions) > 0
    decisions = trace_decisions(search)[MODULE]
    assert decisions.callers == result.call_sites.caller
    assert decisions.actions == [int(a) for a in result.actions]
    assert ("f1", "h") in zip(decisions.callers, decisions.callees, strict=True)
