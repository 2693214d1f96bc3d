"""The plugin's advisor computes only what its policy binds (mlgo/serving/plugin_advice.h), and
decides exactly as when it computes everything: byte-identical objects and the same decisions as
the same policy with every feature computed through LLVM's own advisor (the decision log forces
that) and as interactive mode; unbound groups of work are never done (MLGO_PLUGIN_FEATURE_WORK)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import llvm_tool, make_small_corpus, on_each_llvm

from corpus_tools.corpus import Corpus
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.policies import c_source
from mlgo.problems import get_problem
from mlgo.protocol.llvm19 import INLINE_FEATURES
from mlgo.serving import plugin
from mlgo_base import toolchain

CHEAP = ["cost_estimate", "callsite_height", "nr_ctant_params", "is_callee_avail_external",
         "callee_linkage", "callee_uses", "callsite_is_last_use", "callsite_loop_depth",
         "callee_is_recursive", "callee_in_caller_scc"]
FPI = ["caller_basic_block_count", "callee_users", "caller_instruction_count",
       "callee_block_count"]

# A caller whose second call site lands, once the first is inlined, in a block the inlining
# made: the lean advisor must see it as reachable, as LLVM's advisor does.
SPLIT_BLOCKS_C = """
static int pick(int x) { if (x > 3) return x * 7; return x + 1; }
static int pick2(int x) { while (x > 100) x /= 3; return x - 1; }
int twice(int y) { int a = pick(y); int b = pick(a + 2); return a ^ b ^ pick2(b); }
int again(int y) { return pick2(y) + pick2(y + 1) + pick(y * 2); }
"""




@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("advice-corpus")
    path = make_small_corpus(root)
    (root / "split.c").write_text(SPLIT_BLOCKS_C)
    subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(root / "split.c"), "-o", str(path / "small" / "split.c.bc")], check=True)
    (path / "small" / "split.c.cmd").write_bytes(b"-c\0-Oz")
    desc = path / "corpus_description.json"
    desc.write_text(desc.read_text().replace('"modules": [', '"modules": ["small/split.c", '))
    return Corpus.load(path)


# label -> (inputs, C expression, mode, groups that must be done, groups that must not)
POLICIES = {
    "estimate-cheap": (CHEAP, "f[0] < 5 + 10 * (f[4] == 1 && f[6])", "lean", ["estimate"],
                       ["cost_features", "caller_callee_fpi"]),
    "always-cheap": (["callee_linkage"], "1", "lean", ["estimate"],
                     ["cost_features", "caller_callee_fpi"]),
    "estimate-fpi": (CHEAP + FPI, "f[0] < 5 + (f[10] > 8) - (f[13] > 40)", "tracked",
                     ["estimate", "caller_callee_fpi"], ["cost_features"]),
}


def _plugin(label: str) -> Path:
    if label == "cost-threshold-2":
        return plugin.build_plugin(
            c_source.heuristic_c_source("inlining", "cost-threshold", ["threshold", "cost_estimate"]),
            policy_label=label)
    if label == "inlining-oz":
        return plugin.plugin_for(label)
    names, expression = POLICIES[label][:2]
    return plugin.build_plugin(c_source.expression_c_source(names, expression), policy_label=label)


def _compile(so: Path, module, workdir: Path, *, everything: bool, extra: tuple[str, ...] = (),
             clang: str | None = None, check_counts: bool = False
             ) -> tuple[bytes, list[str], list[str]]:
    """Object bytes, MLGO_DECISION_SUMMARY fields (decisions, inlined) and the feature-work
    line's fields of one compile; `everything` sets the decision log, `check_counts`
    MLGO_PLUGIN_CHECK_COUNTS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGO_")}
    if check_counts:
        env["MLGO_PLUGIN_CHECK_COUNTS"] = "1"
    summary, work, out = workdir / "summary.txt", workdir / "work.txt", workdir / "out.o"
    for f in (summary, work):
        f.unlink(missing_ok=True)
    env["MLGO_DECISION_SUMMARY"] = str(summary)
    env["MLGO_PLUGIN_FEATURE_WORK"] = str(work)
    if everything:
        (workdir / "log.txt").write_text("")
        env["MLGO_PLUGIN_DECISION_LOG"] = str(workdir / "log.txt")
    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={so}", *extra])
    proc = subprocess.run([clang or llvm_tool("clang"), *args, "-o", str(out)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    decisions = summary.read_text().split("\t")[3:5] if summary.exists() else []
    fields = work.read_text().strip().split("\t") if work.exists() else []
    return out.read_bytes(), decisions, fields


def _counts(fields: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in (f.split("=") for f in fields[3:])}


# The other plugins: label -> (mode, groups that must be done, groups that must not).
OTHERS = {
    "cost-threshold-2": ("lean", ["estimate", "cost_features"], ["caller_callee_fpi"]),
    # binds all of LLVM's 38, node_count and edge_count among them
    "inlining-oz": ("tracked", ["estimate", "cost_features", "caller_callee_fpi"], []),
}


def _expected(label: str) -> tuple[str, list[str], list[str]]:
    return POLICIES[label][2:] if label in POLICIES else OTHERS[label]


@pytest.mark.parametrize("label", [*POLICIES, *OTHERS])
def test_computing_less_decides_the_same(corpus: Corpus, label: str, tmp_path: Path) -> None:
    so = _plugin(label)
    mode, done, skipped = _expected(label)
    totals: dict[str, int] = {}
    inlined = 0
    for module in corpus.modules:
        full_obj, full_decisions, full_work = _compile(so, module, tmp_path, everything=True)
        obj, decisions, work = _compile(so, module, tmp_path, everything=False)
        assert obj == full_obj, f"{label}: {module.name}: objects differ"
        assert decisions == full_decisions, f"{label}: {module.name}"
        assert full_work[2] == "llvm" and work[2] == mode, (module.name, full_work, work)
        for k, v in _counts(work).items():
            totals[k] = totals.get(k, 0) + v
        inlined += int(decisions[1]) if decisions else 0
    assert inlined > 0 and totals["advised"] > 3
    assert all(totals[g] > 0 for g in done), totals
    assert all(totals[g] == 0 for g in skipped), totals
    assert totals["features_only_vetoes"] == 0


@pytest.mark.skipif(not toolchain.is_installed(22), reason="clang-22 is not installed")
@pytest.mark.parametrize("label", ["always-cheap", "estimate-fpi", "cost-threshold-2", "inlining-oz"])
def test_computing_less_decides_the_same_on_llvm22(corpus: Corpus, label: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, "22")
    so = _plugin(label)
    mode = _expected(label)[0]
    for module in corpus.modules:
        full_obj, full_decisions, _ = _compile(so, module, tmp_path, everything=True,
                                               clang="clang-22")
        obj, decisions, work = _compile(so, module, tmp_path, everything=False, clang="clang-22")
        assert (obj, decisions) == (full_obj, full_decisions), f"{label}: {module.name}"
        assert work[2] == mode


def test_the_shipped_policy_is_served_tracked(corpus: Corpus, tmp_path: Path) -> None:
    """inlining-oz binds node_count and edge_count: served in tracked mode, not LLVM's flow."""
    module = next(m for m in corpus.modules if m.name.endswith("split.c"))
    obj, decisions, work = _compile(_plugin("inlining-oz"), module, tmp_path, everything=False)
    full_obj, full_decisions, _ = _compile(_plugin("inlining-oz"), module, tmp_path,
                                           everything=True)
    assert work[2] == "tracked" and (obj, decisions) == (full_obj, full_decisions)


def test_tracked_counts_equal_llvms_update(corpus: Corpus, tmp_path: Path) -> None:
    """On LLVM 19 the tracked advice counts a caller's function properties and keeps its
    reachable blocks itself after each inlining; with MLGO_PLUGIN_CHECK_COUNTS=1 LLVM's own
    update runs beside it on a copy and a dominator tree answers each reachability question
    too, and they agree every time; the features logged from tracked mode equal LLVM's. A policy reading the loop fields (callee_max_loop_depth)
    keeps LLVM's update instead."""
    recounted = 0
    for module in corpus.modules:
        obj, decisions, work = _compile(_plugin("inlining-oz"), module, tmp_path, everything=False,
                                        check_counts=True)
        counts = _counts(work)
        assert work[2] == "tracked", (module.name, work)
        assert counts["count_mismatches"] == counts["reachability_mismatches"] == 0, work
        recounted += counts["recounted"]
        assert (obj, decisions) == _compile(_plugin("inlining-oz"), module, tmp_path,
                                            everything=False)[:2]
        # The decision log with the check on is written from tracked mode: every feature of
        # every decision as LLVM's own flow logs it.
        *_, logged_work = _compile(_plugin("inlining-oz"), module, tmp_path, everything=True,
                                   check_counts=True)
        tracked_log = (tmp_path / "log.txt").read_text()
        _compile(_plugin("inlining-oz"), module, tmp_path, everything=True)
        assert logged_work[2] == "tracked" and tracked_log == (tmp_path / "log.txt").read_text()
    assert recounted > 3
    loops = plugin.build_plugin(
        c_source.expression_c_source(["cost_estimate", "callee_max_loop_depth"],
                                     "f[0] < 5 + 10 * (f[1] == 0)"), policy_label="loop-depth")
    module = next(m for m in corpus.modules if m.name.endswith("split.c"))
    obj, decisions, work = _compile(loops, module, tmp_path, everything=False, check_counts=True)
    assert work[2] == "tracked" and _counts(work)["recounted"] == 0 and int(decisions[1]) > 0
    assert (obj, decisions) == _compile(loops, module, tmp_path, everything=True)[:2]


# node_count (defined functions) and edge_count (calls between defined functions; `ext` is a
# declaration) as LLVM's advisor keeps them: each inlining of leaf into mid removes one call,
# the second also deletes leaf (static, no use left); the same for mid into top.
COUNTS_C = """
extern int ext(int);
static int leaf(int x) { return ext(x) + 1; }
static int mid(int x) { return leaf(x) * 3 + leaf(x ^ 5); }
int top(int x) { return mid(x) - mid(x + 7); }
"""
COUNTS_EXPECTED = [(3, 4), (3, 3), (2, 2), (2, 1)]  # (node_count, edge_count) per decision


@on_each_llvm
def test_module_counts_as_llvm_keeps_them(llvm_version, tmp_path: Path) -> None:  # noqa: ANN001
    """A policy binding only the module counts inlines at step i only if it is served
    COUNTS_EXPECTED[i] (a counter inside the policy): every site inlined means every value was
    right, in tracked mode; LLVM's own flow (the decision log) logs the same values and makes
    the same object."""
    root = make_small_corpus(tmp_path, sources={"counts.c": COUNTS_C})
    module = Corpus.load(root).modules[0]
    want = ",".join(f"{{{n},{e}}}" for n, e in COUNTS_EXPECTED)
    expression = (f"({{ static const long long want[][2] = {{{want}}}; static unsigned step; "
                  f"unsigned s = step++; s < {len(COUNTS_EXPECTED)} && f[0] == want[s][0] && "
                  "f[1] == want[s][1]; })")
    so = plugin.build_plugin(c_source.expression_c_source(["node_count", "edge_count"], expression),
                             policy_label="module-counts")
    clang = llvm_version.tool("clang")
    obj, decisions, work = _compile(so, module, tmp_path, everything=False, clang=clang)
    assert work[2] == "tracked"
    assert decisions == [str(len(COUNTS_EXPECTED))] * 2  # decided and inlined
    full_obj, full_decisions, _ = _compile(so, module, tmp_path, everything=True, clang=clang)
    names = list(INLINE_FEATURES)
    logged = [line.split(" -> ")[0].split() for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert [(int(f[names.index("node_count")]), int(f[names.index("edge_count")]))
            for f in logged] == COUNTS_EXPECTED
    assert (obj, decisions) == (full_obj, full_decisions)


def test_an_llvm_advisor_option_keeps_llvms_advisor(corpus: Corpus, tmp_path: Path) -> None:
    module = next(m for m in corpus.modules if m.name.endswith("split.c"))
    so = _plugin("estimate-cheap")
    *_, lean = _compile(so, module, tmp_path, everything=False)
    *_, given = _compile(so, module, tmp_path, everything=False,
                         extra=("-mllvm", "-ml-advisor-size-increase-threshold=2.0"))
    assert lean[2] == "lean" and given[2] == "llvm"


def _interactive(module, decide, workdir: Path) -> bytes:
    problem = get_problem("inlining")
    base = workdir / "channel"
    argv = problem.compile_argv(module, workdir, base)
    with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=120) as c:
        while (obs := c.next_observation()) is not None:
            c.answer(decide({n: int(np.asarray(v).reshape(-1)[0]) for n, v in obs.features.items()}))
        c.finish()
    return (workdir / "out.o").read_bytes()


def test_lean_serving_matches_interactive_mode(corpus: Corpus, tmp_path: Path) -> None:
    """Served by the lean advisor, a rule on the cost estimate and cost-threshold on its two
    inputs make the objects interactive mode makes with the same rule decided in Python."""
    rules = {"cost-threshold-2": lambda f: int(f["cost_estimate"] < f["threshold"]),
             "always-cheap": lambda f: 1}
    for label, decide in rules.items():
        so = _plugin(label)
        for module in corpus.modules:
            obj, _, work = _compile(so, module, tmp_path, everything=False)
            assert work[2] == "lean"
            workdir = make_workdir("mlgo-test-advice-")
            try:
                assert _interactive(module, decide, workdir) == obj, f"{label}: {module.name}"
            finally:
                remove_workdir(workdir)
