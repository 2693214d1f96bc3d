"""Bad input and hostile conditions: absurd numbers, path traversal in module names, runs
that train nothing, full or read-only disks, torn files, two trainers on one directory, work
directories left behind, and reading a policy directory while it is replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlgo.cli.main import main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _mlgo(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlgo.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


# -- 1. numbers with no meaning are refused up front ----------------------------------------

def test_negative_workers_is_refused_not_a_hang(corpus):
    res = _mlgo("eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
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

def _regalloc_policy(path: Path, params=None) -> Path:
    from mlgo.policies.policy_dir import save_policy
    from mlgo.problems import get_problem

    problem = get_problem("regalloc")
    net = problem.build_network(problem.header(), None)
    return save_policy(path, net, net.init_params(0) if params is None else params,
                       {"algorithm": "bc"})


def _broken_corpus(root: Path, n: int = 3) -> Path:
    names = [f"p/broken{i}.c" for i in range(n)]
    for name in names:
        _fake_module(root, name, b"BC\xc0\xde" + b"\0" * 64)
    (root / "corpus_description.json").write_text(json.dumps({"modules": names}))
    return root


def test_a_run_in_which_every_module_fails_exits_non_zero(tmp_path, capsys):
    corpus = _broken_corpus(tmp_path / "c")
    warm = _regalloc_policy(tmp_path / "warm")
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

    params = load_policy(_regalloc_policy(tmp_path / "good"))[1]
    params[3] = np.nan
    with pytest.raises(PolicyFormatError, match="1 of .* parameters are NaN or infinite"):
        _regalloc_policy(tmp_path / "nan", params)
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

    policy = _regalloc_policy(tmp_path / "p")
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

    net, params, _ = load_policy(_regalloc_policy(tmp_path / "warm"))
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


# -- 6. full and read-only disks, torn files: one line, state intact ------------------------

@pytest.fixture
def mount(tmp_path):
    """mount("name", "ro"|"size=...") -> a fresh tmpfs (root only; skipped otherwise)."""
    mounted: list[Path] = []

    def make(name: str, opts: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)],
                             capture_output=True)
        if res.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _fill(d: Path) -> None:
    """Leave no free byte on the filesystem of `d`."""
    import errno

    with open(d / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def _disk(mount, kind: str) -> Path:
    if kind == "read-only":
        return mount("ro", "ro")
    d = mount("full", "size=256k")
    _fill(d)
    return d


CAUSE = {"read-only": "Read-only file system", "full": "No space left on device"}


def _one_line_error(res: subprocess.CompletedProcess, kind: str, under: Path) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mlgo: error: {under}") and last.endswith(CAUSE[kind]), res.stderr
    return last


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_extract_to_a_bad_disk_is_one_line(tmp_path, mount, kind):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int f(int x) { return x + 1; }\n")
    d = _disk(mount, kind)
    res = _mlgo("corpus", "extract", "--sources", str(src), "-o", str(d / "corpus"), "-j", "1",
                "--no-progress")
    _one_line_error(res, kind, d / "corpus")


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_eval_and_trace_to_a_bad_disk_are_one_line(corpus, mount, kind):
    d = _disk(mount, kind)
    common = ["--problem", "inlining", "--corpus", str(corpus), "--max-modules", "2",
              "--workers", "1"]
    res = _mlgo("eval", *common, "--policy", "never", "--json", str(d / "e.json"))
    _one_line_error(res, kind, d / "e.json")
    res = _mlgo("trace", *common, "-o", str(d / "trace"))
    _one_line_error(res, kind, d / "trace")


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_export_and_train_to_a_bad_disk_are_one_line(corpus, tmp_path, mount, kind):
    warm = _regalloc_policy(tmp_path / "warm")
    d = _disk(mount, kind)
    res = _mlgo("export", "--policy", str(warm), "-o", str(d / "out"), "--no-aot")
    _one_line_error(res, kind, d / "out")
    res = _mlgo("train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
                "-o", str(d / "run"), "--warmstart", str(warm), "--workers", "1",
                "--gin_bindings", "es.ESConfig.iterations = 1")
    _one_line_error(res, kind, d / "run")


def test_disk_full_mid_training_keeps_the_run_resumable(corpus, tmp_path, mount):
    """The disk fills up while iteration 1 is saved; after space is freed the same command
    resumes from iteration 0's checkpoint, and log.jsonl has no torn line."""
    warm = _regalloc_policy(tmp_path / "warm")
    d = mount("disk", "size=64m")
    cmd = ["train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
           "-o", str(d / "run"), "--warmstart", str(warm), "--workers", "1",
           "--validation-fraction", "0", "--gin_bindings", "es.ESConfig.iterations = 3",
           "--gin_bindings", "es.ESConfig.directions = 1",
           "--gin_bindings", "es.ESConfig.modules_per_iteration = 2"]
    # Stop after iteration 0 by failing iteration 1's save: run 1 iteration, then fill.
    assert main([*cmd[:-6], "--gin_bindings", "es.ESConfig.iterations = 1", *cmd[-4:]]) == 0
    _fill(d)
    res = _mlgo(*cmd)
    _one_line_error(res, "full", d / "run")
    (d / "filler").unlink()
    res = _mlgo(*cmd)
    assert res.returncode == 0, res.stderr
    log = [json.loads(x) for x in (d / "run" / "log.jsonl").read_text().splitlines()]
    assert sorted({x["iteration"] for x in log}) == [0, 1, 2]
    assert (d / "run" / "checkpoints" / "LATEST").read_text().strip() == "ckpt-000002"


