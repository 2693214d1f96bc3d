"""Faults around a run: full or read-only disks, torn files, two trainers on one directory,
work directories left behind by killed runs, and reading a policy directory while it is
replaced. Each ends in one line naming the file, with the run's state intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_fixtures import REPO, llvm_tool, new_regalloc_policy, run_mlgo

from mlgo.cli.main import main

pytestmark = pytest.mark.usefixtures("isolated_cache")


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
    res = run_mlgo("corpus", "extract", "--sources", str(src), "-o", str(d / "corpus"), "-j", "1",
                "--no-progress")
    _one_line_error(res, kind, d / "corpus")


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_eval_and_trace_to_a_bad_disk_are_one_line(corpus, mount, kind):
    d = _disk(mount, kind)
    common = ["--problem", "inlining", "--corpus", str(corpus), "--max-modules", "2",
              "--workers", "1"]
    res = run_mlgo("eval", *common, "--policy", "never", "--json", str(d / "e.json"))
    _one_line_error(res, kind, d / "e.json")
    res = run_mlgo("trace", *common, "-o", str(d / "trace"))
    _one_line_error(res, kind, d / "trace")


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_export_and_train_to_a_bad_disk_are_one_line(corpus, tmp_path, mount, kind):
    warm = new_regalloc_policy(tmp_path / "warm")
    d = _disk(mount, kind)
    res = run_mlgo("export", "--policy", str(warm), "-o", str(d / "out"), "--no-aot")
    _one_line_error(res, kind, d / "out")
    res = run_mlgo("train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
                "-o", str(d / "run"), "--warmstart", str(warm), "--workers", "1",
                "--gin_bindings", "es.ESConfig.iterations = 1")
    _one_line_error(res, kind, d / "run")


def test_disk_full_mid_training_keeps_the_run_resumable(corpus, tmp_path, mount):
    """The disk fills up while iteration 1 is saved; after space is freed the same command
    resumes from iteration 0's checkpoint, and log.jsonl has no torn line."""
    warm = new_regalloc_policy(tmp_path / "warm")
    d = mount("disk", "size=64m")
    cmd = ["train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
           "-o", str(d / "run"), "--warmstart", str(warm), "--workers", "1",
           "--validation-fraction", "0", "--gin_bindings", "es.ESConfig.iterations = 3",
           "--gin_bindings", "es.ESConfig.directions = 1",
           "--gin_bindings", "es.ESConfig.modules_per_iteration = 2"]
    # Stop after iteration 0 by failing iteration 1's save: run 1 iteration, then fill.
    assert main([*cmd[:-6], "--gin_bindings", "es.ESConfig.iterations = 1", *cmd[-4:]]) == 0
    _fill(d)
    res = run_mlgo(*cmd)
    _one_line_error(res, "full", d / "run")
    (d / "filler").unlink()
    res = run_mlgo(*cmd)
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
    warm = new_regalloc_policy(tmp_path / "warm")
    # A clang that takes 3 s per run, so that the kill lands in the middle of a compile.
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\nsleep 3\nexec {llvm_tool('clang')} \"$@\"\n")
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


def test_reading_a_policy_while_it_is_replaced(mount):
    import time

    import numpy as np

    from mlgo.policies.policy_dir import load_policy

    # On a tmpfs, fsync costs nothing: many replacements a second, so readers meet them.
    target = new_regalloc_policy(mount("fast", "size=64m") / "policy")
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
