"""Debian recipes: parsing, deb-src handling, and one real package build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool

from corpus_tools import debian, extract
from corpus_tools.check import check_corpus
from corpus_tools.corpus import Corpus
from corpus_tools.debian_recipe import Recipe, all_recipes, load_recipe, parse_recipe
from mlgo_base.errors import CorpusError


def test_every_shipped_recipe_parses_and_records_its_result() -> None:
    recipes = all_recipes()
    assert len(recipes) >= 30  # the corpus needs at least 30 packages, 12 of them C++
    for r in recipes:
        assert r.source is not None and r.source.stem == r.package
        assert load_recipe(r.package).package == r.package
        assert r.tested.get("modules", 0) > 0, f"{r.source}: no tested module count"
        assert r.tested.get("build_seconds", 0) > 0, f"{r.source}: no tested build time"
    assert sum(r.language == "c++" for r in recipes) >= 12


def test_a_recipes_folder_without_recipes_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=f"{tmp_path}: no Debian recipes"):
        all_recipes(tmp_path)


def _write(tmp_path: Path, text: str, name: str = "pkg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_recipe_parsing_accepts_steps_and_subset_of_dependencies(tmp_path: Path) -> None:
    r = parse_recipe(_write(tmp_path, """
package = "pkg"
language = "c++"
build = "steps"
steps = ["cmake -S . -B b -DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "make -C b"]
build_deps = ["cmake"]
exclude = ["tests/*"]
env = { CFLAGS = "-O2" }
[tested]
modules = 3
build_seconds = 12.5
"""))
    assert r.build == "steps" and len(r.steps) == 2 and r.build_deps == ("cmake",)
    assert r.exclude == ("tests/*",) and r.env == {"CFLAGS": "-O2"} and r.tested["modules"] == 3


@pytest.mark.parametrize("text, message", [
    ('language = "c"', "missing 'package'"),
    ('package = "Bad Name"\nlanguage = "c"', "not a Debian source package name"),
    ('package = "pk"\nlanguage = "rust"', "'language'"),
    ('package = "pk"\nlanguage = "c"\nbuild = "scons"', "'build' must be one of"),
    ('package = "pk"\nlanguage = "c"\nbuild = "steps"', "non-empty 'steps'"),
    ('package = "pk"\nlanguage = "c"\nsteps = ["make"]', "only used with build"),
    ('package = "pk"\nlanguage = "c"\nbuild_deps = "some"', "'build_deps'"),
    ('package = "pk"\nlanguage = "c"\nflavour = 1', "unknown key"),
    ('package = "pk"\nlanguage = ', "not valid TOML"),
])
def test_bad_recipes_are_rejected_naming_the_file(tmp_path: Path, text: str,
                                                   message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CorpusError, match=message) as info:
        parse_recipe(path)
    assert str(path) in str(info.value)


def test_unknown_package_lists_known_recipes(tmp_path: Path) -> None:
    _write(tmp_path, 'package = "zz"\nlanguage = "c"\n', "zz.toml")
    with pytest.raises(CorpusError, match="known: zz"):
        load_recipe("nope", tmp_path)
    _write(tmp_path, 'package = "other"\nlanguage = "c"\n', "yy.toml")
    with pytest.raises(CorpusError, match="expected 'yy'"):
        load_recipe("yy", tmp_path)


def test_deb_src_detection_and_generation(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    deb822 = ("Types: deb\nURIs: http://example.invalid/debian\nSuites: bookworm\n"
              "Components: main\n\nTypes: deb\nURIs: http://example.invalid/sec\n"
              "Suites: bookworm-security\nComponents: main\n")
    (d / "debian.sources").write_text(deb822)
    missing_list = tmp_path / "sources.list"
    assert not debian.has_deb_src(d, missing_list)
    src_text = debian.deb_src_text(deb822)
    assert src_text.count("Types: deb-src") == 2 and "Types: deb\n" not in src_text
    (d / "src.sources").write_text(src_text)
    assert debian.has_deb_src(d, missing_list)
    (d / "src.sources").unlink()
    missing_list.write_text("# deb-src http://x bookworm main\ndeb http://x bookworm main\n")
    assert not debian.has_deb_src(d, missing_list)
    missing_list.write_text("deb-src http://x bookworm main\n")
    assert debian.has_deb_src(d, missing_list)
    with pytest.raises(CorpusError):
        debian.deb_src_text("URIs: http://x\n")


def test_build_env_uses_the_chosen_clang_and_the_recipe_env() -> None:
    r = Recipe("p", "c", env={"DEB_CFLAGS_MAINT_APPEND": "-fno-plt"})
    env = debian.build_env(r, 3)
    assert env["CC"] == llvm_tool("clang") and env["CXX"] == llvm_tool("clang++")
    assert "parallel=3" in env["DEB_BUILD_OPTIONS"] and "nocheck" in env["DEB_BUILD_OPTIONS"]
    assert env["DEB_CFLAGS_MAINT_APPEND"] == "-fno-plt"


def _can_fetch_sources() -> str | None:
    if os.geteuid() != 0 and not debian.has_deb_src():
        return "needs root (to add deb-src) or an existing deb-src entry"
    if shutil.which("bear") is None or shutil.which("dpkg-source") is None:
        return "needs bear and dpkg-dev"
    res = subprocess.run(["apt-cache", "showsrc", "tinyxml2"], capture_output=True, text=True)
    if debian.has_deb_src() and "Package: tinyxml2" not in res.stdout:
        return "apt has no source index for tinyxml2"
    return None


@pytest.mark.slow
def test_real_package_builds_into_a_corpus_that_recompiles(tmp_path: Path) -> None:
    reason = _can_fetch_sources()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "corpus"
    result = debian.build_package("tinyxml2", out, cache=tmp_path / "cache", jobs=2,
                                  progress=False)
    assert not result.extract.failed
    corpus = Corpus.load(out)
    assert {m.name for m in corpus.modules} == {"tinyxml2/tinyxml2.cpp", "tinyxml2/xmltest.cpp"}
    assert {m.project for m in corpus.modules} == {"tinyxml2"}
    # The package's own optimization flags are kept (dpkg-buildflags give -O2).
    assert "-O2" in corpus.modules[0].args() and corpus.modules[0].args()[0] == "-c"
    assert not check_corpus(out, jobs=2, progress=False).failed
    # The cached build is reused: the second run extracts nothing new and builds nothing.
    again = debian.build_package("tinyxml2", out, cache=tmp_path / "cache", progress=False)
    assert again.extract.extracted == [] and len(again.extract.skipped_existing) == 2
    assert again.build_seconds == 0 and result.build_seconds > 0


def test_cli_lists_recipes_and_requires_packages(capsys) -> None:
    from mlgo.cli.main import main as mlgo_main

    assert mlgo_main(["corpus", "debian", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "lua5.4" in listed and "tinyxml2" in listed and "modules=" in listed
    assert mlgo_main(["corpus", "debian", "-o", "/nonexistent/x"]) == 2
    assert "at least one package" in capsys.readouterr().err


def test_versions_sort_by_dpkg_rules() -> None:
    versions = ["2.5.0-1+deb12u2", "2.5.0-1+deb12u10", "1:1.0-1", "2.5.0-1", "2.5.0~rc1-1"]
    assert debian.sort_versions(versions) == [
        "1:1.0-1", "2.5.0-1+deb12u10", "2.5.0-1+deb12u2", "2.5.0-1", "2.5.0~rc1-1"]


@pytest.mark.skipif(shutil.which("bear") is None, reason="needs bear")
def test_steps_recipe_builds_under_bear_with_clang(tmp_path: Path) -> None:
    tree = tmp_path / "pkg"
    tree.mkdir()
    (tree / "a.c").write_text("int a(int x) { return x + 1; }\n")
    (tree / "b.cc").write_text("int b(int x) { return x * 2; }\n")
    (tree / "Makefile").write_text(
        "all: a.o b.o\n"
        "a.o: a.c\n\t$(CC) -O2 -c a.c -o a.o\n"
        "b.o: b.cc\n\t$(CXX) -Os -c b.cc -o b.o\n")
    recipe = Recipe("pk", "c", build="steps", steps=("echo configure", "make"))
    compile_db = debian.build_with_bear(recipe, tree, jobs=2)
    out = tmp_path / "corpus"
    summary = extract.extract_compile_db(compile_db, out, project="pk", root=tree,
                                         progress=False)
    assert sorted(summary.extracted) == ["pk/a.c", "pk/b.cc"]
    args = {m.name: m.args() for m in Corpus.load(out).modules}
    assert args == {"pk/a.c": ["-c", "-O2"], "pk/b.cc": ["-c", "-Os"]}

    failing = Recipe("pk", "c", build="steps", steps=("false",))
    with pytest.raises(CorpusError, match="build failed with status"):
        debian.build_with_bear(failing, tree, jobs=1)


@pytest.mark.skipif(shutil.which("bear") is None, reason="needs bear")
def test_a_build_that_rewrites_every_file_in_its_tree_keeps_its_compile_commands(
        tmp_path: Path) -> None:
    # graphite2's debian/rules runs `sed -i` over every file of the tree after the first
    # compiles; sed -i replaces each file, and bear's events file must not be one of them.
    tree = tmp_path / "pkg"
    tree.mkdir()
    (tree / "a.c").write_text("int a(int x) { return x + 1; }\n")
    (tree / "b.c").write_text("int b(int x) { return x * 2; }\n")
    recipe = Recipe("pk", "c", build="steps", steps=(
        "$CC -O2 -c a.c -o a.o",
        r"find . -type f -exec sed -i -e 's/-O3//g' {} \;",
        "$CC -O2 -c b.c -o b.o"))
    compile_db = debian.build_with_bear(recipe, tree, jobs=1)
    assert compile_db == tree / "mlgo_compile_commands.json"
    files = sorted(Path(e["file"]).name for e in json.loads(compile_db.read_text()))
    assert files == ["a.c", "b.c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # bear's files moved in


def _fake_download(dest: Path, stem: str, *, tarball: bool = True) -> None:
    """What `apt-get source --download-only` leaves: the .dsc and (unless the archive
    answered 404 for it) the tarball it lists."""
    (dest / f"{stem}.dsc").write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (native)\n"
        f"Source: pk\nFiles:\n 0123456789abcdef0123456789abcdef 5 {stem}.tar.xz\n\n"
        "-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n")
    if tarball:
        (dest / f"{stem}.tar.xz").write_text("12345")


def test_a_dsc_left_by_a_failed_download_is_not_taken_for_a_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The archive can serve a version's .dsc and answer 404 for its tarballs; apt-get then
    # fails but leaves the .dsc, which a later run must not unpack as if it were complete.
    monkeypatch.setattr(debian, "ensure_deb_src", lambda: None)
    monkeypatch.setattr(debian, "source_versions", lambda p: ["2.0-1+deb12u5", "2.0-1"])
    tried = []

    def fake_run(argv, what, *, cwd=None, timeout=0.0, env=None) -> str:
        tried.append(argv[-1])
        if argv[-1].endswith("deb12u5"):
            _fake_download(cwd, "pk_2.0-1+deb12u5", tarball=False)
            raise CorpusError(f"{what}: 404  Not Found")
        _fake_download(cwd, "pk_2.0-1")
        return ""

    monkeypatch.setattr(debian, "_run", fake_run)
    older = tmp_path / "src" / "pk" / "pk_2.0-1.dsc"
    assert debian.download_source("pk", tmp_path) == older
    assert debian.download_source("pk", tmp_path) == older
    assert tried == ["pk=2.0-1+deb12u5", "pk=2.0-1", "pk=2.0-1+deb12u5"]
    assert debian.missing_source_files(older.with_name("pk_2.0-1+deb12u5.dsc")) == [
        "pk_2.0-1+deb12u5.tar.xz"]

    # A tarball cut short (wrong size) is missing too; apt-get "succeeding" without it is
    # an error naming the .dsc and the file.
    (older.parent / "pk_2.0-1.tar.xz").write_text("12")
    monkeypatch.setattr(debian, "source_versions", lambda p: ["2.0-1"])
    monkeypatch.setattr(debian, "_run", lambda *a, **k: "")
    with pytest.raises(CorpusError, match=r"pk_2.0-1.dsc: apt-get source succeeded but "
                                          r"left out pk_2.0-1.tar.xz"):
        debian.download_source("pk", tmp_path)


def test_a_dsc_without_a_files_field_is_rejected_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "pk_1.dsc"
    bad.write_text("Format: 3.0 (native)\nSource: pk\n")
    with pytest.raises(CorpusError, match=f"{bad}: no 'Files:' field"):
        debian.missing_source_files(bad)


def test_download_falls_back_to_an_older_version_the_archive_still_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The package index can be ahead of the archive (a newer security upload answers 404).
    monkeypatch.setattr(debian, "ensure_deb_src", lambda: None)
    monkeypatch.setattr(debian, "source_versions", lambda p: ["1:2.0-1+deb12u5", "1:2.0-1"])
    tried = []

    def fake_run(argv, what, *, cwd=None, timeout=0.0, env=None) -> str:
        tried.append(argv[-1])
        if argv[-1].endswith("deb12u5"):
            raise CorpusError(f"{what}: 404  Not Found")
        _fake_download(cwd, "pk_2.0-1")
        return ""

    monkeypatch.setattr(debian, "_run", fake_run)
    dsc = debian.download_source("pk", tmp_path)
    assert dsc == tmp_path / "src" / "pk" / "pk_2.0-1.dsc"
    assert tried == ["pk=1:2.0-1+deb12u5", "pk=1:2.0-1"]
    assert "using 1:2.0-1" in caplog.text
    # Again: the newest is tried once more, the older one is then found in the cache.
    assert debian.download_source("pk", tmp_path) == dsc
    assert tried == ["pk=1:2.0-1+deb12u5", "pk=1:2.0-1", "pk=1:2.0-1+deb12u5"]

    monkeypatch.setattr(debian, "source_versions", lambda p: ["3.0-1+deb12u5"])
    with pytest.raises(CorpusError, match="no source version could be downloaded"):
        debian.download_source("pk", tmp_path / "other")


def test_a_terminated_package_build_takes_its_whole_build_along(tmp_path: Path) -> None:
    """SIGTERM of the process building a package (e.g. `mlgo corpus debian` stopped by a job
    runner) kills bear and everything the build started, not just the Python side."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tree = tmp_path / "pkg"
    tree.mkdir()
    marker = "299.4713"  # `sleep 299.4713`: a process only this build starts
    # The marker is computed inside the child so that its own command line does not match.
    script = (
        "from pathlib import Path\n"
        "from corpus_tools import debian\n"
        "from corpus_tools.debian_recipe import Recipe\n"
        "recipe = Recipe('pk', 'c', build='steps', steps=('sleep $S',),\n"
        "                       env={'S': '299' + '.4713'})\n"
        f"debian.build_with_bear(recipe, Path({str(tree)!r}), jobs=1)\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent,
                             stderr=subprocess.PIPE)

    def running() -> bool:
        return subprocess.run(["pgrep", "-f", f"sleep {marker}"],
                              capture_output=True).returncode == 0

    try:
        deadline = time.monotonic() + 60
        while not running():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(), "the build outlived the process that started it"
    finally:
        child.kill()
        subprocess.run(["pkill", "-KILL", "-f", f"sleep {marker}"])
