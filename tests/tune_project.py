"""A tiny generated CMake project for the tune tests (tests/test_tune*.py): a shared library of
generated C modules with real inlining choices (tests/corpus_fixtures.py), an executable that
calls all of them, and a test executable under tests/ (left out of tuning by default). Unsigned
arithmetic, so the output is the same at every level. Also how those tests run `mlgo tune` in a
process of its own and kill it with everything it started (tune_env, start_tune,
kill_tune_when)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from corpus_fixtures import generated_source, llvm_tool

MODULES = 4


def make_project(root: Path) -> tuple[Path, str]:
    """The project's source directory, and the program's output at -O0 (what every build
    must print)."""
    src = root / "proj"
    (src / "lib").mkdir(parents=True)
    (src / "tests").mkdir()
    decls = []
    for i in range(MODULES):
        (src / "lib" / f"gen{i}.c").write_text(generated_source("inlining", i).replace("int ", "unsigned "))
        decls += [f"unsigned api{i}_{c}(unsigned);" for c in range(10)]
    calls = " + ".join(f"api{i}_{c}(a)" for i in range(MODULES) for c in range(10))
    main = ("#include <stdio.h>\n" + "\n".join(decls) +
            "\nint main(void) { unsigned s = 0; for (unsigned a = 0; a < 100; a++) s ^= "
            f"{calls}; printf(\"%u\\n\", s); return 0; }}\n")
    (src / "main.c").write_text(main)
    (src / "tests" / "check.c").write_text(main.replace("a < 100", "a < 10"))
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(tiny C)\n"
        f"add_library(gen SHARED {' '.join(f'lib/gen{i}.c' for i in range(MODULES))})\n"
        "add_executable(app main.c)\ntarget_link_libraries(app gen)\n"
        "add_executable(check tests/check.c)\ntarget_link_libraries(check gen)\n")
    ref = root / "ref"
    ref.mkdir()
    objs = []
    for c in [*(src / "lib").glob("*.c"), src / "main.c"]:
        obj = ref / (c.stem + ".o")
        subprocess.run([llvm_tool("clang"), "-O0", "-c", str(c), "-o", str(obj)], check=True)
        objs.append(str(obj))
    subprocess.run([llvm_tool("clang"), *objs, "-o", str(ref / "app")], check=True)
    expected = subprocess.run([str(ref / "app")], capture_output=True, text=True,
                              check=True).stdout.strip()
    return src, expected


def check_command(expected: str) -> str:
    return f'test "$(./app)" = "{expected}"'


ROOT = Path(__file__).resolve().parent.parent


def tune_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a tune run by a test: its own cache, this checkout's mlgo."""
    return dict(os.environ, MLGO_CACHE_DIR=str(tmp_path / "cache"),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def tune_argv(*args: str) -> list[str]:
    """The command line of `mlgo tune ARGS` run by this checkout's Python."""
    return [sys.executable, "-m", "mlgo.cli.main", "tune", *args]


def start_tune(argv: Sequence[str], tmp_path: Path) -> subprocess.Popen:
    """`argv` (tune_argv) in a session of its own, so a kill reaches its workers and compilers."""
    return subprocess.Popen(list(argv), env=tune_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_tune_when(proc: subprocess.Popen, ready: Callable[[], bool], seconds: float, what: str,
                   settle: float = 0.0) -> str:
    """Wait until `ready()` (at most `seconds`, else fail naming `what`), `settle` seconds more,
    then kill -9 the tune's whole session; returns what it printed."""
    try:
        deadline = time.monotonic() + seconds
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"{what} never started"
            time.sleep(0.05)
        time.sleep(settle)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return proc.stdout.read().decode()
