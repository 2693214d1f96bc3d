"""Decision tables in the inliner plugin (mlgo/serving/plugin_decisions.h,
mlgo/serving/decision_table.py, mlgo/tune/decisions.py): a searched module's table, built
into the plugin, makes a build of the module's source (from another directory) give the
search's best object, .text byte for byte; a module or call site the table does not name
gets the policy's answer; in a later release's code an entry answers while its site keeps its
shape (a function added elsewhere or an edit of the caller that leaves the shape keep it, a
changed callee drops it); which module a table entry is for goes by the trailing components
of the source path; a bad table file is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool

from corpus_tools.corpus import Corpus
from mlgo.serving import plugin
from mlgo.serving.decision_table import DecisionTableError, load_table, table_c_source
from mlgo_base import toolchain

# LLVM inlines `pick` at every call site at -Oz, yet each inlined copy is bigger than the call:
# the search finds "no" at each. f0 calls it twice (ordinals 0 and 1 of the pair f0 -> pick).
SEARCHED = ("extern int g[64]; extern void use(int);\n"
            "int pick(int i) { return g[i & 63] * 3 + i; }\n"
            "void f0(int i) { use(pick(i)); use(pick(i + 9)); }\n"
            + "".join(f"void f{j}(int i) {{ use(pick(i + {j})); }}\n" for j in range(1, 6)))
# Not in the table: the policy decides every site.
OTHER = ("static int sq(int x) { return x * x + 3 * x - 7; }\n"
         "int h(int y) { return sq(y) + sq(y + 1); }\n")
# Two decisions about the pair f -> sq (ordinals 0 and 1).
TWICE = ("static int sq(int x) { return x * x + 3 * x - 7; }\n"
         "int f(int y) { return sq(y) + sq(y + 1); }\n")


def _compile(src: Path, so: Path, tmp: Path, cwd: Path | None = None,
             ) -> tuple[list[int], str, Path]:
    """Compile `src` at -Oz with the plugin: its decisions in order, its decision summary
    line's notes, and the object."""
    log, summary, obj = tmp / "decisions.txt", tmp / "summary.tsv", tmp / f"{src.stem}.o"
    for p in (log, summary):
        p.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGO_PLUGIN")}
    env.update(MLGO_PLUGIN_DECISION_LOG=str(log), MLGO_DECISION_SUMMARY=str(summary))
    subprocess.run([llvm_tool("clang"), "-Oz", "-c", str(src), "-o", str(obj), f"-fpass-plugin={so}"],
                   check=True, env=env, cwd=cwd)
    decisions = [int(line.split("->")[1]) for line in log.read_text().splitlines()]
    [line] = summary.read_text().splitlines()
    return decisions, line.split("\t")[5], obj


def _text(obj: Path, tmp: Path) -> bytes:
    out = tmp / "text.bin"
    subprocess.run([llvm_tool("llvm-objcopy"), f"--dump-section=.text={out}", str(obj), str(tmp / "x.o")],
                   check=True)
    return out.read_bytes()


