"""Running clang-19 on one module, plainly or in LLVM's interactive mode.

`InteractiveCompile` is the low-level loop: start the compiler with a channel flag, hand out
each observation, send back each piece of advice, and collect the result. It never waits
forever: opens and reads go through FifoChannel (deadlines + liveness), and the whole compile
has a wall-clock limit after which the process group is killed.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgo.protocol import Context, Header, LogReader, Observation, Outcome
from mlgo.protocol.channel import FifoChannel
from mlgo_base.errors import CompileError, MlgoError, ProtocolError
from mlgo_base.process import ProcessError, kill_group, start

DEFAULT_TIMEOUT = float(os.environ.get("MLGO_COMPILE_TIMEOUT", "300"))


# Work directories are named <prefix><owner pid>.<random>, so that one left by a process that
# was killed (kill -9, SIGTERM: no cleanup runs) can be told from one in use and removed.
_WORKDIR_NAME = re.compile(r"^mlgo-(?:probe-)?(\d+)\.")
_live_workdirs: set[Path] = set()
_swept = False


def make_workdir(prefix: str = "mlgo-") -> Path:
    global _swept
    base = os.environ.get("MLGO_TMPDIR")
    if not _swept:  # once per process: workers and trainers start often enough
        _swept = True
        sweep_stale_workdirs(base)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=base))
    _live_workdirs.add(path)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale_workdirs(base: str | Path | None = None) -> list[Path]:
    """Remove this user's work directories whose owning process is gone; returns them."""
    root = Path(base or tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _WORKDIR_NAME.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            st = p.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or _pid_alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def remove_all_workdirs() -> None:
    """Remove every work directory this process still has (it is about to exit abruptly)."""
    for p in list(_live_workdirs):
        remove_workdir(p)


@dataclass
class CompileResult:
    argv: list[str]
    returncode: int
    stderr: str
    seconds: float


def _describe_failure(rc: int) -> str:
    if rc < 0:
        try:
            return f"compiler crashed with signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"compiler killed by signal {-rc}"
    return f"compiler exited with status {rc}"


def _start(argv: list[str], name: str, stderr: Any) -> subprocess.Popen:
    """The compiler in a session of its own that dies with this process (a worker killed
    mid-compile must not leave clang orphaned, waiting on a channel nobody reads)."""
    try:
        return start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                     what=f"compiling {name}")
    except ProcessError as e:
        raise CompileError(name, f"cannot start the compiler: {e.reason}") from e


def wait_exit(proc: subprocess.Popen, timeout: float, pidfd: int | None = None) -> int:
    """Popen.wait with a timeout, but woken the moment the process exits: Popen.wait(timeout)
    polls with sleeps of up to 50 ms, which adds that much to every compile. A pidfd (Linux
    5.3+; the caller's own `pidfd` of `proc` if it has one) lets poll() wake on the exit."""
    if proc.returncode is not None:
        return proc.returncode
    fd = pidfd
    if fd is None:
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return proc.wait(timeout=timeout)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        if not p.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        if pidfd is None:
            os.close(fd)
    return proc.wait()


