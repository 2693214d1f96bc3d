"""`mlgo tune` on a tiny generated CMake project (tests/tune_project.py): killed with SIGKILL
in the middle of its search, then run again, it reuses the modules searched before the kill
and finishes: report, flags files, the build with the plugin (the program still prints what
-O0 prints), the project's test command on both builds. Also the one-line refusals: a compile
database whose optimization level cannot be set, and a test command that fails."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool
from tune_project import (
    MODULES,
    check_command,
    kill_tune_when,
    make_project,
    start_tune,
    tune_argv,
    tune_env,
)

from mlgo.cli.main import main
from mlgo_base import toolchain

pytestmark = pytest.mark.slow

FAST = ["--gin_bindings", "imitation.ImitationConfig.epochs = 30", "--workers", "1"]


def test_tune_resumes_after_kill_and_finishes_with_report_flags_plugin_build_and_tests(
        tmp_path: Path) -> None:
    src, expected = make_project(tmp_path)
    out = tmp_path / "out"
    # The search's share of 3 minutes (about 40 s here) covers the greedy search and leaves less
    # than the continuation needs: tests/test_tune_budget.py tests that.
    argv = tune_argv(str(src), "-o", str(out), "--time-budget", "3m", "--test-command",
                     check_command(expected), *FAST)
    modules = out / "search" / "modules"
    first = kill_tune_when(start_tune(argv, tmp_path), lambda: any(modules.rglob("*.npz")), 150,
                           "the search")
    assert not (out / "steps" / "search.json").exists(), f"killed too late:\n{first}"
    assert (out / "steps" / "baseline.json").is_file()
    before = {p: p.stat().st_mtime_ns for p in modules.rglob("*.npz")}
    assert before

    # The resumed run searches the rest within its share of the budget.
    again = subprocess.run(argv, env=tune_env(tmp_path), capture_output=True, text=True,
                           timeout=420)
    assert again.returncode == 0, again.stdout + again.stderr
    # Finished steps were skipped; modules searched before the kill were not searched again.
    assert again.stdout.count("(done earlier)") >= 3
    search = json.loads((out / "steps" / "search.json").read_text())
    assert search["skipped"] >= len(before)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert search["modules"] == MODULES + 1  # the library's modules and main.c
    # Progress lines carry the elapsed time and an estimate of the end.
    assert "[tune " in again.stdout and "ETA" in again.stdout
    assert "cudart" not in again.stdout + again.stderr  # no TensorFlow start-up noise

    doc = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# mlgo tune")
    assert (out / "report.png").stat().st_size > 0
    # The linked binaries of the two real builds, measured.
    names = {r["name"] for r in doc["binaries"]}
    assert {"app", "libgen.so", "check"} <= names
    lib = next(r for r in doc["binaries"] if r["name"] == "libgen.so")
    assert lib["plain"] > 0 and lib["plugin"] > 0
    # tests/check.c is a test: built and measured, never tuned.
    tuned = {r["name"]: r["tuned"] for r in doc["modules"]}
    assert tuned["tests/check.c"] is False and tuned["lib/gen0.c"] is True
    assert set(doc["steps_seconds"]) >= {"plain", "tests-plain", "corpus", "baseline", "search",
                                         "train", "eval", "export", "rebuild", "tests-plugin"}
    # The flags: the plugin built with them, and the program still prints what -O0 prints.
    plugin = Path(doc["outputs"]["plugin"])
    assert plugin.is_file() and plugin.parent == out / "plugin"
    assert (out / "flags.txt").read_text().split() == ["-Oz", f"-fpass-plugin={plugin}"]
    assert f"-fpass-plugin={plugin}" in (out / "mlgo.cmake").read_text()
    db = json.loads((out / "build-plugin" / "compile_commands.json").read_text())
    assert all(f"-fpass-plugin={plugin}" in e["command"] for e in db)
    run = subprocess.run([str(out / "build-plugin" / "app")], capture_output=True, text=True)
    assert run.stdout.strip() == expected
    assert doc["tests"]["plugin_seconds"] > 0 and (out / "logs" / "tests-plugin.log").is_file()

    # The plugin serves the search's best decisions as they are (the decision table): every
    # decision in a module the table names is the table's, and each such module's object is
    # the search's best bytes.
    from mlgo.search_store import load_result
    from mlgo.serving.decision_table import load_table

    table = load_table(out / "decisions.json")
    assert doc["table"]["modules"] == len(table) > 0 and not doc["table"]["left_out"]
    hits = doc["table"]["hits"]
    assert hits["table_decisions"] == hits["decisions_in_table_modules"] > 0
    rows = {r["name"]: r for r in doc["modules"]}
    for path in (out / "search-best" / "modules").rglob("*.npz"):
        r = load_result(path)
        key = r.module.split("/", 1)[1]
        if key in table:
            assert rows[key]["table"] and rows[key]["plugin"] == r.policy_total, key
    assert not rows["tests/check.c"]["table"]
    assert "## Decision table" in (out / "report.md").read_text()
    # One of the four tuned modules that ask decisions was held out of training, and the policy's place outside
    # the table was judged on it.
    held_out = json.loads((out / "steps" / "train.json").read_text())["held_out"]
    assert len(held_out) == 1 and held_out[0] in table
    split = json.loads((out / "train" / "split.json").read_text())
    assert not any(n.endswith("/" + held_out[0]) for n in split["train"] + split["validation"])
    assert doc["table"]["beyond"]["held_out"] and doc["table"]["beyond"]["modules"] == 1
    assert "module(s) held out of its training" in (out / "report.md").read_text()


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlgo: error: ") and "\n" not in err, err
    return err


@pytest.mark.usefixtures("isolated_cache")
def test_a_compile_database_whose_level_cannot_be_set_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    (tmp_path / "b.c").write_text("int b(void) { return 2; }\n")
    (tmp_path / "flags.rsp").write_text("-O2\n")
    db = tmp_path / "compile_commands.json"
    db.write_text(json.dumps([
        {"directory": str(tmp_path), "file": "a.c", "command": "clang -O2 -c a.c -o a.o"},
        {"directory": str(tmp_path), "file": "b.c",
         "arguments": ["clang", "@flags.rsp", "-c", "b.c", "-o", "b.o"]}]))
    err = _one_line_error(capsys, ["tune", "--compile-db", str(db), "-o", str(tmp_path / "out")])
    assert str(db) in err and "b.c" in err and "response file" in err
    assert "cannot be set" in err
    assert not (tmp_path / "out" / "corpus").exists()


@pytest.mark.usefixtures("isolated_cache")
def test_a_failing_test_command_stops_the_tune_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = make_project(tmp_path)
    out = tmp_path / "out"
    err = _one_line_error(capsys, ["tune", str(src), "-o", str(out), "--workers", "1",
                                   "--test-command", 'test "$(./app)" = 0'])
    assert "the test command failed on the plain -Oz build" in err
    assert str(out / "logs" / "tests-plain.log") in err
    assert not (out / "corpus").exists()  # nothing tuned on a build whose tests fail


@pytest.mark.parametrize("arg", ["-DCMAKE_C_FLAGS=-Wno-error",
                                 "-DCMAKE_SHARED_LINKER_FLAGS:STRING=-Wl,--undefined-version",
                                 "-DCMAKE_BUILD_TYPE=Release"])
def test_a_cmake_arg_that_would_replace_mlgos_own_build_settings_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, arg: str) -> None:
    src, _ = make_project(tmp_path)
    out = tmp_path / "out"
    # (A short budget, so that without the check the run would end soon, with another error.)
    err = _one_line_error(capsys, ["tune", str(src), "-o", str(out), f"--cmake-arg={arg}",
                                   "--time-budget", "30s", "--workers", "1"])
    name = arg[2:].split("=")[0].split(":")[0]
    assert f"--cmake-arg {arg}" in err and f"mlgo sets {name} in its builds itself" in err
    assert ("CMAKE_SHARED_LINKER_FLAGS_MINSIZEREL" in err) == ("LINKER" in name)
    assert not out.exists()  # refused before anything ran


def test_lld_refusing_a_version_script_names_the_cmake_arg_that_lets_it_link(
        tmp_path: Path) -> None:
    from mlgo.tune import project
    from mlgo_base.errors import MlgoError

    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.c").write_text("int lib_one(void) { return 1; }\n")
    (src / "lib.sym").write_text("LIB_1 { global: lib_one; lib_gone; local: *; };\n")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(vs C)\nadd_library(lib SHARED lib.c)\n"
        "target_link_options(lib PRIVATE -Wl,--version-script,${CMAKE_SOURCE_DIR}/lib.sym)\n")
    cache = tmp_path / "plain.cmake"
    cache.write_text(project.plain_cache_text())

    def build(name: str, *args: str) -> Path:
        return project.cmake_build(src, tmp_path / name, cache, args, tmp_path / f"{name}.log",
                                   jobs=1, timeout=120)

    with pytest.raises(MlgoError) as refused:
        build("b1")
    message = str(refused.value)
    assert "lib_gone" in message and "\n" not in message
    fix = "--cmake-arg=-DCMAKE_SHARED_LINKER_FLAGS_MINSIZEREL=-Wl,--undefined-version"
    assert fix in message
    # The advice works, and the link is still lld's.
    db = build("b2", fix.removeprefix("--cmake-arg="))
    assert db.is_file() and (tmp_path / "b2" / "liblib.so").is_file()
    link = (tmp_path / "b2" / "CMakeFiles" / "lib.dir" / "link.txt").read_text()
    assert "-fuse-ld=lld" in link and "--undefined-version" in link


def _corpus(root: Path, sources: dict[str, str]) -> Path:
    """A corpus (project 'p') of `sources` written under root/src, compiled by absolute path
    (so the IR names the directory, as a build's does)."""
    from corpus_tools.corpus import Corpus

    src, corpus = root / "src", root / "corpus"
    src.mkdir(parents=True)
    (corpus / "p").mkdir(parents=True)
    for name, text in sources.items():
        (src / name).write_text(text)
        subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(src / name), "-o", str(corpus / "p" / f"{name}.bc")], check=True)
        (corpus / "p" / f"{name}.cmd").write_bytes(b"-c\0-Oz")
    (corpus / "corpus_description.json").write_text(json.dumps(
        {"has_thinlto": False, "modules": [f"p/{n}" for n in sources], "opt_level": "-Oz",
         "llvm_version": toolchain.llvm_major()}))
    return Corpus.load(corpus)


