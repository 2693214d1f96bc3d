"""Building native artifacts once and caching them by the hash of everything that went in.

An artifact lives in `<cache>/<kind>/<key>/`, where the key hashes the sources (ours and the
policy's), the compiler's identity and the flags. It is built in a temporary directory beside
its final place and renamed into it, so concurrent builds (`make -j`) never see half a file:
the first rename wins and the others discard their copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mlgo.errors import MlgoError

if TYPE_CHECKING:
    from pathlib import Path

# Module-level imports stay minimal (no pathlib, subprocess, tempfile): finding an artifact
# that is already built is on the compiler wrapper's per-compile path.
SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
META = "build.json"


class BuildError(MlgoError):
    """A native artifact could not be built (the message names the source and the cause)."""


def cache_root() -> str:
    """MLGO_CACHE_DIR, else $XDG_CACHE_HOME/mlgo, else ~/.cache/mlgo (as the baseline cache)."""
    return os.environ.get("MLGO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mlgo"
    )


def packaged_source(name: str) -> str:
    """The text of a C/C++ source shipped in this package."""
    path = os.path.join(SOURCE_DIR, name)
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise BuildError(f"{path}: cannot read the packaged source ({e}); reinstall mlgo") from e


def content_key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0\1")
    return h.hexdigest()


def file_identity(path: str) -> str:
    """Path, size and mtime: changes when a compiler is upgraded, without running it."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def find_artifact(kind: str, key: str, filename: str) -> str | None:
    """The path of an already-built artifact, or None (cheap: no subprocess, no build)."""
    final = os.path.join(cache_root(), kind, key[:32])
    target = os.path.join(final, filename)
    if os.path.isfile(target) and _meta_key(final) == key:
        return target
    return None


def cached_artifact(kind: str, key: str, filename: str, build: Callable[[Path], dict]) -> Path:
    """`<cache>/<kind>/<key>/<filename>`, calling `build(tmpdir)` to create it when absent.
    `build` writes `filename` into tmpdir and returns metadata recorded beside it."""
    import shutil
    import tempfile
    from pathlib import Path

    final = Path(cache_root()) / kind / key[:32]
    target = final / filename
    if target.is_file() and _meta_key(final) == key:
        return target
    if final.exists():
        if target.is_file() and _meta_key(final) == key:
            return target  # another process renamed its build into place just now
        # A directory without a matching record is a leftover of something else: replace it.
        shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:8]}-", dir=final.parent))
    try:
        meta = build(tmp)
        if not (tmp / filename).is_file():
            raise BuildError(f"building {kind} {filename}: the build produced no {filename}")
        (tmp / META).write_text(json.dumps({"key": key, **meta}, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same build first; its result is equally good.
            if not (target.is_file() and _meta_key(final) == key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _meta_key(directory: Path | str) -> str | None:
    try:
        with open(os.path.join(directory, META)) as f:
            return json.load(f).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def run_build(argv: Sequence[str], source: Path, what: str, timeout: float = 600) -> None:
    """Run one compiler command; BuildError naming `source` and quoting the compiler on failure."""
    import subprocess

    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise BuildError(f"{source}: cannot build {what}: {argv[0]} not found") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{source}: building {what} timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        raise BuildError(
            f"{source}: building {what} failed (exit status {proc.returncode}):\n"
            f"{proc.stderr.strip()[-3000:]}\ncommand: {' '.join(argv)}"
        )