def test_append_line_is_whole_or_nothing(mount):
    import errno

    from mlgo.training.run import append_line
    from mlgo_base.errors import MlgoError

    d = mount("small", "size=64k")
    log = d / "log.jsonl"
    log.write_text('{"iteration": 0}\n')
    _fill(d)
    with pytest.raises(MlgoError, match=f"{log}: cannot write: No space left on device") as e:
        append_line(log, json.dumps({"iteration": 1, "pad": "x" * 20000}))
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC
    assert log.read_text() == '{"iteration": 0}\n'


def test_torn_run_json_is_one_line(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"problem": "inl')
    rc = main(["train", "--problem", "inlining", "--algorithm", "es", "--corpus", str(corpus),
               "-o", str(out), "--warmstart", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"mlgo: error: {out / 'run.json'}: unreadable (")
    assert len(err.strip().splitlines()) == 1
    assert (out / "run.json").read_text() == '{"problem": "inl'  # left for the user to judge


# -- 7. the rest -----------------------------------------------------------------------------

def test_two_trainers_on_one_directory(corpus, tmp_path, capsys):
    from mlgo.training.run import run_lock

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):  # as a running trainer holds it
        rc = main(["train", "--problem", "regalloc", "--algorithm", "es", "--corpus",
                   str(corpus), "-o", str(out), "--warmstart", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and f"another mlgo train is running on this directory (pid {os.getpid()})" in err
    assert not (out / "run.json").exists()


def test_a_failed_start_does_not_claim_the_directory(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--problem", "regalloc", "--corpus", str(corpus), "-o", str(out)]
    assert main([*args, "--algorithm", "es", "--warmstart", str(tmp_path / "typo")]) == 2
    assert "not a policy directory" in capsys.readouterr().err
    assert not (out / "run.json").exists()
    # Another algorithm in the same directory is not refused because of the failed start.
    assert main([*args, "--algorithm", "ppo", "--warmstart", str(tmp_path / "typo2")]) == 2
    err = capsys.readouterr().err
    assert "typo2" in err and "holds a run" not in err


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


def test_all_torn_checkpoints_never_cost_the_new_good_one(tmp_path, caplog):
    import numpy as np

    from mlgo.training.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path, keep=3)
    for it in (3, 4, 5):
        ck.save(it, {"params": np.full(4, float(it))}, {"it": it})
    for it in (3, 4, 5):  # torn, e.g. by a disk that lost them
        (tmp_path / "checkpoints" / f"ckpt-{it:06d}" / "arrays.npz").write_bytes(b"torn")
    assert ck.load_latest() is None  # the run starts over...
    ck.save(0, {"params": np.zeros(4)}, {"it": 0})  # ...and saves its first iteration
    got = Checkpointer(tmp_path).load_latest()
    assert got is not None and got.iteration == 0
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("ckpt")] \
        == ["ckpt-000000"]


def _workdirs(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("mlgo-"))


def test_a_policy_failing_mid_episode_leaves_no_work_dir(corpus, tmp_path, monkeypatch):
    from corpus_tools.corpus import Corpus
    from mlgo.env import CompilerEnv, run_episode
    from mlgo.problems import get_problem

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("MLGO_TMPDIR", str(work))
    module = next(m for m in Corpus.load(corpus).modules if m.name == "small/calls.c")
    env = CompilerEnv(get_problem("inlining"), module, timeout=60)

    def policy(obs):
        raise RuntimeError("policy bug")

    with pytest.raises(RuntimeError, match="policy bug"):
        run_episode(env, policy)
    assert _workdirs(work) == []


def test_stale_work_dirs_of_dead_processes_are_swept(tmp_path):
    from mlgo.compiler.interactive import sweep_stale_workdirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f"mlgo-{dead.pid}.abc", f"mlgo-probe-{dead.pid}.def",  # owner gone
                 f"mlgo-{os.getppid()}.ghi",  # owner alive
                 f"mlgo-clang-{dead.pid}-0a1b"):  # not a work dir of this kind
        (tmp_path / name).mkdir()
    removed = sweep_stale_workdirs(tmp_path)
    assert sorted(p.name for p in removed) == [f"mlgo-{dead.pid}.abc", f"mlgo-probe-{dead.pid}.def"]
    assert _workdirs(tmp_path) == [f"mlgo-{os.getppid()}.ghi", f"mlgo-clang-{dead.pid}-0a1b"]


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_training_leaves_no_work_dirs(corpus, tmp_path, sig):
    import signal
    import time

    work = tmp_path / "work"
    work.mkdir()
    warm = _regalloc_policy(tmp_path / "warm")
    # A clang that takes 3 s per run, so that the kill lands in the middle of a compile.
    slow = tmp_path / "slow-clang"
    slow.write_text("#!/bin/sh\nsleep 3\nexec clang-19 \"$@\"\n")
    slow.chmod(0o755)
    cmd = [sys.executable, "-m", "mlgo.cli.main", "train", "--problem", "regalloc",
           "--algorithm", "es", "--corpus", str(corpus), "-o", str(tmp_path / "run"),
           "--warmstart", str(warm), "--workers", "2", "--gin_bindings",
           "es.ESConfig.iterations = 50"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLGO_TMPDIR": str(work),
           "MLGO_CLANG": str(slow)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Kill while a worker's compile is in flight (its work dir exists).
        while time.monotonic() < deadline and not any(
                n.startswith("mlgo-") and not n.startswith("mlgo-probe") for n in _workdirs(work)):
            time.sleep(0.05)
        assert _workdirs(work), "no compile started"
        os.kill(proc.pid, getattr(signal, sig))
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _workdirs(work):
            time.sleep(0.2)
        assert _workdirs(work) == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_per_module_failures_keep_the_compilers_message(tmp_path, capsys):
    corpus = _broken_corpus(tmp_path / "c", 2)
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
                 "never", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "  p/broken0.c: compiler exited with status 1: error: Malformed block" in err


def test_reading_a_policy_while_it_is_replaced(mount):
    import time

    import numpy as np

    from mlgo.policies.policy_dir import load_policy

    # On a tmpfs, fsync costs nothing: many replacements a second, so readers meet them.
    target = _regalloc_policy(mount("fast", "size=64m") / "policy")
    # Another process keeps replacing it, as a training run replaces OUT/policy.
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time
from mlgo.policies.policy_dir import load_policy, save_policy
net, params, _ = load_policy({str(target)!r})
end = time.monotonic() + 8
i = 0
while time.monotonic() < end:
    i += 1
    save_policy({str(target)!r}, net, params * (1 + i % 3))
"""], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        time.sleep(1.0)  # let it start
        reads = 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            _, params, _ = load_policy(target, problem="regalloc")
            assert np.isfinite(params).all()
            reads += 1
        assert reads > 100
    finally:
        writer.kill()
        writer.wait()
