"""`mlgo tune` on a tiny generated CMake project (tests/tune_project.py): killed with SIGKILL
in the middle of its search, then run again, it reuses the modules searched before the kill
and finishes: report, flags files, the build with the plugin (the program still prints what
-O0 prints), the project's test command on both builds. Also the one-line refusals: a compile
database whose optimization level cannot be set, and a test command that fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tune_project import MODULES, check_command, make_project

from mlgo.cli.main import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--gin_bindings", "imitation.ImitationConfig.epochs = 30", "--workers", "1"]


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, MLGO_CACHE_DIR=str(tmp_path / "cache"),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_tune_resumes_after_kill_and_finishes_with_report_flags_plugin_build_and_tests(
        tmp_path: Path) -> None:
    src, expected = make_project(tmp_path)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mlgo.cli.main", "tune", str(src), "-o", str(out),
            "--time-budget", "5m", "--test-command", check_command(expected), *FAST]
    proc = subprocess.Popen(argv, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    modules = out / "search" / "modules"
    try:
        deadline = time.monotonic() + 150
        while not any(modules.rglob("*.npz")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the search never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: workers and compilers too
    finally:
        proc.wait()
    first = proc.stdout.read().decode()
    assert not (out / "steps" / "search.json").exists(), f"killed too late:\n{first}"
    assert (out / "steps" / "baseline.json").is_file()
    before = {p: p.stat().st_mtime_ns for p in modules.rglob("*.npz")}
    assert before

    again = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=240)
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


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlgo: error: ") and "\n" not in err, err
    return err


def test_a_compile_database_whose_level_cannot_be_set_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    (tmp_path / "b.c").write_text("int b(void) { return 2; }\n")
    (tmp_path / "flags.rsp").write_text("-O2\n")
    db = tmp_path / "compile_commands.json"
    db.write_text(json.dumps([
        {"directory": str(tmp_path), "file": "a.c", "command": "clang-19 -O2 -c a.c -o a.o"},
        {"directory": str(tmp_path), "file": "b.c",
         "arguments": ["clang-19", "@flags.rsp", "-c", "b.c", "-o", "b.o"]}]))
    err = _one_line_error(capsys, ["tune", "--compile-db", str(db), "-o", str(tmp_path / "out")])
    assert str(db) in err and "b.c" in err and "response file" in err
    assert "cannot be set" in err
    assert not (tmp_path / "out" / "corpus").exists()


def test_a_failing_test_command_stops_the_tune_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src, _ = make_project(tmp_path)
    out = tmp_path / "out"
    err = _one_line_error(capsys, ["tune", str(src), "-o", str(out), "--workers", "1",
                                   "--test-command", 'test "$(./app)" = 0'])
    assert "the test command failed on the plain -Oz build" in err
    assert str(out / "logs" / "tests-plain.log") in err
    assert not (out / "corpus").exists()  # nothing tuned on a build whose tests fail
