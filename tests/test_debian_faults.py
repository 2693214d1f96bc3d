"""`mlgo corpus debian` on packages nobody wrote a recipe for: what their builds do that a
hand-tuned recipe would have worked around. Each test stands in for one real package (small
trees, faked downloads), so none needs the network or a package build."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from corpus_tools import debian, extract
from corpus_tools.corpus import Corpus
from corpus_tools.debian_recipe import Recipe, parse_recipe
from mlgo.cli.main import main as mlgo_main
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError

needs_bear = pytest.mark.skipif(shutil.which("bear") is None, reason="needs bear")


def _db(path: Path, entries: list[tuple[Path, list[str]]]) -> Path:
    path.write_text(json.dumps([{"directory": str(d), "arguments": a, "file": a[-1]}
                                for d, a in entries]))
    return path


# --- GCC-only warning options (mbedtls: qa=+all gives -Werror=clobbered, its CMake -Werror)


def test_gcc_only_warnings_with_werror_are_left_out_of_the_ir_compile(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text("int a(int x) { return x + 1; }\n")
    db = _db(tmp_path / "cc.json", [(tmp_path, [
        toolchain.clang().path, "-O2", "-Wno-unknown-warning-option", "-Werror=clobbered",
        "-Wall", "-Werror", "-Werror=volatile-register-var", "-c", "-o", "a.o",
        str(tmp_path / "a.c")])])
    summary = extract.extract_compile_db(db, tmp_path / "corpus", project="p", progress=False)
    assert summary.failed == [] and summary.extracted == ["p/a.c"]
    assert summary.dropped_warnings == ["-Werror=clobbered"]  # clang knows the other one
    # Said even when the build's own flags silenced clang's report (as a Debian build's do).
    assert "-Werror=clobbered" in summary.format()
    assert Corpus.load(tmp_path / "corpus").modules[0].args() == ["-c", "-O2"]


@pytest.mark.skipif(shutil.which("dpkg-buildflags") is None, reason="needs dpkg-dev")
def test_a_build_whose_flags_carry_gcc_only_warnings_compiles_with_clang(tmp_path: Path) -> None:
    # What `debian/rules` of a package with DEB_BUILD_MAINT_OPTIONS=qa=+all hands a CMake
    # project that adds -Werror: dpkg-buildflags' CFLAGS, compiled by clang-19.
    env = debian.build_env(Recipe("p", "c"), jobs=1)
    env["DEB_BUILD_MAINT_OPTIONS"] = "qa=+all"
    flags = subprocess.run(["dpkg-buildflags", "--get", "CFLAGS"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert "-Werror=clobbered" in flags
    (tmp_path / "a.c").write_text("int a(int x) { return x + 1; }\n")
    res = subprocess.run([env["CC"], *flags, "-Werror", "-c", "a.c", "-o", "a.o"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # A recipe's own appended flags are kept.
    mine = debian.build_env(Recipe("p", "c", env={"DEB_CFLAGS_APPEND": "-fno-plt"}), 1)
    assert mine["DEB_CFLAGS_APPEND"].split() == [debian.TOLERATE_GCC_WARNINGS, "-fno-plt"]


# --- Commands that compile nothing (redis: `$(CC) -MM *.c` runs `clang -cc1 -Eonly` per file)


def test_cc1_and_preprocess_only_commands_are_not_taken_for_compiles(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text("int a(int x) { return x + 1; }\n")
    (tmp_path / "b.c").write_text("int b(int x) { return x * 2; }\n")
    clang = toolchain.clang().path
    db = _db(tmp_path / "cc.json", [
        # What bear records for `clang -MM a.c b.c`: the driver's cc1 children, a.c first.
        (tmp_path, [clang, "-cc1", "-triple", "x86_64-pc-linux-gnu", "-Eonly",
                    "-dependency-file", "-", "-x", "c", "a.c"]),
        (tmp_path, [clang, "-E", "b.c"]),
        (tmp_path, [clang, "-MM", "b.c"]),
        (tmp_path, [clang, "-O2", "-c", "-o", "a.o", "a.c"]),
        (tmp_path, [clang, "-O1", "-c", "-o", "b.o", "b.c"]),
    ])
    summary = extract.extract_compile_db(db, tmp_path / "corpus", project="p", root=tmp_path,
                                         progress=False)
    assert summary.failed == []
    assert sorted(summary.extracted) == ["p/a.c", "p/b.c"]
    assert len(summary.not_compiles) == 3 and summary.repeated_sources == []
    args = {m.name: m.args() for m in Corpus.load(tmp_path / "corpus").modules}
    assert args == {"p/a.c": ["-c", "-O2"], "p/b.c": ["-c", "-O1"]}


# --- A build that fails after compiling (json-c, cmark: a documentation step)


def _partial_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "pk.toml"
    recipe.write_text('package = "pk"\nlanguage = "c"\nbuild = "steps"\nbuild_deps = []\n'
                      'steps = ["$CC -O2 -c a.c -o a.o",\n'
                      '         "python3 -c \\"import mlgo_no_such_doc_tool\\""]\n')
    return recipe


@needs_bear
def test_a_build_failing_after_its_compiles_keeps_them_and_says_what_failed(
        tmp_path: Path) -> None:
    tree = tmp_path / "pk-1.0"
    tree.mkdir()
    (tree / "a.c").write_text("int a(int x) { return x + 1; }\n")
    recipe = parse_recipe(_partial_recipe(tmp_path))
    build = debian.run_build(recipe, tree, jobs=1)
    assert "No module named 'mlgo_no_such_doc_tool'" in build.failure
    assert "after 1 compiles" in build.failure and "\n" not in build.failure
    assert [Path(e["file"]).name for e in json.loads(build.compile_db.read_text())] == ["a.c"]
    with pytest.raises(CorpusError, match="No module named"):
        debian.build_with_bear(recipe, tree, jobs=1)


@needs_bear
def test_a_build_failing_after_only_configure_probes_is_a_plain_failure(tmp_path: Path) -> None:
    tree = tmp_path / "pk-1.0"
    tree.mkdir()
    (tree / "conftest.c").write_text("int main(void) { return 0; }\n")
    recipe = Recipe("pk", "c", build="steps", steps=(
        "$CC -c conftest.c -o conftest.o", "echo 'configure: error: libfoo not found'; false"))
    with pytest.raises(CorpusError, match=r"build failed with status 1 \(configure: error: "
                                          r"libfoo not found\); log: \S+mlgo_build.log$"):
        debian.run_build(recipe, tree, jobs=1)


def test_the_line_that_says_why_a_build_failed_is_the_one_reported() -> None:
    # json-c: CMake's probes say "not found", make echoes the failure; the cause is clang's.
    log = ("-- Looking for xlocale.h - not found\n"
           "cc -Wno-error=deprecated-declarations -c json_util.c\n"
           "json_util.c:63:35: error: a function declaration without a prototype is deprecated"
           " [-Werror,-Wstrict-prototypes]\n"
           "make[4]: *** [build.make:163: json_util.c.o] Error 1\n")
    assert debian.first_error_line(log).startswith("json_util.c:63:35: error: a function")
    # yajl: CMake names the problem on the line after its own.
    log = ("CMake Error at /usr/share/cmake-3.25/Modules/CMakeDetermineSystem.cmake:130 "
           "(message):\n  Could not find toolchain file: /etc/x.txt\nCall Stack\n")
    assert debian.first_error_line(log).endswith("(message): Could not find toolchain file: "
                                                 "/etc/x.txt")
    assert debian.first_error_line("all good\nlast words\n") == "last words"


@pytest.mark.skipif(shutil.which("dpkg-architecture") is None, reason="needs dpkg-dev")
def test_debian_rules_run_with_the_architecture_dpkg_buildpackage_would_set() -> None:
    # yajl's rules take an unset DEB_BUILD_GNU_TYPE for a cross build and ask CMake for a
    # cross toolchain file; dpkg-buildpackage sets it, and so must a build run without it.
    env = debian.build_env(Recipe("p", "c"), jobs=1)
    assert env["DEB_BUILD_GNU_TYPE"] and env["DEB_BUILD_GNU_TYPE"] == env["DEB_HOST_GNU_TYPE"]
    own = debian.build_env(Recipe("p", "c", env={"DEB_HOST_ARCH": "arm64"}), jobs=1)
    assert own["DEB_HOST_ARCH"] == "arm64"


@needs_bear
def test_cli_extracts_a_partly_built_package_from_a_recipe_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "pristine"
    source.mkdir()
    (source / "a.c").write_text("int a(int x) { return x + 1; }\n")
    dsc = tmp_path / "cache" / "src" / "pk" / "pk_1.0.dsc"

    def unpack(dsc_path: Path, build_root: Path) -> Path:
        target = build_root / "pk-1.0"
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

    monkeypatch.setattr(debian, "download_source", lambda package, cache: dsc)
    monkeypatch.setattr(debian, "unpack_source", unpack)
    out = tmp_path / "corpus"
    argv = ["corpus", "debian", "--recipe", str(_partial_recipe(tmp_path)), "-o", str(out),
            "--cache", str(tmp_path / "cache"), "-j", "1", "--no-progress"]
    assert mlgo_main(argv) == 1
    err = capsys.readouterr().err
    assert "pk: build failed with status 1 after 1 compiles" in err
    assert "No module named 'mlgo_no_such_doc_tool'" in err and "are kept" in err
    assert [m.name for m in Corpus.load(out).modules] == ["pk/a.c"]
    # Reusing the cached build says the same again.
    assert mlgo_main(argv) == 1
    assert "No module named" in capsys.readouterr().err


def test_a_package_build_runs_the_systems_python_first() -> None:
    path = debian.build_path("/root/.pyenv/shims:/opt/venv/bin:/usr/bin:/bin").split(":")
    assert path.index("/usr/bin") < path.index("/root/.pyenv/shims") < path.index("/opt/venv/bin")
    assert path.count("/usr/bin") == 1


# --- Downloads: a version the archive does not serve (cjson's newest, 404 in one archive)


def _fake_download(dest: Path, stem: str) -> None:
    (dest / f"{stem}.dsc").write_text(
        f"Format: 3.0 (native)\nSource: pk\nFiles:\n 0123456789abcdef 5 {stem}.tar.xz\n")
    (dest / f"{stem}.tar.xz").write_text("12345")


def test_a_version_missing_from_one_archive_is_fetched_from_another_that_lists_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "ensure_deb_src", lambda: None)
    monkeypatch.setattr(debian, "source_versions", lambda p: ["1.7-1+deb12u4"])
    monkeypatch.setattr(debian, "source_archives",
                        lambda p: {"1.7-1+deb12u4": ["bookworm", "bookworm-security"]})
    tried = []

    def fake_run(argv, what, *, cwd=None, timeout=0.0, env=None) -> str:
        tried.append(argv[-1])
        if argv[-1] != "pk/bookworm-security":
            raise CorpusError(f"{what}: exited with status 100: apt-get source\n"
                              "E: Failed to fetch http://x/pk_1.7.orig.tar.gz  404  Not Found")
        _fake_download(cwd, "pk_1.7-1+deb12u4")
        return ""

    monkeypatch.setattr(debian, "_run", fake_run)
    dsc = debian.download_source("pk", tmp_path)
    assert dsc == tmp_path / "src" / "pk" / "pk_1.7-1+deb12u4.dsc"
    assert tried == ["pk=1.7-1+deb12u4", "pk/bookworm", "pk/bookworm-security"]


def test_when_no_version_can_be_had_the_error_is_one_line_naming_each_attempt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "ensure_deb_src", lambda: None)
    monkeypatch.setattr(debian, "source_versions", lambda p: ["2.0-1", "1.0-1"])
    monkeypatch.setattr(debian, "source_archives",
                        lambda p: {"2.0-1": ["bookworm", "bookworm-security"], "1.0-1": ["sid"]})

    def fake_run(argv, what, *, cwd=None, timeout=0.0, env=None) -> str:
        raise CorpusError(f"{what}: exited with status 100: apt-get source\n"
                          f"E: Failed to fetch http://x/{argv[-1]}  404  Not Found\n"
                          "E: Some files failed to download")

    monkeypatch.setattr(debian, "_run", fake_run)
    with pytest.raises(CorpusError) as info:
        debian.download_source("pk", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("pk: no source version could be downloaded (apt lists 2.0-1, "
                              "1.0-1): pk=2.0-1: E: Failed to fetch http://x/pk=2.0-1  404")
    for request in ("pk/bookworm:", "pk/bookworm-security:", "pk=1.0-1:"):
        assert request in message


def test_apt_madison_output_gives_each_versions_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    madison = (
        "     cjson | 1.7.15-1+deb12u4 | http://deb.example/debian bookworm/main amd64 Packages\n"
        "     cjson | 1.7.15-1+deb12u4 | http://deb.example/debian bookworm/main Sources\n"
        "     cjson | 1.7.15-1+deb12u4 | http://deb.example/security bookworm-security/main "
        "Sources\n"
        "     cjson |   1.7.15-1 | http://deb.example/debian bullseye/main Sources\n"
        "  libcjson | 9.9 | http://deb.example/debian bookworm/main Sources\n")

    def fake_process_run(argv, **kwargs):
        assert argv == ["apt-cache", "madison", "cjson"]
        return debian.process.Completed(list(argv), 0, madison, "")

    monkeypatch.setattr(debian.process, "run", fake_process_run)
    assert debian.source_archives("cjson") == {
        "1.7.15-1+deb12u4": ["bookworm", "bookworm-security"], "1.7.15-1": ["bullseye"]}


def test_a_failing_apt_step_is_one_line_with_apts_reason(tmp_path: Path) -> None:
    script = ("echo 'Reading package lists...'; echo 'E: Unable to locate package zz' >&2; "
              "echo 'E: Second error' >&2; exit 100")
    with pytest.raises(CorpusError) as info:
        debian._run(["sh", "-c", script], "zz: install build dependencies", cwd=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("zz: install build dependencies: `sh -c ")
    assert message.endswith("exited with status 100: E: Unable to locate package zz")