def test_the_table_of_a_searched_module_replays_its_best_object_and_the_rest_is_the_policys(
        tmp_path: Path) -> None:
    from mlgo.compiler.interactive import InteractiveCompile
    from mlgo.problems import get_problem
    from mlgo.search import SearchConfig, run_search_task, search_corpus
    from mlgo.search_store import load_result, result_path
    from mlgo.tune import decisions
    from mlgo.workers.pool import LocalPool

    # The project: lib/a.c (searched) and lib/b.c (not), as a corpus of -Oz IR.
    src = tmp_path / "proj"
    (src / "lib").mkdir(parents=True)
    (tmp_path / "corpus" / "proj" / "lib").mkdir(parents=True)
    names = []
    for fname, text in (("a.c", SEARCHED), ("b.c", OTHER)):
        (src / "lib" / fname).write_text(text)
        name = f"proj/lib/{fname}"
        subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(src / "lib" / fname), "-o", str(tmp_path / "corpus" / f"{name}.bc")],
                       check=True)
        (tmp_path / "corpus" / f"{name}.cmd").write_bytes(b"-c\0-Oz")
        names.append(name)
    (tmp_path / "corpus" / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names,
                    "llvm_version": toolchain.llvm_major()}))
    corpus = Corpus.load(tmp_path / "corpus")
    a = next(m for m in corpus.modules if m.name == "proj/lib/a.c")

    search = tmp_path / "search"
    with LocalPool(1, task_fn=run_search_task) as pool:
        search_corpus([a], search, SearchConfig(flips="all"), pool, progress=False)
    best = load_result(result_path(search, a.name))
    actions = [int(x) for x in best.actions]
    assert best.policy_total < best.default_total and 0 in actions  # the search found a gain

    with LocalPool(1, task_fn=decisions.run_replay_task) as pool:
        doc, stats = decisions.build_table(corpus.modules, search, "proj", pool, gin="",
                                           timeout=120)
    assert stats == {"modules": 1, "decisions": len(actions), "from_previous": 0, "left_out": {}}
    entries = doc["modules"]["lib/a.c"]
    assert [e[3] for e in entries] == actions
    assert [e[:3] for e in entries if e[0] == "f0"] == [["f0", "pick", 0], ["f0", "pick", 1]]
    assert all(len(e) == 7 for e in entries)  # with each site's shape
    table = decisions.write(tmp_path, doc)

    # The search's best object: the corpus module compiled answering its decisions in order.
    problem = get_problem("inlining")
    work = tmp_path / "interactive"
    work.mkdir()
    with InteractiveCompile(problem.compile_argv(a, work, work / "ch"), a.name, work,
                            channel_base=work / "ch", timeout=120) as c:
        for action in actions:
            assert c.next_observation() is not None
            c.answer(action)
        assert c.next_observation() is None
        c.finish()
    searched_text = _text(work / "out.o", tmp_path)
    assert len(searched_text) == best.policy_total

    # The policy inlines everywhere: only the table can give the searched object.
    so = plugin.plugin_for("always", table)
    elsewhere = tmp_path / "release-2" / "lib"  # the same file, built from another directory
    elsewhere.mkdir(parents=True)
    for fname in ("a.c", "b.c"):
        (elsewhere / fname).write_text((src / "lib" / fname).read_text())
    got, notes, obj = _compile(elsewhere / "a.c", so, tmp_path)
    assert got == actions and notes == f"table={len(actions)}"
    assert _text(obj, tmp_path) == searched_text
    policy_only, _, obj = _compile(elsewhere / "a.c", plugin.plugin_for("always"), tmp_path)
    assert policy_only == [1] * len(actions) and _text(obj, tmp_path) != searched_text

    # Served (no decision log), with a policy reading the cost features: the sites the table
    # answers get no cost features computed, and the object is still the searched one.
    work = tmp_path / "work.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGO_")}
    env["MLGO_PLUGIN_FEATURE_WORK"] = str(work)
    subprocess.run([llvm_tool("clang"), "-Oz", "-c", str(elsewhere / "a.c"), "-o",
                    str(tmp_path / "served.o"),
                    f"-fpass-plugin={plugin.plugin_for('cost-threshold', table)}"],
                   check=True, env=env)
    assert _text(tmp_path / "served.o", tmp_path) == searched_text
    counts = dict(f.split("=") for f in work.read_text().split("\t")[3:])
    assert int(counts["table_answered"]) == len(actions) and int(counts["cost_features"]) == 0

    # lib/b.c is not in the table: the policy's answers, no table note.
    got, notes, _ = _compile(elsewhere / "b.c", so, tmp_path)
    assert got and set(got) == {1} and notes == "-"

    # A later release where f0 changed: its two sites have another shape (f0 has more blocks),
    # so they get the policy's answer; the unchanged callers keep the table's.
    changed = tmp_path / "release-3" / "lib"
    changed.mkdir(parents=True)
    (changed / "a.c").write_text(SEARCHED.replace(
        "void f0(int i) { use(pick(i)); use(pick(i + 9)); }",
        "void f0(int i) { if (i > 3) use(pick(i)); else use(pick(i + 9)); }"))
    got, notes, _ = _compile(changed / "a.c", so, tmp_path)
    f0 = [k for k, e in enumerate(entries) if e[0] == "f0"]
    assert notes == f"table={len(actions) - len(f0)}"
    assert [got[k] for k in f0] == [1, 1]
    assert [g for k, g in enumerate(got) if k not in f0] == \
        [a for k, a in enumerate(actions) if k not in f0]