def test_a_later_version_reuses_the_search_results_of_unchanged_modules_only(
        tmp_path: Path) -> None:
    import numpy as np

    from mlgo.search import load_result, result_path, save_result
    from mlgo.tune.learn import fingerprints, reuse_results
    from mlgo.workers.tasks import ModuleOutcome

    same = 'const char *where(void) { return __FILE__; }\nint f(int x) { return x * 3; }\n'
    old = _corpus(tmp_path / "v1", {"f.c": same, "g.c": "int g(int x) { return x + 1; }\n"})
    new = _corpus(tmp_path / "v2", {"f.c": same, "g.c": "int g(int x) { return x + 2; }\n"})
    old_prints = fingerprints(old, tmp_path / "v1" / "src", 1)
    new_prints = fingerprints(new, tmp_path / "v2" / "src", 1)
    # Another directory (named in the IR and in __FILE__) is not a change; other code is.
    assert old_prints["p/f.c"] == new_prints["p/f.c"]
    assert old_prints["p/g.c"] != new_prints["p/g.c"]

    prev = tmp_path / "tune-v1"
    config = {"passes": 1, "budget": 100, "flips": "inlined", "comdat": False}
    (prev / "search").mkdir(parents=True)
    (prev / "search" / "search.json").write_text(json.dumps({**config, "guide": "none"}))
    (prev / "fingerprints.json").write_text(json.dumps(old_prints))
    for m in ("p/f.c", "p/g.c"):
        save_result(prev / "search", ModuleOutcome(
            m, True, reward=0.1, policy_total=90, default_total=100, num_decisions=1,
            actions=np.array([0]), default_actions=np.array([1]),
            features={"callee_users": np.array([[1]])},
            extra={"compiles": 3, "kept": 1, "default_objective": 100, "best_objective": 90}),
            "fingerprint of the earlier search")

    search = tmp_path / "tune-v2" / "search"
    search_prints = {"p/f.c": "f in the new search", "p/g.c": "g in the new search"}
    assert reuse_results(prev, new_prints, search, config,
                         search_prints)["reused"] == {"p/f.c": "p/f.c"}
    assert result_path(search, "p/f.c").is_file() and not result_path(search, "p/g.c").exists()
    # The copy carries the new search's fingerprint, so that search keeps it.
    assert load_result(result_path(search, "p/f.c"), "p/f.c", "f in the new search").reward == 0.1
    # A search with other settings is not reused at all.
    other = tmp_path / "tune-v2b" / "search"
    assert reuse_results(prev, new_prints, other, {**config, "flips": "all"},
                         search_prints)["reused"] == {}
    assert not result_path(other, "p/f.c").exists()


