"""Corpus extraction from compile databases, embedded-bitcode objects and source trees."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool

from corpus_tools import extract
from corpus_tools.check import check_corpus
from corpus_tools.corpus import Corpus, write_description
from corpus_tools.extract_pipeline import FAILURES_FILE, ExtractSummary, ExtractTask, run_tasks
from corpus_tools.merge import merge_corpora
from mlgo.cli.main import main as mlgo_main
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError

C_SOURCE = """
#include "config.h"
static int square(int x) { return x * x; }
int sum_squares(int n) { int s = 0; for (int i = 0; i < n; i++) s += square(i); return s + BIAS; }
"""
CXX_SOURCE = """
#include <vector>
template <typename T> T total(const std::vector<T>& v) { T s{}; for (auto x : v) s += x; return s; }
int use_total() { std::vector<int> v{1, 2, 3}; return total(v); }
"""
BROKEN_SOURCE = "int broken( { return 0; }\n"


def _clang() -> str:
    return toolchain.clang().path


def _make_project(root: Path) -> Path:
    """A small tree with a compile_commands.json: one C, one C++, one that does not compile."""
    src = root / "proj"
    (src / "include").mkdir(parents=True)
    (src / "include" / "config.h").write_text("#define BIAS 7\n")
    (src / "lib").mkdir()
    (src / "lib" / "sum.c").write_text(C_SOURCE)
    (src / "cxx").mkdir()
    (src / "cxx" / "total.cpp").write_text(CXX_SOURCE)
    (src / "broken.c").write_text(BROKEN_SOURCE)
    build = src / "build"
    build.mkdir()
    db = [
        {   # `arguments` form with dependency-file flags and a relative path
            "directory": str(build),
            "arguments": ["/usr/bin/cc", "-DFOO=1", "-I../include", "-O2", "-fPIC", "-MD",
                          "-MF", "sum.d", "-MT", "sum.o", "-Wall", "-std=gnu99", "-c",
                          "-o", "sum.o", "../lib/sum.c"],
            "file": "../lib/sum.c",
        },
        {   # `command` form, C++ via the compiler name
            "directory": str(build),
            "command": f"/usr/bin/c++ -Os -fno-exceptions -I{src / 'include'} -o total.o "
                       f"-c {src / 'cxx' / 'total.cpp'}",
            "file": str(src / "cxx" / "total.cpp"),
        },
        {   # the same source compiled again (like a static and a PIC copy): ignored
            "directory": str(build),
            "arguments": ["cc", "-I../include", "-O2", "-c", "../lib/sum.c", "-o", "sum-static.o"],
            "file": "../lib/sum.c",
        },
        {
            "directory": str(build),
            "arguments": ["cc", "-O2", "-c", "-o", "broken.o", "../broken.c"],
            "file": "../broken.c",
        },
        {   # assembly is not a module
            "directory": str(build),
            "arguments": ["cc", "-c", "-o", "x.o", "../x.S"],
            "file": "../x.S",
        },
    ]
    (build / "compile_commands.json").write_text(json.dumps(db))
    return src


def _rebuild_ok(corpus_dir: Path, name: str, tmp_path: Path) -> None:
    """The corpus contract, checked directly: clang-19 <cmd> -x ir M.bc -o M.o."""
    args = [a for a in (corpus_dir / (name + ".cmd")).read_bytes().decode().split("\0") if a]
    obj = tmp_path / "rebuilt.o"
    obj.unlink(missing_ok=True)
    res = subprocess.run([_clang(), *args, "-x", "ir", str(corpus_dir / (name + ".bc")),
                          "-o", str(obj)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert obj.read_bytes()[:4] == b"\x7fELF"


def test_compile_db_extracts_c_and_cxx_and_reports_the_broken_file(tmp_path: Path) -> None:
    src = _make_project(tmp_path)
    out = tmp_path / "corpus"
    summary = extract.extract_compile_db(src / "build" / "compile_commands.json", out,
                                         project="demo", root=src, jobs=2, progress=False)
    assert sorted(summary.extracted) == ["demo/cxx/total.cpp", "demo/lib/sum.c"]
    assert [f.module for f in summary.failed] == ["demo/broken.c"]
    assert "error" in summary.failed[0].stderr
    assert len(summary.repeated_sources) == 1 and len(summary.not_c_family) == 1
    assert "1 failed" in summary.format() and "broken.c" in summary.format()

    failures = json.loads((out / FAILURES_FILE).read_text())
    assert failures[0]["module"] == "demo/broken.c" and "error" in failures[0]["stderr"]

    corpus = Corpus.load(out)
    assert {m.name: m.project for m in corpus.modules} == {
        "demo/lib/sum.c": "demo", "demo/cxx/total.cpp": "demo"}
    sum_args = corpus.subset(["demo/lib/sum.c"]).modules[0].args()
    assert sum_args == ["-c", "-O2", "-fPIC"]
    total_args = corpus.subset(["demo/cxx/total.cpp"]).modules[0].args()
    assert total_args[0] == "-c" and "-Os" in total_args
    assert not any(a.startswith(("-I", "-D", "-M", "-o")) for a in total_args)
    # The extraction must not write the build's dependency file or object.
    assert not (src / "build" / "sum.d").exists() and not (src / "build" / "sum.o").exists()
    # Pre-optimization bitcode: the static helper is still there to be inlined.
    dis = subprocess.run([llvm_tool("llvm-dis"),
                          str(out / "demo/lib/sum.c.bc"), "-o", "-"],
                         capture_output=True, text=True, check=True).stdout
    assert "define internal i32 @square" in dis
    for m in corpus.modules:
        _rebuild_ok(out, m.name, tmp_path)
    check = check_corpus(out, jobs=2, progress=False)
    assert sorted(check.ok) == sorted(m.name for m in corpus.modules) and not check.failed


def test_rerun_skips_existing_and_redoes_only_missing_files(tmp_path: Path) -> None:
    src = _make_project(tmp_path)
    db = src / "build" / "compile_commands.json"
    out = tmp_path / "corpus"
    first = extract.extract_compile_db(db, out, project="demo", root=src, progress=False)
    assert len(first.extracted) == 2
    second = extract.extract_compile_db(db, out, project="demo", root=src, progress=False)
    assert second.extracted == [] and sorted(second.skipped_existing) == sorted(first.extracted)
    assert [f.module for f in second.failed] == ["demo/broken.c"]  # failures are retried

    # An interrupted run leaves a module with its .bc but no .cmd: only that one is redone.
    (out / "demo/lib/sum.c.cmd").unlink()
    third = extract.extract_compile_db(db, out, project="demo", root=src, progress=False)
    assert third.extracted == ["demo/lib/sum.c"]
    assert sorted(Corpus.load(out).extra["projects"]) == ["demo/cxx/total.cpp", "demo/lib/sum.c"]
    assert not list(out.rglob("*.tmp"))


def test_split_compile_args_keeps_codegen_flags_only() -> None:
    entry = extract.CompileEntry(
        Path("/b"), Path("/s/x.c"),
        ("gcc", "-Wp,-MD,.deps/x.d", "-include", "pre.h", "-isystem", "/i", "-DA", "-U", "B",
         "-O3", "-march=x86-64-v2", "-fno-omit-frame-pointer", "-mllvm", "-some-opt",
         "-Wa,--noexecstack", "-flto=thin", "-fprofile-use=/p", "-g", "-x", "c",
         "-Xclang", "-fembed-bitcode=all", "-o/b/x.o", "-c", "/s/x.c"))
    frontend, recompile = extract.split_compile_args(entry)
    assert recompile == ["-c", "-O3", "-march=x86-64-v2", "-fno-omit-frame-pointer",
                         "-mllvm", "-some-opt", "-Wa,--noexecstack", "-g"]
    assert "-include" in frontend and "pre.h" in frontend and "-DA" in frontend
    assert "/s/x.c" not in frontend and "-o/b/x.o" not in frontend
    assert not any(a.startswith(("-flto", "-fprofile", "-fembed", "-Wp,")) for a in frontend)


def test_module_names_are_filesystem_safe() -> None:
    assert extract.module_name("my proj", "../a b/c?.c") == "my_proj/__/a_b/c_.c"
    assert extract.module_name("p", "./src//x.cc") == "p/src/x.cc"
    with pytest.raises(CorpusError):
        extract.module_name("p", ".")


def _embedded_object(src: Path, obj: Path, *flags: str) -> None:
    obj.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_clang(), "-c", "-O2", *flags, str(src), "-o", str(obj)], check=True)


def test_objects_with_embedded_bitcode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.h").write_text("#define BIAS 1\n")
    (src / "sum.c").write_text(C_SOURCE)
    (src / "other.c").write_text("int other(int a) { return a + 1; }\n")
    objs = tmp_path / "objs"
    embed = ("-Xclang", "-fembed-bitcode=all", f"-I{src}", "-fPIC")
    _embedded_object(src / "sum.c", objs / "sum.o", *embed, "-MD", "-MF", str(tmp_path / "d.d"))
    _embedded_object(src / "other.c", objs / "sub" / "other.o", *embed)
    shutil.copy(objs / "sum.o", objs / "sum_copy.o")  # identical bitcode
    _embedded_object(src / "other.c", objs / "plain.o")  # no embedded bitcode
    data = (objs / "sum.o").read_bytes()
    (objs / "truncated.o").write_bytes(data[: len(data) // 3])

    out = tmp_path / "corpus"
    summary = extract.extract_objects(objs, out, project="objs", jobs=2, progress=False)
    assert sorted(summary.extracted) == ["objs/sub/other.o", "objs/sum.o"]
    assert summary.duplicates == {"objs/sum_copy.o": "objs/sum.o"}
    assert sorted(f.module for f in summary.failed) == ["objs/plain.o", "objs/truncated.o"]
    assert all(f.reason and (f.stderr or "bitcode" in f.reason) for f in summary.failed)

    args = Corpus.load(out).subset(["objs/sum.o"]).modules[0].args()
    assert args[0] == "-cc1" and "-emit-obj" in args
    assert not any(a.startswith("-fembed-bitcode") for a in args)
    assert "-main-file-name" not in args and "-dependency-file" not in args
    for name in summary.extracted:
        _rebuild_ok(out, name, tmp_path)

    again = extract.extract_objects(objs, out, project="objs", progress=False)
    assert again.extracted == [] and again.duplicates == summary.duplicates


def test_source_tree_with_include_and_define_flags(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "inc").mkdir()
    (tree / "inc" / "config.h").write_text("#define BIAS 3\n")
    (tree / "a" / "sum.c").write_text(C_SOURCE)
    (tree / "a" / "b" / "total.cxx").write_text(CXX_SOURCE)
    (tree / "a" / "needs_define.cc").write_text(
        "#ifndef WANTED\n#error WANTED must be defined\n#endif\nint f() { return WANTED; }\n")
    (tree / "notes.txt").write_text("not a source")
    out = tmp_path / "corpus"
    summary = extract.extract_sources(tree, out, flags=[f"-I{tree / 'inc'}", "-DWANTED=4"],
                                      codegen_flags=["-Oz"], jobs=2, progress=False)
    assert sorted(summary.extracted) == ["tree/a/b/total.cxx", "tree/a/needs_define.cc",
                                         "tree/a/sum.c"]
    assert not summary.failed
    corpus = Corpus.load(out)
    assert all(m.args() == ["-c", "-Oz"] for m in corpus.modules)
    assert not check_corpus(out, progress=False).failed

    without_define = extract.extract_sources(tree, tmp_path / "c2", flags=[f"-I{tree / 'inc'}"],
                                             progress=False)
    assert [f.module for f in without_define.failed] == ["tree/a/needs_define.cc"]
    assert "WANTED must be defined" in without_define.failed[0].stderr


def test_check_reports_a_truncated_module(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one.c").write_text("int one(void) { return 1; }\n")
    (tree / "two.c").write_text("int two(void) { return 2; }\n")
    out = tmp_path / "corpus"
    extract.extract_sources(tree, out, progress=False)
    bc = out / "tree" / "two.c.bc"
    bc.write_bytes(bc.read_bytes()[:40])
    assert not check_corpus(out, modules=["tree/one.c"], progress=False).failed
    with pytest.raises(CorpusError, match="not in the corpus"):
        check_corpus(out, modules=["tree/none.c"], progress=False)
    check = check_corpus(out, progress=False)
    assert check.ok == ["tree/one.c"]
    assert [f.module for f in check.failed] == ["tree/two.c"] and check.failed[0].stderr
    assert mlgo_main(["corpus", "check", str(out), "--no-progress"]) == 1


def test_hanging_compiler_is_a_reported_failure(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    sleeper = ("/bin/sh", "-c", "sleep 30")
    task = ExtractTask("p/hang.c", "p", "hang.c", compile_argv=sleeper,
                               cwd=str(tmp_path), recompile_args=("-c",))
    summary = ExtractSummary(out)
    run_tasks([task], out, summary, jobs=1, timeout=0.5, progress=False)
    assert [f.reason for f in summary.failed] == ["compiler timed out after 0.5 s"]
    assert not list(out.rglob("*.bc*"))


def test_merge_dedupes_and_refuses_name_clashes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one.c").write_text("int one(void) { return 1; }\n")
    (tree / "two.c").write_text("int two(void) { return 2; }\n")
    c1 = tmp_path / "c1"
    extract.extract_sources(tree, c1, progress=False)
    # The same bitcode under another project name: duplicates when merged.
    c2 = tmp_path / "c2"
    shutil.copytree(c1, c2)
    os.rename(c2 / "tree", c2 / "copy")
    desc = json.loads((c2 / "corpus_description.json").read_text())
    mods = [m.replace("tree/", "copy/") for m in desc["modules"]]
    write_description(c2, mods, {m: "copy" for m in mods}, llvm_version=toolchain.llvm_major())
    # A third corpus with a new module.
    (tmp_path / "t3" / "tree").mkdir(parents=True)
    (tmp_path / "t3" / "tree" / "three.c").write_text("int three(void) { return 3; }\n")
    c3 = tmp_path / "c3"
    extract.extract_sources(tmp_path / "t3" / "tree", c3, progress=False)

    merged = tmp_path / "merged"
    summary = merge_corpora([c1, c2, c3], merged)
    assert sorted(summary.added) == ["tree/one.c", "tree/three.c", "tree/two.c"]
    assert summary.duplicates == {"copy/one.c": "tree/one.c", "copy/two.c": "tree/two.c"}
    corpus = Corpus.load(merged)
    assert len(corpus) == 3 and {m.project for m in corpus.modules} == {"tree"}
    assert (merged / "tree/one.c.bc").stat().st_ino == (c1 / "tree/one.c.bc").stat().st_ino
    assert not check_corpus(merged, progress=False).failed

    # Merging again adds nothing; a clash (same name, other bitcode) is an error.
    assert merge_corpora([c1], merged).added == []
    (tmp_path / "t4" / "tree").mkdir(parents=True)
    (tmp_path / "t4" / "tree" / "one.c").write_text("int one(void) { return 11; }\n")
    c4 = tmp_path / "c4"
    extract.extract_sources(tmp_path / "t4" / "tree", c4, progress=False)
    with pytest.raises(CorpusError, match="tree/one.c"):
        merge_corpora([c4], merged)


def test_cli_extract_sources_and_compile_db(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "config.h").write_text("#define BIAS 2\n")
    (tree / "sum.c").write_text(C_SOURCE)
    out = tmp_path / "corpus"
    rc = mlgo_main(["corpus", "extract", "--sources", str(tree), "-I", str(tree), "-D", "X=1",
                    "--codegen-flags", "-O1 -fPIC", "--project", "cli", "-o", str(out),
                    "--no-progress", "--verify"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 extracted" in printed and "1 modules recompile, 0 fail" in printed
    # Inlining corpora by default: the level is replaced by -Oz, in the IR and the .cmd.
    assert Corpus.load(out).modules[0].args() == ["-c", "-fPIC", "-Oz"]
    assert Corpus.load(out).opt_level == "-Oz"
    rc = mlgo_main(["corpus", "extract", "--sources", str(tree), "-I", str(tree), "-D", "X=1",
                    "--codegen-flags", "-O1 -fPIC", "--project", "cli", "-o",
                    str(tmp_path / "kept"), "--no-progress", "--opt-level", "keep"])
    assert rc == 0
    assert Corpus.load(tmp_path / "kept").modules[0].args() == ["-c", "-O1", "-fPIC"]
    capsys.readouterr()

    src = _make_project(tmp_path / "p")
    rc = mlgo_main(["corpus", "extract", "--compile-db",
                    str(src / "build" / "compile_commands.json"), "--project", "demo",
                    "-o", str(tmp_path / "c2"), "--no-progress", "-j", "2"])
    assert rc == 1  # broken.c failed
    assert "FAILED" in capsys.readouterr().out
    assert mlgo_main(["corpus", "extract", "--compile-db", "x.json", "-o", "o"]) == 2


def test_unreadable_compile_db_is_a_corpus_error(tmp_path: Path) -> None:
    bad = tmp_path / "compile_commands.json"
    bad.write_text("[{\"directory\": \"/\"}]")
    with pytest.raises(CorpusError, match="entry 0"):
        extract.read_compile_db(bad)
    bad.write_text("{not json")
    with pytest.raises(CorpusError, match="not valid JSON"):
        extract.read_compile_db(bad)
    cmd = shlex.join(["cc", "-c", "a b.c"])
    bad.write_text(json.dumps([{"directory": "/d", "command": cmd, "file": "a b.c"}]))
    [entry] = extract.read_compile_db(bad)
    assert entry.file == Path("/d/a b.c") and entry.arguments[-1] == "a b.c"


def test_failures_of_other_projects_stay_listed(tmp_path: Path) -> None:
    src = _make_project(tmp_path)
    out = tmp_path / "corpus"
    extract.extract_compile_db(src / "build" / "compile_commands.json", out, project="demo",
                               root=src, progress=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one.c").write_text("int one(void) { return 1; }\n")
    second = extract.extract_sources(tree, out, progress=False)
    assert second.extracted == ["tree/one.c"] and not second.failed
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert [f["module"] for f in failures] == ["demo/broken.c"]
    assert {m.project for m in Corpus.load(out).modules} == {"demo", "tree"}
    # Fixing the file and re-running clears its failure.
    (src / "broken.c").write_text("int fixed(void) { return 0; }\n")
    extract.extract_compile_db(src / "build" / "compile_commands.json", out, project="demo",
                               root=src, progress=False)
    assert json.loads((out / FAILURES_FILE).read_text()) == []


def test_merge_keeps_or_drops_whole_projects_and_refuses_unknown_names(tmp_path: Path, capsys) -> None:
    from mlgo.cli.main import main

    corpora = []
    for project in ("alpha", "beta", "gamma"):
        tree = tmp_path / "src" / project
        tree.mkdir(parents=True)
        (tree / f"{project}.c").write_text(f"int {project}(void) {{ return {len(project)}; }}\n")
        corpora.append(tmp_path / f"c-{project}")
        extract.extract_sources(tree, corpora[-1], progress=False)
        desc = json.loads((corpora[-1] / "corpus_description.json").read_text())
        assert set(desc["projects"].values()) == {project}

    held_out = tmp_path / "held-out"
    summary = merge_corpora(corpora, held_out, keep_projects=["beta"])
    assert summary.added == ["beta/beta.c"]
    training = tmp_path / "training"
    assert main(["corpus", "merge", *map(str, corpora), "-o", str(training),
                 "--exclude-projects", "beta"]) == 0
    assert sorted(m.project for m in Corpus.load(training).modules) == ["alpha", "gamma"]

    # A misspelt held-out project must not leave the real one in training.
    with pytest.raises(CorpusError, match="betta"):
        merge_corpora(corpora, tmp_path / "typo", drop_projects=["betta"])
    assert not (tmp_path / "typo").exists()
    with pytest.raises(SystemExit):
        main(["corpus", "merge", str(corpora[0]), "-o", str(tmp_path / "typo2"), "--projects", "alpha,"])
    assert "comma-separated" in capsys.readouterr().err
