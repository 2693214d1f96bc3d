"""mlgo_base.process: the one subprocess runner (time limit, process-group kill, one error)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from mlgo_base.process import ProcessError, run, tail_of


def test_returns_output_and_status():
    r = run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
            timeout=30)
    assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (0, "out", "err")


def test_failure_names_what_command_status_and_stderr_tail():
    with pytest.raises(ProcessError) as e:
        run([sys.executable, "-c", "import sys; sys.stderr.write('x' * 5000 + '\\nboom'); "
             "sys.exit(3)"], what="building foo", timeout=30)
    msg = str(e.value)
    assert msg.startswith("building foo: exited with status 3: ")
    assert msg.endswith("boom") and len(msg) < 3500
    assert e.value.returncode == 3


def test_check_false_returns_the_failure():
    assert run([sys.executable, "-c", "raise SystemExit(4)"], timeout=30,
               check=False).returncode == 4


def test_missing_program_is_one_error():
    with pytest.raises(ProcessError, match="no-such-program-xyz not found"):
        run(["no-such-program-xyz"], timeout=5)


def test_timeout_kills_the_whole_group(tmp_path):
    # The child starts a grandchild that would outlive a kill of the child alone.
    pidfile = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(ProcessError, match="timed out after 1 s") as e:
        run([sys.executable, "-c", script], timeout=1)
    assert e.value.timed_out and time.monotonic() - t0 < 20
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the grandchild survived the timeout")


def test_log_file_tail_is_quoted(tmp_path):
    log = tmp_path / "build.log"
    with open(log, "w") as f, pytest.raises(ProcessError, match="the real error"):
        run([sys.executable, "-c", "import sys; print('the real error'); sys.exit(1)"],
            timeout=30, stdout=f, stderr=f)


def test_tail_starts_at_a_line():
    text = "\n".join(f"line {i}" for i in range(1000))
    assert tail_of(text, 100).startswith("line ")