@pytest.fixture(scope="module")
def matching_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `never` policy with a table naming two keys for f -> sq: lib/a.c says (no, yes),
    a.c says (yes, no)."""
    path = tmp_path_factory.mktemp("table") / "decisions.json"
    path.write_text(json.dumps({"format": "mlgo-decision-table", "version": 1, "modules": {
        "lib/a.c": [["f", "sq", 0, 0], ["f", "sq", 1, 1]],
        "a.c": [["f", "sq", 0, 1], ["f", "sq", 1, 0]]}}))
    return plugin.plugin_for("never", path)


@pytest.mark.parametrize(("where", "cwd", "given", "expected"), [
    ("v2/lib/a.c", None, None, [0, 1]),  # an absolute path ending lib/a.c: the longest key
    ("v2/lib/a.c", "v2", "./lib/./a.c", [0, 1]),  # "." components left out
    ("v2/lib/a.c", "v2/lib", "../lib/a.c", [0, 1]),
    ("v2/src/a.c", None, None, [1, 0]),  # only a.c matches
    ("v2/liba.c", None, None, [0, 0]),  # a whole component must match: the policy's answers
    ("v2/lib/a.cc", None, None, [0, 0]),
])
def test_a_table_entry_is_for_the_modules_whose_path_ends_with_its_key(
        matching_plugin: Path, tmp_path: Path, where: str, cwd: str | None, given: str | None,
        expected: list[int]) -> None:
    src = tmp_path / where
    src.parent.mkdir(parents=True)
    src.write_text(TWICE)
    arg = Path(given) if given else src
    got, notes, _ = _compile(arg, matching_plugin, tmp_path,
                             cwd=tmp_path / cwd if cwd else None)
    assert got == expected
    assert notes == ("table=2" if expected != [0, 0] else "-")


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not JSON"),
    ('{"format": "other", "modules": {}}', "not a decision table"),
    ('{"format": "mlgo-decision-table", "version": 2, "modules": {}}', "version 2"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": []}', "not an object"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"/abs/a.c": []}}',
     "not a relative path"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"../a.c": []}}',
     "'..' components"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"a.c": [["f", "g", -1, 1]]}}',
     "entry 0"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"a.c": [["f", "g", 0, 2]]}}',
     "entry 0"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"a.c": [["f", "g", 0]]}}',
     "entry 0"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": {"a.c": [["f", "g", 0, 1, 2]]}}',
     "entry 0"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": '
     '{"a.c": [["f", "g", 0, 1, 2, 3, 4.5]]}}', "entry 0"),
    ('{"format": "mlgo-decision-table", "version": 1, "modules": '
     '{"a.c": [["f", "g", 0, 1], ["f", "g", 0, 0]]}}', "listed twice"),
])
def test_a_bad_table_is_refused_in_one_line_naming_the_file(tmp_path: Path, text: str,
                                                            problem: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(DecisionTableError) as e:
        load_table(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and problem in msg and "\n" not in msg
    # The plugin is not built from it either (refused before any compile).
    with pytest.raises(DecisionTableError):
        plugin.plugin_for("never", path)


def test_a_missing_table_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DecisionTableError, match=r"t\.json: cannot read the decision table"):
        load_table(tmp_path / "t.json")


def test_names_are_c_strings_in_the_generated_table() -> None:
    src = table_c_source({"lib/a\"b.c": [("f\\", "g\n", 3, 1), ("f", "g", 4, 0, 2, 1, -5)],
                          "empty.c": []})
    assert "{\"f\", \"g\", 4u, 0u, 1u, {2LL, 1LL, -5LL}}," in src
    assert '"lib/a\\042b.c"' in src and '"f\\134"' in src and '"g\\012"' in src
    assert "mlgo_decision_table_modules = 1;" in src  # the empty module left out


def test_the_decision_summary_adds_up_the_tables_answers(tmp_path: Path) -> None:
    from mlgo.serving.summary import format_summary, read_summary
    from mlgo_base.errors import MlgoError

    path = tmp_path / "s.tsv"
    path.write_text("inlining\tP\tlib/a.c\t5\t2\ttable=5\n"
                    "inlining\tP\tlib/b.c\t4\t1\tnot-size,table=3\n"
                    "inlining\tP\tlib/c.c\t7\t0\t-\n")
    groups = read_summary(path)
    [g] = groups.values()
    assert (g.runs, g.decisions, g.table_runs, g.table_decisions) == (3, 16, 2, 8)
    assert "the table answered 8 of the decisions" in format_summary(groups)
    for notes in ("table=x", "table=1,table=2"):
        path.write_text(f"inlining\tP\tlib/a.c\t5\t2\t{notes}\n")
        with pytest.raises(MlgoError, match="not a decision summary line"):
            read_summary(path)


def test_an_earlier_tunes_entries_stay_for_modules_this_one_has_no_result_for(
        tmp_path: Path) -> None:
    from mlgo.tune import decisions

    class NoCompiles:
        def run(self, tasks: list) -> list:
            assert not tasks
            return []

    earlier = tmp_path / "tune-v1"
    earlier.mkdir()
    (earlier / "decisions.json").write_text(json.dumps({
        "format": "mlgo-decision-table", "version": 1,
        "modules": {"lib/a.c": [["f", "sq", 0, 0]], "lib/b.c": [["g", "sq", 0, 1]]}}))
    (tmp_path / "search").mkdir()
    doc, stats = decisions.build_table([], tmp_path / "search", "p", NoCompiles(), gin="",
                                       timeout=60, previous=earlier)
    assert doc["modules"] == {"lib/a.c": [["f", "sq", 0, 0]], "lib/b.c": [["g", "sq", 0, 1]]}
    assert stats["from_previous"] == 2
    # Without an earlier tune, nothing.
    doc, stats = decisions.build_table([], tmp_path / "search", "p", NoCompiles(), gin="",
                                       timeout=60)
    assert doc["modules"] == {} and stats["modules"] == 0


@pytest.mark.parametrize(("sizes", "table", "held_out", "serve", "basis"), [
    # (module, default, policy): the policy is judged on the modules outside the table
    ([("p/a.c", 100, 90), ("p/b.c", 100, 104)], {"a.c"}, set(), "cost-threshold", "outside"),
    ([("p/a.c", 100, 110), ("p/b.c", 100, 99)], {"a.c"}, {"a.c"}, "policy", "outside"),
    # the table names them all: judged on those held out of training, when there are any
    ([("p/a.c", 100, 90), ("p/b.c", 100, 101)], {"a.c", "b.c"}, {"b.c"}, "cost-threshold",
     "held out"),
    ([("p/a.c", 100, 110), ("p/b.c", 100, 99)], {"a.c", "b.c"}, {"b.c"}, "policy", "held out"),
    # and only without them on the modules it was trained on
    ([("p/a.c", 100, 90)], {"a.c"}, set(), "policy", "trained"),
    ([("p/a.c", 100, 101)], {"a.c"}, set(), "cost-threshold", "trained"),
])
def test_the_policy_serves_outside_the_table_only_if_it_makes_unseen_code_smaller(
        tmp_path: Path, sizes: list[tuple[str, int, int]], table: set[str], held_out: set[str],
        serve: str, basis: str) -> None:
    from mlgo.tune import decisions

    path = tmp_path / "eval.json"
    # A module that asks no decision says nothing about the policy, in or out of the table.
    rows = [{"module": "p/main.c", "default": 100, "policy": 100, "decisions": 0}]
    path.write_text(json.dumps({"modules": rows + [{"module": m, "default": d, "policy": p}
                                                   for m, d, p in sizes]}))
    got = decisions.policy_beyond_table(path, table, "p", held_out)
    assert got["serve"] == serve
    assert decisions.basis_words(got) == {
        "outside": "the table does not name", "held out": "held out of its training",
        "trained": "it was trained on"}[basis]


def test_training_holds_out_a_fifth_of_the_modules_that_ask_decisions_the_same_ones_each_run(
        ) -> None:
    from corpus_tools.corpus import Module
    from mlgo.tune import learn

    def modules(project: str, n: int) -> list[Module]:
        return [Module(f"{project}/src/m{i}.c", Path("/c"), project) for i in range(n)]

    base = {f"p/src/m{i}.c": {"decisions": 0 if i == 0 else 3} for i in range(11)}
    got = learn.held_out_modules(modules("p", 11), base, "p")
    assert len(got) == 2 and "src/m0.c" not in got  # 20% of the 10 that ask decisions
    assert all(k.startswith("src/m") for k in got)
    # Keys, not names: a later release in another directory holds out the same files.
    renamed = {k.replace("p/", "p-2.0/", 1): v for k, v in base.items()}
    assert learn.held_out_modules(modules("p-2.0", 11), renamed, "p-2.0") == got
    # Too few modules to spare one: none held out.
    assert learn.held_out_modules(modules("p", 3), base, "p") == []  # m0 asks none


def _replayed_table(tmp_path: Path, text: str, actions: list[int]) -> tuple[Path, list]:
    """A table for lib/a.c holding `text`, as tune makes it: the module's decisions `actions`
    compiled through the plugin's channel, which names each site and gives its shape."""
    from mlgo.env import CompilerEnv, replay
    from mlgo.problems.inlining.problem import InliningForSize
    from mlgo.serving.decision_table import make_table, write_table
    from mlgo.tune.decisions import ReplayTask, run_replay_task

    corpus = tmp_path / "corpus"
    (corpus / "proj" / "lib").mkdir(parents=True)
    src = tmp_path / "a.c"
    src.write_text(text)
    subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm",
                    "-c", str(src), "-o", str(corpus / "proj/lib/a.c.bc")], check=True)
    (corpus / "proj/lib/a.c.cmd").write_bytes(b"-c\0-Oz")
    (corpus / "corpus_description.json").write_text(json.dumps(
        {"has_thinlto": False, "modules": ["proj/lib/a.c"], "llvm_version": toolchain.llvm_major()}))
    [module] = Corpus.load(corpus).modules
    channel = str(plugin.channel_plugin())
    total = replay(CompilerEnv(InliningForSize(plugin=channel), module, timeout=120),
                   actions).measurement.total
    out = run_replay_task(ReplayTask(module, actions, total, "", 120, channel))
    assert out.ok, out.error
    entries = out.extra["sites"]
    path = tmp_path / "decisions.json"
    write_table(path, make_table({"lib/a.c": entries}))
    return path, entries


