"""Corpora are the IR of the build the policy serves: extraction emits IR at a chosen frontend
level (-Oz by default for inlining corpora), records it, and inlining refuses IR of another."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool, make_small_corpus

from corpus_tools import extract
from corpus_tools.corpus import Corpus
from corpus_tools.ir_analysis import size_attributes
from corpus_tools.merge import merge_corpora
from mlgo.cli.main import main as mlgo_main
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError

SOURCE = """
static int helper(int x) { return x * 3 + 1; }
int api(int n) { int s = 0; for (int i = 0; i < n; i++) s += helper(i); return s; }
"""


def _compile_db(root: Path) -> Path:
    src = root / "proj"
    src.mkdir(parents=True)
    (src / "a.c").write_text(SOURCE)
    db = [{"directory": str(src), "file": "a.c",
           "arguments": ["cc", "-O2", "-g", "-fPIC", "-c", "a.c", "-o", "a.o"]}]
    (src / "compile_commands.json").write_text(json.dumps(db))
    return src / "compile_commands.json"


def test_compile_db_is_extracted_at_oz_for_inlining_and_at_its_own_level_for_regalloc(
        tmp_path: Path, capsys) -> None:
    db = _compile_db(tmp_path)
    oz, kept = tmp_path / "oz", tmp_path / "kept"
    assert mlgo_main(["corpus", "extract", "--compile-db", str(db), "--project", "p",
                      "-o", str(oz), "--no-progress"]) == 0
    assert "IR emitted at -Oz" in capsys.readouterr().out
    assert mlgo_main(["corpus", "extract", "--compile-db", str(db), "--project", "p",
                      "--problem", "regalloc", "-o", str(kept), "--no-progress"]) == 0

    m = Corpus.load(oz).modules[0]
    assert size_attributes(m.bc_path).level() == "-Oz"
    assert m.args()[-1] == "-Oz" and "-O2" not in m.args() and "-fPIC" in m.args()
    desc = json.loads((oz / "corpus_description.json").read_text())
    assert desc["opt_level"] == "-Oz"
    assert desc["origins"]["p"] == {"source": "compile-db", "path": str(db)}

    k = Corpus.load(kept).modules[0]
    assert size_attributes(k.bc_path).level() == "-O1/-O2/-O3"
    assert "-O2" in k.args() and Corpus.load(kept).opt_level == "keep"


def test_one_corpus_holds_one_level(tmp_path: Path) -> None:
    db = _compile_db(tmp_path)
    extract.extract_compile_db(db, tmp_path / "oz", project="p", opt_level="-Oz",
                               progress=False)
    with pytest.raises(CorpusError, match="holds IR at -Oz, not keep"):
        extract.extract_compile_db(db, tmp_path / "oz", project="q", progress=False)
    extract.extract_compile_db(db, tmp_path / "o2", project="q", progress=False)
    with pytest.raises(CorpusError, match="cannot be merged"):
        merge_corpora([tmp_path / "oz", tmp_path / "o2"], tmp_path / "m")


def test_objects_of_another_level_are_refused_by_name(tmp_path: Path) -> None:
    objs = tmp_path / "objs"
    objs.mkdir()
    (tmp_path / "a.c").write_text(SOURCE)
    for level in ("-O2", "-Oz"):
        subprocess.run([llvm_tool("clang"), level, "-Xclang", "-fembed-bitcode=all", "-c",
                        str(tmp_path / "a.c"), "-o", str(objs / f"a{level}.o")], check=True)
    summary = extract.extract_objects(objs, tmp_path / "c", project="p", opt_level="-Oz",
                                      progress=False)
    assert summary.extracted == ["p/a-Oz.o"]
    assert [f.module for f in summary.failed] == ["p/a-O2.o"]
    assert "built at -O2, not -Oz" in summary.failed[0].reason
    kept = extract.extract_objects(objs, tmp_path / "k", project="p", progress=False)
    assert not kept.failed and len(kept.extracted) == 2


@pytest.mark.parametrize("command", ["eval", "trace", "train"])
def test_inlining_on_o2_frontend_ir_stops_with_one_line_naming_the_module(
        tmp_path: Path, capsys, command: str) -> None:
    corpus = make_small_corpus(tmp_path, opt="-O2")
    argv = {"eval": ["eval", "--policy", "cost-threshold"],
            "trace": ["trace", "-o", str(tmp_path / "t")],
            "train": ["train", "--algorithm", "bc", "-o", str(tmp_path / "r")]}[command]
    rc = mlgo_main([*argv, "--problem", "inlining", "--corpus", str(corpus), "--workers", "1"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "small/calls.c.bc: IR emitted at -O1/-O2/-O3 (0 of" in lines[0]
    assert f"needs IR as `clang-{toolchain.llvm_major()} -Oz -c` emits it" in lines[0]
    assert "--opt-level Oz" in lines[0]
    # Regalloc serves the build's own level: the same corpus is fine there.
    assert mlgo_main(["eval", "--problem", "regalloc", "--policy", "proxy", "--corpus",
                      str(corpus), "--workers", "1", "--max-modules", "1"]) == 0


def test_reextract_command_follows_the_recorded_origin(tmp_path: Path) -> None:
    db = _compile_db(tmp_path)
    extract.extract_compile_db(db, tmp_path / "o2", project="p", progress=False)
    corpus = Corpus.load(tmp_path / "o2")
    assert corpus.reextract_command("p", "-Oz") == (
        f"mlgo corpus extract --compile-db {db} --project p --opt-level Oz -o NEW_CORPUS")
    corpus.extra["origins"]["p"] = {"source": "debian", "package": "lua5.4"}
    assert corpus.reextract_command("p", "-Oz") == (
        "mlgo corpus debian lua5.4 --opt-level Oz -o NEW_CORPUS")
