"""mlgo-clang when its compiler fails, hangs, speaks another header or is killed, and when the
program itself is interrupted: one clear error, no compiler left running, no FIFOs left behind
(against the real clang-19, or a fake compiler standing in for a misbehaving one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_fixtures import SOURCES, WRAPPERS, assert_channels_clean, wrapper_command

from mlgo_base.toolchain import locate


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the compiler outlived the program that served it"


def _slow_compiler(tmp_path: Path, then: str = "exec sleep 60") -> Path:
    """A compiler that writes its pid to tmp_path/pid once started, then runs `then`."""
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid.tmp\nmv {tmp_path}/pid.tmp "
                    f"{tmp_path}/pid\n{then}\n")
    slow.chmod(0o755)
    return slow


def _started(tmp_path: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return int((tmp_path / "pid").read_text())


def test_other_header_stops_the_compiler(tmp_path: Path, channel_tmp: Path,
                                         default_program: str) -> None:
    """A compiler whose header is not the one the program was built with is stopped (it would
    wait for advice forever) and the error says where the headers part."""
    fake = tmp_path / "other-llvm"
    fake.write_text(f"""#!{sys.executable}
import sys, time
base = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-regalloc-evict-interactive"))
advice = open(base + ".in", "rb")
log = open(base + ".out", "wb")
log.write(b'{{"features":[{{"name":"mask","type":"int64_t","port":0,"shape":[1,34]}}]}}\\n')
log.flush()
advice.read(8)
time.sleep(60)
""")
    fake.chmod(0o755)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    t0 = time.monotonic()
    proc = subprocess.run([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MLGO_CLANG=str(fake)))
    assert proc.returncode == 1 and time.monotonic() - t0 < 30
    assert "feature header differs from the one mlgo-clang was built for, at byte 66" \
        in proc.stderr, proc.stderr
    assert 'compiler: ...ures":[{"name":"mask","type":"int64_t","port":0,"shape":[1,34]}]}\n' \
        in proc.stderr
    assert_channels_clean(channel_tmp)


def test_compiler_that_never_opens_the_channel_times_out(tmp_path: Path, channel_tmp: Path,
                                                         default_program: str) -> None:
    slow = _slow_compiler(tmp_path)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    t0 = time.monotonic()
    proc = subprocess.run([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MLGO_CLANG=str(slow), MLGO_HOST_OPEN_TIMEOUT="1"))
    assert proc.returncode == 1 and time.monotonic() - t0 < 20
    assert "the compiler did not open" in proc.stderr and "within 1s" in proc.stderr
    _assert_gone(int((tmp_path / "pid").read_text()))
    assert_channels_clean(channel_tmp)


def test_failed_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path,
                                       default_program: str) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undeclared; }\n")
    proc = subprocess.run([default_program, "-O2", "-c", str(bad), "-o", str(tmp_path / "bad.o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "undeclared" in proc.stderr and "mlgo-clang" not in proc.stderr
    assert_channels_clean(channel_tmp)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path,
                                            default_program: str, sig: signal.Signals) -> None:
    """A compiler that is still running when the program is interrupted gets the signal; the
    program cleans up and dies of the same signal."""
    slow = _slow_compiler(tmp_path)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    proc = subprocess.Popen([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                            env=dict(os.environ, MLGO_CLANG=str(slow)))
    compiler = _started(tmp_path, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    _assert_gone(compiler)
    assert_channels_clean(channel_tmp)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_killed_wrapper_takes_its_compiler_along(tmp_path: Path, channel_tmp: Path,
                                                 default_program: str, kind: str) -> None:
    """kill -9 of mlgo-clang mid-compile: the compiler dies too, instead of blocking
    for ever on its channel while holding the caller's stdout/stderr (a `| grep` after the
    build would hang). Through the Python entry point the killed process is the program, which
    Python became by exec."""
    slow = _slow_compiler(tmp_path)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    proc = subprocess.Popen([wrapper_command(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                            env=dict(os.environ, MLGO_CLANG=str(slow)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    compiler = _started(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=30)
    _assert_gone(compiler)
    proc.stdout.read()  # end of file: nobody holds the pipe any more
    for leftover in channel_tmp.iterdir():  # kill -9 leaves the FIFOs; nothing waits on them
        for f in leftover.iterdir():
            f.unlink()
        leftover.rmdir()


def test_host_open_timeout_is_parsed_strictly(tmp_path: Path, channel_tmp: Path,
                                              default_program: str) -> None:
    """MLGO_HOST_OPEN_TIMEOUT=1h means an hour, not 1 second; what cannot be read
    as a duration is refused in one line naming the variable."""
    slow = _slow_compiler(tmp_path, f'sleep 2\nexec {locate("clang", override=False)} "$@"')
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    cmd = [default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, MLGO_CLANG=str(slow), MLGO_HOST_OPEN_TIMEOUT="1h"))
    assert ok.returncode == 0, ok.stderr
    for bad in ("1x", "1.5h", "", "0", "-5", "99999999999h"):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, MLGO_HOST_OPEN_TIMEOUT=bad))
        assert proc.returncode == 1, bad
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"MLGO_HOST_OPEN_TIMEOUT='{bad}'" in lines[0], proc.stderr
    assert_channels_clean(channel_tmp)