@pytest.mark.usefixtures("isolated_cache")
def test_the_search_stops_at_its_deadline_and_keeps_what_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corpus_fixtures import generated_source

    from mlgo.search import result_path
    from mlgo.tune.learn import run_search
    from mlgo.tune.progress import quiet_tensorflow

    corpus = _corpus(tmp_path, {f"m{i}.c": generated_source("inlining", i) for i in range(6)})
    quiet_tensorflow()  # the trace the search writes at its end needs it: not the search's time
    t0 = time.monotonic()
    res = run_search(corpus.modules, tmp_path / "search", strategy="greedy", flips="all",
                     module_budget=0,
                     deadline=t0 + 3.0, workers=1, ray=None, gin="", timeout=60,
                     comdat_weights=None)
    assert time.monotonic() - t0 < 30  # the modules in flight were killed, not waited for
    assert res["stopped_by_budget"] and res["unfinished"]
    done = [m.name for m in corpus.modules if result_path(tmp_path / "search", m.name).is_file()]
    assert res["modules"] == len(done) < len(corpus.modules)
    assert set(res["unfinished"]).isdisjoint(done)


@pytest.mark.usefixtures("isolated_cache")
def test_the_strong_search_ends_near_its_deadline_with_a_result_for_every_module(
        tmp_path: Path) -> None:
    from corpus_fixtures import generated_source

    from mlgo.search import result_path
    from mlgo.tune.learn import run_search
    from mlgo.tune.progress import quiet_tensorflow

    corpus = _corpus(tmp_path, {f"m{i}.c": generated_source("inlining", i) for i in range(6)})
    quiet_tensorflow()
    finished = []
    t0 = time.monotonic()
    res = run_search(corpus.modules, tmp_path / "search", strategy="strong", flips="all",
                     module_budget=0, deadline=t0 + 8.0, workers=1, ray=None, gin="",
                     timeout=60, comdat_weights=None, tick=finished.append)
    # No compile starts that would overrun the budget; the best found is kept for every module
    # (the margin is for a loaded machine, not part of the schedule).
    assert time.monotonic() - t0 < 30
    assert res["modules"] == len(corpus.modules) and not res["failed"]
    assert all(result_path(tmp_path / "search", m.name).is_file() for m in corpus.modules)
    assert finished[-1] == len(corpus.modules) and res["config"]["strategy"] == "strong"


@pytest.mark.parametrize(("path", "test"), [
    ("src/logging.cc", False), ("src/logging_unittest.cc", True), ("db/db_test.cc", True),
    ("tests/main.c", True), ("lib/unittest/x.cc", True), ("test_parse.c", True),
    ("src/contest.c", False), ("src/latest_unittests.c", True), ("src/testing.c", True),
    ("src/attest.c", False)])
def test_sources_of_tests_are_recognized_by_their_directory_or_file_name(path: str,
                                                                        test: bool) -> None:
    from mlgo.tune.project import is_test_path

    assert is_test_path(path) is test