def run_compile(argv: Sequence[str], name: str, workdir: Path, timeout: float = DEFAULT_TIMEOUT) -> CompileResult:
    """A plain (non-interactive) compile with a time limit; CompileError on failure."""
    t0 = time.monotonic()
    err_path = workdir / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = _start(list(argv), name, err)
        try:
            rc = wait_exit(proc, timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise CompileError(name, f"compiler timed out after {timeout:.0f}s",
                               err_path.read_text(errors="replace")) from None
        except BaseException:
            kill_group(proc)
            raise
    stderr = err_path.read_text(errors="replace")
    if rc != 0:
        raise CompileError(name, _describe_failure(rc), stderr)
    return CompileResult(list(argv), rc, stderr, time.monotonic() - t0)


class InteractiveCompile:
    """One compiler process in interactive mode.

        with InteractiveCompile(argv_fn, "mod.c", workdir) as c:
            while (obs := c.next_observation()) is not None:
                c.answer(policy(obs.features))
            result = c.finish()

    `argv` already carries the channel flag naming `channel_base`; the caller owns `workdir`
    (FIFOs, stderr, outputs) and removes it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        name: str,
        workdir: Path,
        *,
        channel_base: Path,
        timeout: float = DEFAULT_TIMEOUT,
        open_timeout: float = 60.0,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.workdir = workdir
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._t0 = time.monotonic()
        self._timed_out = False
        self._err_path = workdir / "stderr.txt"
        self._err = open(self._err_path, "wb")
        self.channel = FifoChannel(channel_base, self._alive, name=name,
                                   open_timeout=open_timeout, io_timeout=timeout)
        try:
            self.proc = _start(self.argv, name, self._err)
        except CompileError:
            self.channel.close()
            self._err.close()
            raise
        self.channel.watch(self.proc.pid)
        self._reader: LogReader | None = None
        # True when the compiler finished cleanly without ever opening the channel: its
        # advisor never ran (e.g. -O0 uses neither the ML inliner nor the greedy allocator).
        self.no_channel = False
        self._pending: Observation | None = None
        self.contexts: list[str] = []
        self.outcomes: list[Outcome] = []

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        if time.monotonic() > self._deadline:
            self._timed_out = True
            kill_group(self.proc)
            return False
        return True

    def _stderr(self) -> str:
        self._err.flush()
        try:
            return self._err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, e: Exception) -> CompileError:
        """Turn a channel/protocol problem into an error that explains the compiler's state:
        its own failure if it had already died, else the protocol problem (and it is killed)."""
        rc = self.proc.poll()
        if rc is None:
            kill_group(self.proc)
        if self._timed_out:
            msg = f"compiler timed out after {self._timeout:.0f}s"
        elif rc not in (None, 0):
            msg = _describe_failure(rc)
        else:
            msg = str(e).removeprefix(f"{self.name}: ")
        return CompileError(self.name, msg, self._stderr())

    @property
    def header(self) -> Header:
        if self._reader is None and not self.no_channel:
            self._open()
        if self._reader is None:
            raise CompileError(self.name, "the compiler made no decisions, so it sent no header")
        return self._reader.header

    def _open(self) -> None:
        try:
            self.channel.open()
        except ProtocolError as e:
            if self.proc.poll() == 0 and not self._timed_out:
                self.no_channel = True
                return
            raise self._fail(e) from e
        try:
            self._reader = LogReader(self.channel)
        except ProtocolError as e:
            raise self._fail(e) from e

    def next_observation(self) -> Observation | None:
        """The next decision to make, or None when the compiler has no more."""
        if self._reader is None and not self.no_channel:
            self._open()
        if self._reader is None:
            return None
        if self._pending is not None:
            raise MlgoError(f"{self.name}: previous observation was not answered")
        try:
            while (ev := self._reader.next_event()) is not None:
                if isinstance(ev, Observation):
                    self._pending = ev
                    return ev
                if isinstance(ev, Context):
                    self.contexts.append(ev.name)
                elif isinstance(ev, Outcome):
                    self.outcomes.append(ev)
        except ProtocolError as e:
            raise self._fail(e) from e
        return None

    def answer(self, action: int) -> None:
        if self._pending is None:
            raise MlgoError(f"{self.name}: answer() without a pending observation")
        spec = self.header.advice
        if spec is None:
            raise self._fail(ProtocolError(f"{self.name}: header has no advice spec"))
        self._pending = None
        try:
            self.channel.send(spec.encode_scalar(action))
        except ProtocolError as e:
            raise self._fail(e) from e

    def finish(self) -> CompileResult:
        """Wait for the compiler; CompileError unless it exited cleanly."""
        remaining = max(0.0, self._deadline - time.monotonic())
        try:
            rc = wait_exit(self.proc, remaining, self.channel.pidfd)
        except subprocess.TimeoutExpired:
            self._timed_out = True
            kill_group(self.proc)
            rc = self.proc.returncode
        if rc != 0 or self._timed_out:
            raise self._fail(MlgoError("compile failed"))
        return CompileResult(self.argv, rc, self._stderr(), time.monotonic() - self._t0)

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc)
        self.channel.close()
        self._err.close()

    def __enter__(self) -> InteractiveCompile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_workdir(workdir: Path) -> None:
    _live_workdirs.discard(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