# Variants of SEARCHED, as a later release might have them.
UNRELATED_ADDED = SEARCHED + ("int other(int x) { return g[x & 7] - x; }\n"
                              "void f9(int i) { use(other(i)); }\n")
# pick's code changed: its cost at every site changed with it.
CALLEE_CHANGED = SEARCHED.replace("g[i & 63] * 3 + i", "g[i & 63] * 3 + g[(i >> 2) & 63] * i")
# f0's code changed around its sites, whose shape (f0's blocks, pick's blocks, the cost) did not.
CALLER_EDITED = SEARCHED.replace("use(pick(i + 9))", "use(pick(i + 11))")


@pytest.mark.parametrize(("text", "kept"), [
    (SEARCHED, 7),
    (UNRELATED_ADDED, 7),  # f9 -> other is the policy's; every searched site the table's
    (CALLEE_CHANGED, 0),
    (CALLER_EDITED, 7),
])
def test_an_entry_answers_while_its_site_keeps_its_shape_whatever_else_changed(
        tmp_path: Path, text: str, kept: int) -> None:
    # The search's answer at each site of pick is "no"; the policy inlines everywhere.
    table, entries = _replayed_table(tmp_path, SEARCHED, [0] * 7)
    assert [tuple(e[:2]) for e in entries].count(("f0", "pick")) == 2 and len(entries) == 7
    assert all(len(e) == 7 for e in entries)  # with each site's shape
    src = tmp_path / "release-2" / "lib" / "a.c"
    src.parent.mkdir(parents=True)
    src.write_text(text)
    got, notes, _ = _compile(src, plugin.plugin_for("always", table), tmp_path)
    # The table's answers are its "no"s; every other decision is the policy's "yes".
    assert notes == f"table={kept}"
    assert sorted(got) == [0] * kept + [1] * (len(got) - kept)
    if text != CALLEE_CHANGED:  # the bigger pick is asked about at fewer sites
        assert len(got) == 7 + (text == UNRELATED_ADDED)  # f9 -> other
