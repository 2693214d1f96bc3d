"""Subsets of a corpus made with mlgo commands alone (what the shipped train.sh scripts need):
`mlgo corpus merge --modules` keeps named modules, `mlgo train --validation-projects` validates
on named projects. The corpora here are fake (bitcode is never compiled by these steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus_tools.corpus import Corpus, split_named_projects, write_description
from corpus_tools.merge import merge_corpora
from mlgo.cli.main import main
from mlgo_base.errors import CorpusError, MlgoError

MODULES = {"lua5.4/src/lvm.c": "lua5.4", "lua5.4/src/ldo.c": "lua5.4",
           "libyaml/src/parser.c": "libyaml", "libyaml/src/scanner.c": "libyaml",
           "bzip2/bzlib.c": "bzip2", "zlib/deflate.c": "zlib"}


def _fake_corpus(root: Path) -> Path:
    for name in MODULES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / (name + ".bc")).write_bytes(b"BC\xc0\xde" + name.encode())  # distinct: no dedup
        (root / (name + ".cmd")).write_text("-c\n-O2\n")
    write_description(root, list(MODULES), dict(MODULES), opt_level="keep", llvm_version=19)
    return root


def test_merge_modules_keeps_exactly_those_and_refuses_unknown(tmp_path: Path, capsys) -> None:
    c7 = _fake_corpus(tmp_path / "c7")
    keep = ["zlib/deflate.c", "lua5.4/src/lvm.c"]
    merge_corpora([c7], tmp_path / "hot", keep_modules=keep)
    assert sorted(m.name for m in Corpus.load(tmp_path / "hot").modules) == sorted(keep)
    assert not (tmp_path / "hot" / "lua5.4/src/ldo.c.bc").exists()
    with pytest.raises(CorpusError, match="lua5.4/src/nope.c"):
        merge_corpora([c7], tmp_path / "bad", keep_modules=["lua5.4/src/nope.c", *keep])
    assert not (tmp_path / "bad").exists()  # refused before anything is written

    listing = tmp_path / "hot.txt"
    listing.write_text("# hot modules\nbzip2/bzlib.c\n\nlibyaml/src/parser.c  # validation\n")
    assert main(["corpus", "merge", str(c7), "-o", str(tmp_path / "hot2"),
                 "--modules-from", str(listing)]) == 0
    assert sorted(m.name for m in Corpus.load(tmp_path / "hot2").modules) == [
        "bzip2/bzlib.c", "libyaml/src/parser.c"]
    assert main(["corpus", "merge", str(c7), "-o", str(tmp_path / "hot3"),
                 "--modules", "zlib/deflate.c,zlib/inflate.c"]) == 2
    assert "holds module(s) zlib/inflate.c" in capsys.readouterr().err


def test_split_named_projects(tmp_path: Path) -> None:
    corpus = Corpus.load(_fake_corpus(tmp_path / "c7"))
    train, val = split_named_projects(corpus, ["libyaml"])
    assert val == ["libyaml/src/parser.c", "libyaml/src/scanner.c"]
    assert train == [n for n in MODULES if not n.startswith("libyaml/")]
    with pytest.raises(CorpusError, match="libyam\\b"):
        split_named_projects(corpus, ["libyam"])
    with pytest.raises(CorpusError, match="no module to train on"):
        split_named_projects(corpus, sorted(set(MODULES.values())))


def test_train_refuses_unknown_validation_project(tmp_path: Path, capsys) -> None:
    c7 = _fake_corpus(tmp_path / "c7")
    rc = main(["train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(c7),
               "-o", str(tmp_path / "run"), "--validation-projects", "libyaml,luaa", "--workers",
               "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no project luaa" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_existing_differing_split_is_refused(tmp_path: Path, capsys) -> None:
    from mlgo.training.run import check_split_matches, named_split

    corpus = Corpus.load(_fake_corpus(tmp_path / "c7"))
    wanted = named_split(corpus, ["libyaml"])
    path = tmp_path / "run" / "split.json"
    check_split_matches(path, dict(wanted), wanted, ["libyaml"])  # the same split resumes
    other = named_split(corpus, ["zlib"])
    with pytest.raises(MlgoError, match="--validation-projects libyaml"):
        check_split_matches(path, other, wanted, ["libyaml"])

    # Through the command: refused before anything else is written.
    path.parent.mkdir()
    path.write_text(json.dumps(other))
    rc = main(["train", "--problem", "regalloc", "--algorithm", "es", "--corpus",
               str(tmp_path / "c7"), "-o", str(path.parent), "--validation-projects", "libyaml",
               "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "split.json" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["split.json"]
