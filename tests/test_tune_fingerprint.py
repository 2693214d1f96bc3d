"""The fingerprint that lets `mlgo tune --previous` reuse an earlier search result
(mlgo/tune/learn.py): the same code gives the same fingerprint wherever it was unpacked and
whichever lines it moved to; other code gives another; fingerprints made by another recipe are
refused with the reason, not taken for changed code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from corpus_fixtures import llvm_tool

from corpus_tools.corpus import Module
from mlgo.tune import learn

CODE = ("static int sq(int x) { return x * x + 3; }\n"
        "int f(int y) { return sq(y) + sq(y + 1); }\n")


def _module(tmp: Path, release: str, text: str) -> tuple[Module, Path]:
    """lib/a.c holding `text` in the source tree `release`, as a corpus module compiled with
    debug information (as `setup.py build_ext` and RelWithDebInfo builds do)."""
    root = tmp / release
    src = root / "lib" / "a.c"
    src.parent.mkdir(parents=True)
    src.write_text(text)
    corpus = tmp / f"corpus-{release}"
    (corpus / "p" / "lib").mkdir(parents=True)
    subprocess.run([llvm_tool("clang"), "-g", "-Oz", "-Xclang", "-disable-llvm-passes",
                    "-emit-llvm", "-c", str(src), "-o", str(corpus / "p/lib/a.c.bc")],
                   check=True, cwd=root)
    (corpus / "p/lib/a.c.cmd").write_bytes(f"-c\0-Oz\0-I{root}/lib".encode())
    return Module("p/lib/a.c", corpus), root


def test_the_same_code_has_the_same_fingerprint_on_other_lines_and_in_another_directory(
        tmp_path: Path) -> None:
    first = learn.fingerprint(*_module(tmp_path, "proj-1.0", CODE))
    # A later release: a comment above the code moves every debug location.
    moved = learn.fingerprint(*_module(tmp_path, "proj-1.1", "/* new header */\n\n" + CODE))
    changed = learn.fingerprint(*_module(tmp_path, "proj-1.2", CODE.replace("+ 3", "+ 4")))
    assert first.startswith(learn.FINGERPRINT_RECIPE + ":")
    assert moved == first
    assert changed != first


def test_an_earlier_tunes_fingerprints_of_another_recipe_reuse_nothing_and_say_why(
        tmp_path: Path) -> None:
    from mlgo.search_store import CONFIG

    earlier = tmp_path / "tune-v1"
    (earlier / "search").mkdir(parents=True)
    (earlier / "search" / CONFIG).write_text(json.dumps({"passes": 1}))
    (earlier / "fingerprints.json").write_text(json.dumps({"p/lib/a.c": "ab" * 32}))
    module, root = _module(tmp_path, "proj-1.0", CODE)
    got = learn.reuse_results(earlier, {module.name: learn.fingerprint(module, root)},
                              tmp_path / "search", {"passes": 1}, {module.name: "x"})
    assert got["reused"] == {}
    assert "fingerprints.json: fingerprints made by an older mlgo" in got["why_none"]
