"""The interactive runner against fake compilers: every fault ends in a clear error, never a hang."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo_base.errors import CompileError

FAKE = Path(__file__).parent / "fakes" / "fake_clang.py"


def _run(tmp_path, mode, policy=lambda obs: 1, timeout=20.0, open_timeout=10.0, **env):
    os.environ["FAKE_MODE"] = mode
    for k, v in env.items():
        os.environ[k] = str(v)
    workdir = make_workdir()
    base = workdir / "channel"
    argv = [sys.executable, str(FAKE), "-c", "x.bc", "-o", str(tmp_path / "out.o"),
            "-mllvm", f"-inliner-interactive-channel-base={base}"]
    seen = []
    try:
        with InteractiveCompile(argv, "mod.c", workdir, channel_base=base, timeout=timeout,
                                open_timeout=open_timeout) as c:
            while (obs := c.next_observation()) is not None:
                seen.append(obs)
                c.answer(policy(obs.features))
            c.finish()
            return seen, c
    finally:
        remove_workdir(workdir)
        for k in ["FAKE_MODE", *env]:
            os.environ.pop(k, None)


def test_answers_reach_the_compiler(tmp_path):
    answers = tmp_path / "answers.json"
    seen, c = _run(tmp_path, "ok", policy=lambda o: int(o["cost_estimate"][0] < o["threshold"][0]),
                   FAKE_DECISIONS=4, FAKE_ANSWERS=answers)
    assert [o.index for o in seen] == [0, 1, 2, 3]
    assert json.loads(answers.read_text()) == [1, 1, 0, 0]
    assert c.contexts == ["f", "g"]
    assert seen[3].features["weights"].shape == (2, 2)
    assert seen[3].features["weights"][1, 1] == 3.0


@pytest.mark.parametrize("mode,match", [
    ("crash", "signal SIGSEGV"),
    ("crash_before_open", "signal SIGSEGV"),
    ("exit_before_open", "exited with status 1"),
    ("garbage", "not JSON"),
    ("truncated", "truncated"),
    ("fail_after", "exited with status 1"),
])
def test_faults_give_errors_naming_the_module(tmp_path, mode, match):
    t0 = time.monotonic()
    with pytest.raises(CompileError, match=match) as e:
        _run(tmp_path, mode)
    assert "mod.c" in str(e.value)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("mode", ["hang_before_open", "hang_after_header"])
def test_hangs_are_cut_by_the_time_limit(tmp_path, mode):
    t0 = time.monotonic()
    with pytest.raises(CompileError, match="timed out|did not open"):
        _run(tmp_path, mode, timeout=2.0, open_timeout=1.5)
    assert time.monotonic() - t0 < 8


def test_no_processes_or_fifos_left_behind(tmp_path):
    with pytest.raises(CompileError):
        _run(tmp_path, "hang_after_header", timeout=1.5)
    out = subprocess.run(["pgrep", "-f", str(FAKE)], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_clean_exit_without_channel_means_no_decisions(tmp_path):
    seen, c = _run(tmp_path, "clean_no_channel", open_timeout=5)
    assert seen == [] and c.no_channel


def test_compiler_dies_with_the_process_that_started_it(tmp_path):
    """A worker killed mid-compile must not leave an orphaned compiler behind."""
    script = f"""
import os, sys
os.environ["FAKE_MODE"] = "hang_after_header"
from pathlib import Path
from mlgo.compiler.interactive import InteractiveCompile
wd = Path({str(tmp_path)!r})
base = wd / "channel"
argv = [sys.executable, {str(FAKE)!r}, "-c", "x.bc", "-o", str(wd / "o.o"),
        "-mllvm", f"-inliner-interactive-channel-base={{base}}"]
c = InteractiveCompile(argv, "m.c", wd, channel_base=base, timeout=600)
c.header
print(c.proc.pid, flush=True)
import time; time.sleep(600)
"""
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    compiler = int(host.stdout.readline())
    os.kill(host.pid, 9)
    host.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(compiler):
        time.sleep(0.1)
    assert not _running(compiler)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_compiler_that_reads_no_advice_cannot_block_the_host(tmp_path):
    """Answers pile up in the advice FIFO (64 KiB = 8192 answers); once it is full, the host's
    write must wait with a deadline, not block forever."""
    t0 = time.monotonic()
    with pytest.raises(CompileError, match="timed out|no advice") as e:
        _run(tmp_path, "no_read", timeout=3.0, FAKE_DECISIONS=9000)
    assert "mod.c" in str(e.value)
    assert time.monotonic() - t0 < 15


def test_exit_before_open_is_noticed_at_once(tmp_path):
    """The wait for the channel wakes on the compiler's exit (pidfd), not on a timer."""
    t0 = time.monotonic()
    with pytest.raises(CompileError, match="exited with status 1"):
        _run(tmp_path, "exit_before_open", open_timeout=30.0, timeout=60.0)
    assert time.monotonic() - t0 < 5
