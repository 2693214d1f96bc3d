"""Fixtures shared by the test files: a private mlgo cache, the small real corpus, the LLVM
version a test runs on, and for the mlgo-clang tests the native program and the directory it
makes its channels in.

The corpus builders themselves (and the `needs_tools` mark) live in tests/corpus_fixtures.py,
which test files also import directly when they build a corpus of their own.

    @pytest.mark.usefixtures("isolated_cache")   # this test's own empty MLGO_CACHE_DIR
    def test_x(corpus): ...                       # the small -Oz corpus, built once per file

    @on_each_llvm                                 # tests/corpus_fixtures.py: once per version
    def test_y(llvm_version, corpus): ...         # the corpus of that version; MLGO_LLVM_VERSION set

A test not marked runs on the chosen version (MLGO_LLVM_VERSION, else toolchain's rule). Fixtures
that compile and are shared beyond one test depend on `llvm_major`, so each version gets its own.

Tests that do not ask for a cache share the one MLGO_CACHE_DIR names (else ~/.cache/mlgo), so
built plugins and measured baselines are reused across tests and runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus_fixtures import make_small_corpus, on_llvm

from mlgo_base import toolchain


@pytest.fixture(scope="module")
def llvm_major(request: pytest.FixtureRequest) -> int:
    """The LLVM version of the test: the parameter of ON_EACH_LLVM (tests/corpus_fixtures.py)
    where a test has it, else the chosen one."""
    return getattr(request, "param", None) or toolchain.llvm_major()


@dataclass(frozen=True)
class LlvmVersion:
    """An LLVM version and its tools (clang-22, /usr/lib/llvm-22/bin/opt ...)."""

    major: int

    def tool(self, name: str) -> str:
        return toolchain.locate(name, override=False)  # MLGO_LLVM_VERSION is set to `major`

    @property
    def clang(self) -> str:
        return self.tool("clang")

    @property
    def clangxx(self) -> str:
        return self.tool("clang++")


@pytest.fixture
def llvm_version(llvm_major: int, monkeypatch: pytest.MonkeyPatch) -> LlvmVersion:
    """MLGO_LLVM_VERSION set to the test's version for the test (and the workers and compiles
    it starts)."""
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(llvm_major))
    return LlvmVersion(llvm_major)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache (MLGO_CACHE_DIR) private to one test: what the test measures or builds
    cannot come from, or leak into, another test's or the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLGO_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty cache shared by the tests of one file (they reuse each other's baselines) and
    by no one else; the environment is restored when the file's tests are done."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLGO_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llvm_major: int) -> Path:
    """The small corpus of corpus_fixtures.SOURCES compiled at -Oz, one per test file and LLVM
    version (a test may damage its file's copy). A file that needs another corpus defines its
    own `corpus`."""
    with on_llvm(llvm_major):
        return make_small_corpus(tmp_path_factory.mktemp(f"c{llvm_major}-"))


@pytest.fixture(scope="module")
def default_program(llvm_major: int) -> str:
    """The native mlgo-clang made with no policy variables set (serving default-rule), for the
    test's LLVM version."""
    from mlgo.serving import launcher

    env = {k: os.environ.pop(k) for k in ("MLGO_REGALLOC_POLICY", "MLGO_INLINE_POLICY")
           if k in os.environ}
    try:
        with on_llvm(llvm_major):
            return launcher.launcher_for("clang")
    finally:
        os.environ.update(env)


@pytest.fixture()
def channel_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the program makes its FIFO directories, so tests can see what it leaves behind."""
    d = tmp_path / "channels"
    d.mkdir()
    monkeypatch.setenv("MLGO_TMPDIR", str(d))
    monkeypatch.delenv("MLGO_INLINE_POLICY", raising=False)
    monkeypatch.delenv("MLGO_REGALLOC_POLICY", raising=False)
    monkeypatch.delenv("MLGO_FALLBACK", raising=False)
    return d


@pytest.fixture(autouse=True)
def no_gin_left_over() -> Iterator[None]:
    """Gin bindings a test applied in this process (an in-process tune or search parses its
    configuration here too) are cleared after it, so a later test's configurables start from
    their defaults and not from, say, a profile an earlier tune bound."""
    yield
    import gin

    from mlgo.workers.tasks import forget_applied_gin

    gin.clear_config()
    forget_applied_gin()
