"""File helpers every layer uses: writes that readers never see half done, and file hashes."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlgo_base.errors import MlgoError, writing


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (bitcode dedup, cache keys,
    checkpoint verification)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_dir(target: Path | str, fill: Callable[[Path], None]) -> Path:
    """Make a directory with `fill(tmp)` beside `target`, then put it in `target`'s place:
    readers find the old directory or the new one, whole (policies, SavedModels)."""
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            fill(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            _swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


_RENAME_EXCHANGE = 2  # linux/fs.h


@functools.cache
def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    C library or the filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_into_place(new: Path, target: Path) -> None:
    """Replace `target` by `new`. rename() of a directory over a missing name is atomic; over
    an existing one it is not allowed, so the two are exchanged in one step. Where exchange is
    unsupported, the old one is moved aside first (`target` is missing for an instant)."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the old directory
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, old / "old")
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def directory_lock(path: Path | str, busy: str, advice: str) -> Iterator[None]:
    """Hold an exclusive flock on the file `path` (e.g. OUT/.lock) for the block: two processes
    writing one output directory would interleave their files. The kernel drops a flock when
    its holder dies, even by kill -9, so a crashed run never leaves the directory locked.
    A second holder gets MlgoError(f"{busy} (pid N); {advice}"), N being the holder's pid."""
    path = Path(path)
    with writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MlgoError(f"{busy} (pid {holder}); {advice}") from None
        with writing(path):  # the pid is only for that message
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
