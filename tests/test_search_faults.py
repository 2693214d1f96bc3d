"""`mlgo search` and `mlgo train --algorithm imitation --search` on directories a user broke, swapped
or shared: each fault ends in one line naming the file, or in a warning and a new search of the
module concerned, never in a traceback or a result mixed from two inputs. Real clang-19 on tiny
-Oz modules; searches capped at 3 compiles per module (anchor, one flip, the final replay)."""

import fcntl
import json
import logging
import os
import shutil
import subprocess

import pytest
from corpus_fixtures import llvm_tool
from test_search import EXTERNAL_CALLEE, NOTHING_TO_GAIN, make_oz_corpus

from mlgo.cli.main import main
from mlgo.search import SearchConfig, result_path, run_search_task, search_corpus
from mlgo.workers.pool import LocalPool
from mlgo_base.errors import MlgoError

# Same names as the corpus's t/external.c, another body: 3 call sites instead of 8.
FEWER_CALLS = "extern int g[64]; extern void use(int);\n" \
    "int pick(int i) { return g[i & 63] * 3 + i; }\n" + \
    "".join(f"void f{j}(int i) {{ use(pick(i + {j})); }}\n" for j in range(3))
CONFIG = SearchConfig(passes=1, budget=3)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    return make_oz_corpus(tmp_path / "c", {"external.c": EXTERNAL_CALLEE,
                                           "nothing.c": NOTHING_TO_GAIN})


def _search(corpus, out, **kw):
    with LocalPool(1, task_fn=run_search_task) as pool:
        return search_corpus(corpus.modules, out, CONFIG, pool, progress=False, **kw)


def _replace_module(corpus, name, source):
    """Compile `source` over the corpus's module `name` (its bitcode changes, its name not)."""
    src = corpus.root.parent / "src" / "replaced.c"
    src.write_text(source)
    subprocess.run([llvm_tool("clang"), "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(src), "-o", str(corpus.root / (name + ".bc"))], check=True)


def _trace_modules(out):
    from mlgo.traces import read_trace

    return sorted((t.module, len(t.actions)) for t in read_trace(out))


def test_a_module_whose_code_changed_is_searched_again(corpus, tmp_path, caplog):
    out = tmp_path / "S"
    first = _search(corpus, out)
    assert first.searched == 2 and _trace_modules(out) == [("t/external.c", 8), ("t/nothing.c", 8)]
    _replace_module(corpus, "t/external.c", FEWER_CALLS)
    with caplog.at_level(logging.WARNING):
        again = _search(corpus, out)
    # Only the changed module is searched again; the trace and totals are the new module's.
    assert (again.searched, again.skipped) == (1, 1)
    assert _trace_modules(out) == [("t/external.c", 3), ("t/nothing.c", 8)]
    assert again.default_total < first.default_total
    assert str(result_path(out, "t/external.c")) in caplog.text


def test_other_gin_bindings_on_the_same_output_are_refused(corpus, tmp_path, capsys):
    out = tmp_path / "S"
    argv = ["search", "--problem", "inlining", "--corpus", str(corpus.root), "-o", str(out),
            "--workers", "1", "--passes", "1", "--budget", "3"]
    assert main(argv) == 0
    capsys.readouterr()
    rc = main([*argv, "--gin_bindings",
               "inlining.InliningForSize.extra_flags = ('-fno-jump-tables',)"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"mlgo: error: {out / 'search.json'}: ") and "extra_flags" in err


def test_a_second_search_on_the_same_output_is_refused_with_the_holders_pid(corpus, tmp_path):
    out = tmp_path / "S"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running search holds it
        os.write(fd, b"4242\n")
        with pytest.raises(MlgoError, match=r"another search is using this directory \(pid 4242\)"):
            _search(corpus, out)
        assert not (out / "modules").exists()
    finally:
        os.close(fd)
    assert _search(corpus, out).searched == 2  # released: the next search runs


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_an_unreadable_result_file_is_named_and_searched_again(corpus, tmp_path, caplog, damage):
    out = tmp_path / "S"
    _search(corpus, out)
    path = result_path(out, "t/nothing.c")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING):
        again = _search(corpus, out)
    assert (again.searched, again.skipped) == (1, 1)
    assert f"{path}: unreadable search result" in caplog.text
    assert _trace_modules(out) == [("t/external.c", 8), ("t/nothing.c", 8)]


@pytest.mark.parametrize("text", ["", "[1, 2]", "{not json"])
def test_a_broken_search_json_is_one_line_naming_it(corpus, tmp_path, capsys, text):
    out = tmp_path / "S"
    out.mkdir()
    (out / "search.json").write_text(text)
    rc = main(["search", "--problem", "inlining", "--corpus", str(corpus.root), "-o", str(out),
               "--workers", "1", "--budget", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"mlgo: error: {out / 'search.json'}: ")


def test_a_result_copied_under_another_modules_name_is_not_used(corpus, tmp_path, caplog):
    out = tmp_path / "S"
    _search(corpus, out)
    shutil.copy(result_path(out, "t/external.c"), result_path(out, "t/nothing.c"))
    with caplog.at_level(logging.WARNING):
        again = _search(corpus, out)
    assert (again.searched, again.skipped) == (1, 1)
    assert "holds the search result of t/external.c, not of t/nothing.c" in caplog.text
    traces = [m for m, _ in _trace_modules(out)]
    assert traces == ["t/external.c", "t/nothing.c"]  # each module once


# -- training from a search ----------------------------------------------------------------------
def _imitation(corpus_root, search, out):
    """One imitation round from `search` (no search of its own); its log line, or None."""
    rc = main(["train", "--problem", "inlining", "--algorithm", "imitation", "--corpus",
               str(corpus_root), "-o", str(out), "--search", str(search), "--workers", "1",
               "--gin_bindings", "imitation.ImitationConfig.rounds = 1",
               "--gin_bindings", "imitation.ImitationConfig.epochs = 1"])
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1]) if rc == 0 else rc


def _search_cli(corpus_root, out):
    assert main(["search", "--problem", "inlining", "--corpus", str(corpus_root), "-o", str(out),
                 "--workers", "1", "--passes", "1", "--budget", "3"]) == 0


def _split(out, train):
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"train": train, "validation": ["t/held.c"]}))


