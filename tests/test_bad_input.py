"""Bad input a user can give: absurd numbers, path traversal and unsafe module names, runs
that train nothing, non-finite weights, malformed compile-database entries. Each is refused or
skipped with one line naming what is wrong; faults around a run are in test_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_fixtures import new_regalloc_policy, run_mlgo

from mlgo.cli.main import main
from mlgo_base import toolchain

pytestmark = pytest.mark.usefixtures("isolated_cache")


# -- 1. numbers with no meaning are refused up front ----------------------------------------

def test_negative_workers_is_refused_not_a_hang(corpus):
    res = run_mlgo("eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
                "cost-threshold", "--workers", "-1", timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].endswith(
        "argument --workers: must be between 1 and 1024, not -1")


def test_local_pool_refuses_no_workers():
    from mlgo.workers.pool import LocalPool
    from mlgo_base.errors import MlgoError

    with pytest.raises(MlgoError, match="at least 1"):
        LocalPool(-1)


@pytest.mark.parametrize("flag,value,message", [
    ("--workers", "0", "must be between 1 and 1024, not 0"),
    ("--workers", "100000", "must be between 1 and 1024"),
    ("--timeout", "0", "must be in (0, 86400], not 0.0"),
    ("--timeout", "-5", "must be in (0, 86400]"),
    ("--timeout", "inf", "must be a finite number, not inf"),
    ("--timeout", "nan", "must be a finite number"),
    ("--max-modules", "-1", "must be at least 0, not -1"),
])
def test_absurd_common_flags_are_one_line_errors(corpus, capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
              "cost-threshold", flag, value])
    assert e.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["corpus", "extract", "--sources", "{src}", "-o", "{out}", "-j", "0"],
     "argument -j/--jobs: must be"),
    (["corpus", "check", "{corpus}", "--timeout", "inf"], "argument --timeout: must be a finite"),
    (["train", "--problem", "inlining", "--algorithm", "es", "--corpus", "{corpus}", "-o", "{out}",
      "--warmstart", "{out}/none", "--validation-fraction", "1.5"],
     "argument --validation-fraction: must be in [0, 1)"),
    (["train", "--problem", "inlining", "--algorithm", "es", "--corpus", "{corpus}", "-o", "{out}",
      "--warmstart", "{out}/none", "--seed", "-1"], "argument --seed: must be at least 0"),
])
def test_absurd_command_flags_are_one_line_errors(corpus, tmp_path, capsys, argv, message):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.c").write_text("int f(void) { return 1; }\n")
    argv = [a.format(src=tmp_path / "src", out=tmp_path / "out", corpus=corpus) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("binding,message", [
    ("es.ESConfig.iterations = -3", "es.ESConfig.iterations must be at least 1, not -3"),
    ("es.ESConfig.sigma = 0.0", "es.ESConfig.sigma must be greater than 0, not 0.0"),
    ("es.ESConfig.validate_every = 0", "es.ESConfig.validate_every must be at least 1"),
    ("es.ESConfig.normalization = 'ranks'", "es.ESConfig.normalization must be one of rank"),
    ("ppo.PPOConfig.minibatch_size = 0", "ppo.PPOConfig.minibatch_size must be at least 1"),
    ("ppo.PPOConfig.clip = 0.0", "ppo.PPOConfig.clip must be in (0, 1)"),
    ("bc.BCConfig.epochs = 0", "bc.BCConfig.epochs must be at least 1"),
    ("bc.BCConfig.learning_rate = 1e999", "must be a finite number"),
    ("inlining.InliningNetworkConfig.hidden_sizes = (64, -1)", "every width must be between"),
])
def test_absurd_gin_values_are_refused_before_any_work(corpus, tmp_path, capsys, binding,
                                                       message):
    out = tmp_path / "run"
    # (the missing warm start would stop it soon after, if the values got through)
    rc = main(["train", "--problem", "inlining", "--algorithm", "es", "--corpus", str(corpus),
               "-o", str(out), "--warmstart", str(tmp_path / "none"), "--gin_bindings", binding])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before the run directory was made


# -- 3. module names cannot lead outside the corpus -----------------------------------------

def _fake_module(root: Path, name: str, payload: bytes = b"BC\xc0\xde attacker") -> None:
    (root / (name + ".bc")).parent.mkdir(parents=True, exist_ok=True)
    (root / (name + ".bc")).write_bytes(payload)
    (root / (name + ".cmd")).write_bytes(b"-c\0-O2")


def test_traversing_module_name_is_refused_and_merge_leaves_the_victim_alone(tmp_path, capsys):
    base = tmp_path / "w"
    c = base / "c"
    (c / "q").mkdir(parents=True)
    name = "q/../../../victim/x"
    _fake_module(c, name)  # the attacker's files: tmp_path/victim/x.*
    (c / "corpus_description.json").write_text(json.dumps({"modules": [name]}))
    victim = base / "victim" / "x.bc"  # where m1/m2 + the name leads
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"precious")
    rc = main(["corpus", "merge", str(c), "-o", str(base / "m1" / "m2")])
    err = capsys.readouterr().err
    assert rc == 2 and f"module name {name!r} has an empty, '.' or '..' path component" in err
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("name,why", [
    ("/etc/passwd", "is an absolute path"),
    ("a//b", "path component"),
    ("./a", "path component"),
    ("a/..", "path component"),
    ("a\0b", "NUL byte"),
])
def test_unsafe_module_names_are_refused_at_load(tmp_path, name, why):
    from corpus_tools.corpus import Corpus
    from mlgo_base.errors import CorpusError

    (tmp_path / "corpus_description.json").write_text(json.dumps({"modules": ["ok/a", name]}))
    with pytest.raises(CorpusError, match=why):
        Corpus.load(tmp_path, check_files=False)


def test_eval_does_not_read_outside_the_corpus(corpus, tmp_path, capsys):
    outside = tmp_path / "outside"
    bc = next(corpus.glob("small/*.bc"))
    _fake_module(outside, "m", bc.read_bytes())
    c = tmp_path / "c"
    c.mkdir()
    (c / "corpus_description.json").write_text(json.dumps({"modules": [str(outside / "m")]}))
    rc = main(["eval", "--problem", "inlining", "--corpus", str(c), "--policy", "never",
               "--workers", "1"])
    assert rc == 2 and "is an absolute path" in capsys.readouterr().err


def test_merge_refuses_a_symlink_out_of_its_output(tmp_path, capsys):
    c = tmp_path / "c"
    _fake_module(c, "p/x")
    (c / "corpus_description.json").write_text(json.dumps({"modules": ["p/x"]}))
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "p").symlink_to(elsewhere)
    rc = main(["corpus", "merge", str(c), "-o", str(out)])
    assert rc == 2 and "leads outside" in capsys.readouterr().err
    assert not list(elsewhere.iterdir())


def test_duplicate_module_names_count_once(tmp_path, caplog):
    from corpus_tools.corpus import Corpus

    _fake_module(tmp_path, "p/x")
    _fake_module(tmp_path, "p/y")
    (tmp_path / "corpus_description.json").write_text(
        json.dumps({"modules": ["p/x", "p/y", "p/x"]}))
    corpus = Corpus.load(tmp_path)
    assert [m.name for m in corpus.modules] == ["p/x", "p/y"]
    assert "listed more than once, used once: p/x" in caplog.text


# -- 5. no success claimed for nothing; non-finite weights go nowhere -----------------------

def _broken_corpus(root: Path, n: int = 3) -> Path:
    names = [f"p/broken{i}.c" for i in range(n)]
    for name in names:
        _fake_module(root, name, b"BC\xc0\xde" + b"\0" * 64)
    # The chosen LLVM's: the compiler, not the version check, must meet the broken bitcode.
    (root / "corpus_description.json").write_text(json.dumps(
        {"modules": names, "llvm_version": toolchain.llvm_major()}))
    return root


def test_a_run_in_which_every_module_fails_exits_non_zero(tmp_path, capsys):
    corpus = _broken_corpus(tmp_path / "c")
    warm = new_regalloc_policy(tmp_path / "warm")
    out = tmp_path / "run"
    rc = main(["train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
               "-o", str(out), "--warmstart", str(warm), "--workers", "1",
               "--validation-fraction", "0", "--gin_bindings", "es.ESConfig.iterations = 2",
               "--gin_bindings", "es.ESConfig.directions = 1"])
    cap = capsys.readouterr()
    assert rc == 2, cap.out
    assert "nothing was trained: every module failed in all 2 iteration(s)" in cap.err
    assert "no policy was written" in cap.err
    assert "done:" not in cap.out and not (out / "policy").exists()
    assert not (out / "checkpoints" / "LATEST").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    import numpy as np

    from mlgo.policies.policy_dir import PolicyFormatError, load_policy

    params = load_policy(new_regalloc_policy(tmp_path / "good"))[1]
    params[3] = np.nan
    with pytest.raises(PolicyFormatError, match="1 of .* parameters are NaN or infinite"):
        new_regalloc_policy(tmp_path / "nan", params)
    assert not (tmp_path / "nan").exists()


def _poison(policy: Path, value: float) -> None:
    """Replace one weight by `value` the way a diverged trainer once could: a consistent
    policy directory (digest and all) holding a non-finite number."""
    import hashlib
    import io

    import numpy as np

    params = np.load(policy / "params.npy")
    params[0] = value
    buf = io.BytesIO()
    np.save(buf, params)
    (policy / "params.npy").write_bytes(buf.getvalue())
    doc = json.loads((policy / "policy.json").read_text())
    doc["params_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (policy / "policy.json").write_text(json.dumps(doc))


def test_non_finite_weights_are_never_served_or_exported(tmp_path, capsys):
    from mlgo.policies.loading import numpy_policy
    from mlgo.policies.policy_dir import PolicyFormatError

    policy = new_regalloc_policy(tmp_path / "p")
    _poison(policy, float("inf"))
    with pytest.raises(PolicyFormatError, match="NaN or infinite"):
        numpy_policy("regalloc", policy)
    rc = main(["export", "--policy", str(policy), "-o", str(tmp_path / "out"), "--no-aot"])
    err = capsys.readouterr().err
    assert rc == 2 and "parameters are NaN or infinite" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "saved_model").exists()


def test_a_diverged_iteration_writes_nothing(tmp_path):
    import numpy as np

    from corpus_tools.corpus import Corpus, Module
    from mlgo.policies.policy_dir import load_policy
    from mlgo.problems import get_problem
    from mlgo.training.run import TrainingRun
    from mlgo.workers.pool import LocalPool
    from mlgo_base.errors import MlgoError

    net, params, _ = load_policy(new_regalloc_policy(tmp_path / "warm"))
    corpus = Corpus(tmp_path, [Module("p/a", tmp_path, "p"), Module("p/b", tmp_path, "p")])
    run = TrainingRun(problem=get_problem("regalloc"), corpus=corpus, output=tmp_path / "run",
                      pool=LocalPool(1), network=net, params=params, algorithm="es",
                      validation_fraction=0.0)
    bad = params.copy()
    bad[-1] = np.nan
    with pytest.raises(MlgoError, match="iteration 0 produced 1 non-finite parameter"):
        run.end_iteration(0, bad, {}, {}, None)
    run.close()
    assert not (tmp_path / "run" / "policy").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_one_malformed_compile_db_entry_does_not_stop_extraction(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "b.c").write_text("int b(void) { return 2; }\n")
    db = [{"directory": str(src), "arguments": ["cc", "-O2", "-c", "a.c"], "file": "a.c"},
          {"directory": str(src), "arguments": ["cc", "-c", "nofile.c"]},
          {"directory": str(src), "command": "cc -c 'unterminated", "file": "x.c"},
          {"directory": str(src), "arguments": ["cc", "-O2", "-c", "b.c"], "file": "b.c"}]
    (src / "compile_commands.json").write_text(json.dumps(db))
    rc = main(["corpus", "extract", "--compile-db", str(src / "compile_commands.json"),
               "--project", "p", "-o", str(tmp_path / "corpus"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "2 extracted" in out and "2 failed" in out
    assert "entry 1: lacks 'file' or 'directory'" in out
    assert "entry 2: cannot split 'command'" in out
    from corpus_tools.corpus import Corpus

    assert sorted(m.name for m in Corpus.load(tmp_path / "corpus").modules) == ["p/a.c", "p/b.c"]


def test_per_module_failures_keep_the_compilers_message(tmp_path, capsys):
    corpus = _broken_corpus(tmp_path / "c", 2)
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
                 "never", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "  p/broken0.c: compiler exited with status 1: error: Malformed block" in err
