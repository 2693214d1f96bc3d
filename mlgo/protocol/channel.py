"""The host end of LLVM's interactive channel: two FIFOs, opened and read without ever blocking
forever.

The compiler opens BASE.in (advice, host -> compiler) for reading first, then BASE.out (log,
compiler -> host) for writing. A blocking open() on the host would hang if the compiler dies
before opening; a blocking read of more than one observation would deadlock against a compiler
waiting for advice. So both FIFOs are opened non-blocking and every wait is a poll() with a
deadline that also watches whether the compiler is still alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from mlgo.errors import ProtocolError

_POLL_MS = 50


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
        self._buf = bytearray()
        self._writer_seen = False
        self._eof = False
        for suffix in (".in", ".out"):
            p = self.base + suffix
            if os.path.exists(p):
                os.unlink(p)
            os.mkfifo(p, 0o600)

    @property
    def paths(self) -> tuple[str, str]:
        return self.base + ".in", self.base + ".out"

    def open(self) -> None:
        """Open both ends; raise ProtocolError if the compiler exits or never opens them."""
        in_path, out_path = self.paths
        self._rfd = os.open(out_path, os.O_RDONLY | os.O_NONBLOCK)
        deadline = time.monotonic() + self._open_timeout
        while True:
            try:
                self._wfd = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            if not self._alive():
                raise ProtocolError(f"{self.name}: compiler exited before opening the channel {in_path}")
            if time.monotonic() > deadline:
                raise ProtocolError(
                    f"{self.name}: compiler did not open the channel {in_path} within "
                    f"{self._open_timeout:.0f}s"
                )
            time.sleep(0.002)
        # Advice writes are 8 bytes into a 64 KiB pipe: blocking mode is safe and simpler.
        flags = fcntl.fcntl(self._wfd, fcntl.F_GETFL)
        fcntl.fcntl(self._wfd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)

    # -- ByteSource ---------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Append whatever bytes are available; False at end of stream."""
        assert self._rfd is not None, "channel not open"
        if self._eof:
            return False
        deadline = time.monotonic() + self._io_timeout
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN | select.POLLHUP)
        while True:
            events = poller.poll(_POLL_MS)
            if events:
                try:
                    chunk = os.read(self._rfd, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    self._writer_seen = True
                    self._buf += chunk
                    return True
                if chunk == b"":
                    # EOF: the writer closed, or has not opened yet (Linux reports HUP then too).
                    if self._writer_seen or not self._alive():
                        self._eof = True
                        return False
                    time.sleep(0.002)
            elif not self._alive():
                # One last non-blocking read: data may have raced the exit.
                try:
                    chunk = os.read(self._rfd, 1 << 16)
                except BlockingIOError:
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    return True
                self._eof = True
                return False
            if time.monotonic() > deadline:
                raise ProtocolError(
                    f"{self.name}: no data from the compiler for {self._io_timeout:.0f}s"
                )

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
        try:
            view = memoryview(data)
            while view:
                k = os.write(self._wfd, view)
                view = view[k:]
        except BrokenPipeError as e:
            raise ProtocolError(f"{self.name}: compiler closed the advice channel") from e

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._rfd = self._wfd = None
        for p in self.paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __enter__(self) -> FifoChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
