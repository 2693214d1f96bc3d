"""Running a program: the one place that starts a subprocess and waits for it with a time limit.

Every tool mlgo runs (clang, lld, cmake, make, apt-get, the project's own tests) goes through
`run`. What it guarantees, so callers need not:
  - the child leads its own session, and on a timeout, an interrupt or any other exception the
    whole process group is killed (clang spawns cc1, make spawns compilers: killing the leader
    alone leaves them running);
  - the child dies when the process that started it dies (Linux PR_SET_PDEATHSIG), so a worker
    killed mid-compile leaves no orphan;
  - every failure is one ProcessError, naming what was being done, the command, the exit status
    or the signal, and the tail of its error output.

Callers that speak to a compiler while it runs (the interactive channel) start it with `start`
and keep it with `kill_group`; everything else calls `run`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlgo_base.errors import MlgoError

# How much of a failing program's output an error quotes: enough for a compiler's diagnostic
# and its command, not a whole build log.
TAIL_CHARS = 3000


class ProcessError(MlgoError):
    """A program could not be started, failed, was killed or ran out of time."""

    def __init__(self, what: str, argv: Sequence[str], reason: str, output: str = "",
                 returncode: int | None = None, timed_out: bool = False) -> None:
        self.what = what
        self.argv = list(argv)
        self.reason = reason
        self.output = output
        self.returncode = returncode
        self.timed_out = timed_out
        tail = tail_of(output)
        detail = f"\n{tail}" if tail else ""
        super().__init__(f"{what}: {reason}: {shlex.join(self.argv)}{detail}")


@dataclass(frozen=True)
class Completed:
    """A program that ran to the end (whatever its status, when check=False)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def tail_of(text: str, limit: int = TAIL_CHARS) -> str:
    """The last `limit` characters of a program's output, stripped, starting at a line."""
    text = (text or "").strip()
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return cut[newline + 1:] if 0 <= newline < limit // 2 else cut


def describe_status(returncode: int) -> str:
    """'exited with status 2', 'killed by signal SIGSEGV'."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent_fn():
    """A preexec_fn that makes the child die when its starter dies (Linux prctl
    PR_SET_PDEATHSIG); None where prctl is unavailable."""
    parent = os.getpid()
    prctl = _prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start(argv: Sequence[str], *, cwd: str | Path | None = None,
          env: Mapping[str, str] | None = None, stdin: Any = subprocess.DEVNULL,
          stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
          what: str = "run") -> subprocess.Popen:
    """Start `argv` in a session of its own that dies with this process. A program that
    cannot be started (missing, not executable, bad cwd) is a ProcessError."""
    try:
        return subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env),
                                stdin=stdin, stdout=stdout, stderr=stderr,
                                start_new_session=True, preexec_fn=die_with_parent_fn())
    except FileNotFoundError as e:
        missing = e.filename if e.filename not in (None, argv[0]) else argv[0]
        raise ProcessError(what, argv, f"{missing} not found") from e
    except PermissionError as e:
        raise ProcessError(what, argv, f"cannot execute {argv[0]}: {e.strerror}") from e
    except NotADirectoryError as e:
        raise ProcessError(what, argv, f"{cwd}: not a directory") from e


def kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGKILL every process of the session `proc` leads, then reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def run(argv: Sequence[str], *, what: str = "run", timeout: float,
        cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
        input: str | None = None, check: bool = True,
        stdout: IO[Any] | None = None, stderr: IO[Any] | None = None) -> Completed:
    """Run `argv` to the end within `timeout` seconds and return its status and output.

    `stdout`/`stderr` given as open files receive that stream (a build log) instead of it being
    captured; a failure then quotes the file's tail. With check (the default) a non-zero status
    is a ProcessError; a timeout always is, after the whole process group has been killed."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    proc = start(argv, cwd=cwd, env=env, what=what,
                 stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                 stdout=stdout if stdout is not None else subprocess.PIPE,
                 stderr=stderr if stderr is not None else subprocess.PIPE)
    try:
        out, err = proc.communicate(input.encode() if input is not None else None,
                                    timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = _drain(proc)
        raise ProcessError(what, argv, f"timed out after {timeout:g} s",
                           _output_for_error(err, out, stderr, stdout),
                           timed_out=True) from None
    except BaseException:
        kill_group(proc)
        raise
    result = Completed(list(argv), proc.returncode, _decode(out), _decode(err))
    if check and proc.returncode != 0:
        raise ProcessError(what, argv, describe_status(proc.returncode),
                           _output_for_error(err, out, stderr, stdout),
                           returncode=proc.returncode)
    return result


def _drain(proc: subprocess.Popen) -> tuple[bytes | None, bytes | None]:
    try:
        return proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return None, None


def _decode(data: bytes | None) -> str:
    return data.decode(errors="replace") if data else ""


def _output_for_error(err: bytes | None, out: bytes | None,
                      err_file: IO[Any] | None, out_file: IO[Any] | None) -> str:
    """The error output, else the standard output, else the tail of a log file given."""
    text = _decode(err).strip() or _decode(out).strip()
    if text:
        return text
    for f in (err_file, out_file):
        name = getattr(f, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            try:
                f.flush()
                with open(name, "rb") as log:
                    log.seek(0, os.SEEK_END)
                    log.seek(max(0, log.tell() - TAIL_CHARS))
                    return log.read().decode(errors="replace")
            except OSError:
                continue
    return ""
