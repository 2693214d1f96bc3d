"""The cache of native serving artifacts (plugins, mlgo-clang programs): damaged entries
are rebuilt, interrupted builds leave nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_fixtures import SOURCES, llvm_tool

from mlgo.serving import build, launcher, plugin

BIN = Path(sys.executable).parent


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of our own (so damaging it cannot disturb anything else), seeded with the
    shared plugin object, whose build (LLVM's headers) is the slow part of a plugin."""
    shared = plugin.plugin_object().parent
    cache = tmp_path / "cache"
    shutil.copytree(shared, cache / "plugin-objects" / shared.name)
    monkeypatch.setenv("MLGO_CACHE_DIR", str(cache))
    for var in ("MLGO_INLINE_POLICY", "MLGO_REGALLOC_POLICY", "MLGO_FALLBACK"):
        monkeypatch.delenv(var, raising=False)
    return cache


def _truncate(path: Path | str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_truncated_plugin_is_rebuilt(tmp_path: Path, private_cache: Path) -> None:
    so = plugin.plugin_for("cost-threshold")
    whole = so.read_bytes()
    _truncate(so)
    # Before: clang-19 died of SIGBUS in dlopen with LLVM's crash banner.
    printed = subprocess.run([str(BIN / "mlgo"), "plugin", "cost-threshold"],
                             capture_output=True, text=True, check=True, timeout=300)
    assert printed.stdout.strip() == str(so) and so.read_bytes() == whole
    src = tmp_path / "calls.c"
    src.write_text(SOURCES["calls.c"])
    subprocess.run([llvm_tool("clang"), "-Oz", f"-fpass-plugin={so}", "-c", str(src), "-o",
                    str(tmp_path / "calls.o")], check=True, timeout=120)


def test_truncated_program_is_rebuilt(tmp_path: Path, private_cache: Path) -> None:
    path = Path(launcher.launcher_for("clang"))
    whole = path.read_bytes()
    _truncate(path)
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    # Before: "host failed with status -11; see its message above", and no message above.
    proc = subprocess.run([str(BIN / "mlgo-clang"), "-O2", "-c", str(src), "-o",
                           str(tmp_path / "p.o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes() == whole


def test_program_checks_its_plugin_and_print_launcher_repairs(
        tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_INLINE_POLICY", "cost-threshold")
    native = launcher.launcher_for("clang")
    plugin_path = plugin.plugin_for("cost-threshold")
    src = tmp_path / "calls.c"
    src.write_text(SOURCES["calls.c"])
    cmd = [native, "-Oz", "-c", str(src), "-o", str(tmp_path / "c.o")]
    subprocess.run(cmd, check=True, timeout=120)
    _truncate(plugin_path)
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert str(plugin_path) in refused.stderr and "differs" in refused.stderr
    assert "--print-launcher" in refused.stderr
    # Printing it again rebuilds what is damaged, the program itself included.
    _truncate(native)
    again = subprocess.run([str(BIN / "mlgo-clang"), "--print-launcher"], capture_output=True,
                           text=True, check=True, timeout=300).stdout.strip()
    proc = subprocess.run([again, *cmd[1:]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_damaged_artifact_found_by_lookup_is_not_trusted(private_cache: Path) -> None:
    key = build.content_key("test-artifact")

    def make(tmp: Path) -> dict:
        (tmp / "a.bin").write_bytes(b"x" * 1000)
        return {}

    path = build.cached_artifact("tests", key, "a.bin", make)
    assert build.find_artifact("tests", key, "a.bin") == str(path)
    path.write_bytes(b"x" * 999 + b"y")
    assert build.find_artifact("tests", key, "a.bin") is None
    assert build.cached_artifact("tests", key, "a.bin", make).read_bytes() == b"x" * 1000


def test_interrupted_first_build_leaves_nothing(tmp_path: Path, private_cache: Path) -> None:
    """kill -9 of the first compile while it builds mlgo-clang's program: the next one builds
    it and no `.build-*` directory stays in the cache."""
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    cmd = [str(BIN / "mlgo-clang"), "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    hosts = private_cache / "launchers"
    first = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (hosts.is_dir() and any(p.name.startswith(".build-") for p in hosts.iterdir())):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert any(p.name.startswith(".build-") for p in hosts.iterdir())
    subprocess.run(cmd, check=True, timeout=300)
    assert [p.name for p in hosts.iterdir() if p.name.startswith(".build-")] == []
