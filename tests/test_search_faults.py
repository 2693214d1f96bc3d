"""`mlgo search` and `mlgo train --algorithm imitation --search` on directories a user broke, swapped
or shared: each fault ends in one line naming the file, or in a warning and a new search of the
module concerned, never in a traceback or a result mixed from two inputs. Real clang-19 on tiny
-Oz modules; searches capped at 3 compiles per module (anchor, one flip, the final replay)."""

import fcntl
import logging
import os
import shutil
import subprocess

import pytest
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
    subprocess.run(["clang-19", "-Oz", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
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
