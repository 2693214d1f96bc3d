"""The host end of LLVM's interactive channel: two FIFOs, opened and read without ever blocking
forever.

The compiler opens BASE.in (advice, host -> compiler) for reading first, then BASE.out (log,
compiler -> host) for writing. Neither open on the host side can block: BASE.out is opened
non-blocking for reading, and BASE.in for reading *and* writing, which Linux allows on a FIFO
without a peer (so the compiler's own open of BASE.in returns at once too, and nothing has to
retry an open on a timer). The compiler has opened the channel when its header arrives.

Every wait is one poll() over the log FIFO and, where Linux has pidfds, the compiler's pidfd,
with a deadline: it wakes on data and on the compiler's exit alike, with no sleep granularity
on the hot path. A blocking read of more than one observation would deadlock against a
compiler waiting for advice, so reads are non-blocking and take only what is there.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from mlgo_base.errors import ProtocolError

_POLL_MS = 50  # how often a wait re-checks liveness and the compile's deadline
_READ = 1 << 16


class FifoChannel:
    """Creates BASE.in/BASE.out, opens them once the compiler does, and serves as a ByteSource."""

    def __init__(
        self,
        base: Path | str,
        alive: Callable[[], bool],
        *,
        name: str = "compiler",
        open_timeout: float = 60.0,
        io_timeout: float = 300.0,
    ) -> None:
        self.base = str(base)
        self.name = name
        self._alive = alive
        self._open_timeout = open_timeout
        self._io_timeout = io_timeout
        self._rfd: int | None = None
        self._wfd: int | None = None
        self.pidfd: int | None = None
        self._poller = select.poll()
        self._buf = bytearray()
        self._writer_seen = False
        self._eof = False
        for suffix in (".in", ".out"):
            p = self.base + suffix
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            os.mkfifo(p, 0o600)

    @property
    def paths(self) -> tuple[str, str]:
        return self.base + ".in", self.base + ".out"

    def watch(self, pid: int) -> None:
        """Make every wait wake the moment process `pid` (the compiler) exits. Without a pidfd
        (old kernels) waits notice an exit at their next liveness check, within _POLL_MS."""
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return
        self._poller.register(self.pidfd, select.POLLIN)

    def open(self) -> None:
        """Open both ends and wait for the compiler's first bytes; raise ProtocolError if it
        exits or stays silent for open_timeout."""
        in_path, out_path = self.paths
        self._rfd = os.open(out_path, os.O_RDONLY | os.O_NONBLOCK)
        self._poller.register(self._rfd, select.POLLIN)
        # Non-blocking too: a compiler that stops reading advice fills the pipe, and a write
        # must then wait with a deadline rather than block.
        self._wfd = os.open(in_path, os.O_RDWR | os.O_NONBLOCK)
        if not self._fill(self._open_timeout, opening=True):
            raise ProtocolError(f"{self.name}: compiler exited before opening the channel {in_path}")

    # -- ByteSource ---------------------------------------------------------------------------
    def _read_available(self) -> bytes | None:
        """What the pipe holds right now: bytes, b"" when no writer is left, None if empty."""
        try:
            return os.read(self._rfd, _READ)  # type: ignore[arg-type]
        except BlockingIOError:
            return None

    def _fill(self, timeout: float | None = None, opening: bool = False) -> bool:
        """Append whatever bytes are available, waiting for some; False at end of stream."""
        assert self._rfd is not None, "channel not open"
        if self._eof:
            return False
        timeout = self._io_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            events = self._poller.poll(_POLL_MS)
            if events:
                chunk = self._read_available()
                if chunk:
                    self._writer_seen = True
                    self._buf += chunk
                    return True
                if chunk == b"":
                    # No writer: the compiler closed its end, or exited (or, on old kernels
                    # that report a hang-up before any writer came, has not opened it yet).
                    if self._writer_seen or not self._alive():
                        self._eof = True
                        return False
                    time.sleep(0.002)
                elif self.pidfd is not None and any(fd == self.pidfd for fd, _ in events):
                    # The compiler exited; whatever it wrote was in the read above.
                    self._eof = True
                    return False
            elif not self._alive():
                # One last read: data may have raced the exit.
                chunk = self._read_available()
                if chunk:
                    self._buf += chunk
                    return True
                self._eof = True
                return False
            if time.monotonic() > deadline:
                if opening:
                    raise ProtocolError(
                        f"{self.name}: compiler did not open the channel {self.paths[0]} within "
                        f"{timeout:.0f}s"
                    )
                raise ProtocolError(f"{self.name}: no data from the compiler for {timeout:.0f}s")

    def readline(self, limit: int) -> bytes:
        while True:
            i = self._buf.find(b"\n", 0, limit)
            if i >= 0:
                out = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return out
            if len(self._buf) >= limit or not self._fill():
                out = bytes(self._buf[:limit])
                del self._buf[:limit]
                return out

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                break
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    # -- advice -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        assert self._wfd is not None, "channel not open"
        view = memoryview(data)
        deadline = None
        while view:
            try:
                k = os.write(self._wfd, view)
            except BlockingIOError:
                # The pipe is full: the compiler is not reading its advice. Wait for room, as
                # long as it lives, within the I/O deadline.
                if deadline is None:
                    deadline = time.monotonic() + self._io_timeout
                if not self._alive():
                    raise ProtocolError(f"{self.name}: compiler exited without reading its advice") from None
                if time.monotonic() > deadline:
                    raise ProtocolError(
                        f"{self.name}: compiler read no advice for {self._io_timeout:.0f}s") from None
                room = select.poll()
                room.register(self._wfd, select.POLLOUT)
                room.poll(_POLL_MS)
                continue
            except BrokenPipeError as e:
                raise ProtocolError(f"{self.name}: compiler closed the advice channel") from e
            view = view[k:]

    def close(self) -> None:
        for fd in (self._rfd, self._wfd, self.pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._rfd = self._wfd = self.pidfd = None
        for p in self.paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __enter__(self) -> FifoChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
