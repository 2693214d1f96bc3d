"""Fixtures shared by the test files: a private mlgo cache, the small real corpus, and for the
mlgo-clang tests the native program and the directory it makes its channels in.

The corpus builders themselves (and the `needs_tools` mark) live in tests/corpus_fixtures.py,
which test files also import directly when they build a corpus of their own.

    @pytest.mark.usefixtures("isolated_cache")   # this test's own empty MLGO_CACHE_DIR
    def test_x(corpus): ...                       # the small -Oz corpus, built once per file

Tests that do not ask for a cache share the one MLGO_CACHE_DIR names (else ~/.cache/mlgo), so
built plugins and measured baselines are reused across tests and runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus_fixtures import make_small_corpus


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
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small corpus of corpus_fixtures.SOURCES compiled at -Oz, one per test file (a test
    may damage its file's copy). A file that needs another corpus defines its own `corpus`."""
    return make_small_corpus(tmp_path_factory.mktemp("c"))


@pytest.fixture(scope="module")
def default_program() -> str:
    """The native mlgo-clang made with no policy variables set (serving default-rule)."""
    from mlgo.serving import launcher

    env = {k: os.environ.pop(k) for k in ("MLGO_REGALLOC_POLICY", "MLGO_INLINE_POLICY")
           if k in os.environ}
    try:
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