HELD_OUT = "extern int h[32]; extern void put(long);\n" \
    "int choose(int i) { return h[i & 31] * 5 - i; }\n" + \
    "".join(f"void g{j}(int i) {{ put(choose(i - {j})); }}\n" for j in range(4))


@pytest.fixture
def run_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    return make_oz_corpus(tmp_path / "c", {"external.c": EXTERNAL_CALLEE,
                                           "nothing.c": NOTHING_TO_GAIN, "held.c": HELD_OUT})


def test_imitation_from_a_search_of_a_changed_module_writes_nothing(run_corpus, tmp_path, capsys):
    search, out = tmp_path / "S", tmp_path / "run"
    _search_cli(run_corpus.root, search)
    old_trace = {n: (search / n).read_bytes() for n in ("trace.tfrecord", "trace.json")}
    _replace_module(run_corpus, "t/external.c", FEWER_CALLS)  # 8 call sites -> 3
    capsys.readouterr()
    assert _imitation(run_corpus.root, search, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(result_path(search, "t/external.c")) in err
    assert not out.exists()  # nothing a corrected command could reuse
    # The command the message suggests brings the search up to date; training then learns
    # from the changed module's 3 decisions (with nothing.c's 8), not the stale 8, even from a
    # search killed before it rewrote its trace (the result files are what is checked).
    _search_cli(run_corpus.root, search)
    for name, data in old_trace.items():
        (search / name).write_bytes(data)
    _split(out, ["t/external.c", "t/nothing.c"])
    log = _imitation(run_corpus.root, search, out)
    assert log["imitation/modules"] == 2 and log["imitation/decisions"] == 3 + 8


def test_imitation_from_another_corpus_search_writes_nothing_and_a_left_vocab_is_rebuilt(
        run_corpus, tmp_path, capsys):
    from mlgo.traces import build_vocab

    other = make_oz_corpus(tmp_path / "d", {"other.c": FEWER_CALLS})
    wrong, right, out = tmp_path / "W", tmp_path / "S", tmp_path / "run"
    _search_cli(other.root, wrong)
    capsys.readouterr()
    assert _imitation(run_corpus.root, wrong, out) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mlgo: error: {wrong}: holds no search result for any module of this "
                   "corpus")
    assert not out.exists()
    # A vocab such a command left before (from the wrong search's trace) is not reused.
    _search_cli(run_corpus.root, right)
    _split(out, ["t/external.c", "t/nothing.c"])
    build_vocab(wrong, out / "vocab")
    build_vocab(right, tmp_path / "want")
    buckets = {p.name: p.read_text() for p in (tmp_path / "want").iterdir()}
    assert buckets != {p.name: p.read_text() for p in (out / "vocab").iterdir()}
    assert _imitation(run_corpus.root, right, out)["imitation/modules"] == 2
    assert {p.name: p.read_text() for p in (out / "vocab").iterdir()
            if p.name in buckets} == buckets
