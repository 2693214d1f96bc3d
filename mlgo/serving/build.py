"""Building native artifacts once and caching them by the hash of everything that went in.

An artifact lives in `<cache>/<kind>/<key>/`, where the key hashes the sources (ours and the
policy's), the compiler's identity and the flags. It is built in a temporary directory beside
its final place and renamed into it, so concurrent builds (`make -j`) never see half a file:
the first rename wins and the others discard their copy.

The SHA-256 of the artifact is recorded beside it at build time and checked whenever it is
looked up: a truncated or overwritten file (full disk, a crash while copying the cache) would
otherwise make clang die in dlopen or every compile fail with no message. A damaged artifact
is rebuilt. A build killed before its rename (kill -9, power loss) leaves its `.build-*`
directory behind; the next build of that kind removes those whose process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mlgo_base.errors import MlgoError
from mlgo_base.files import file_sha256

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


# Part of every key: entries recorded before artifacts carried their SHA-256 get other
# directories, so they are neither trusted unverified nor deleted under a running older mlgo.
CACHE_FORMAT = "mlgo-native-cache-2"
BUILD_DIR_PREFIX = ".build-"


def c_string(text: str | None) -> str:
    """A C string literal for `text` (octal escapes for anything but plain printable ASCII)."""
    if text is None:
        return "NULL"
    out = []
    for byte in os.fsencode(text):
        ch = chr(byte)
        if ch in '"\\?' or not (32 <= byte < 127):
            out.append(f"\\{byte:03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def label_source(label: str) -> str:
    """C defining `mlgo_policy_label`, the name under which a plugin or host reports what it
    served (MLGO_DECISION_SUMMARY)."""
    return f"const char mlgo_policy_label[] = {c_string(label)};\n"


def content_key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, *parts):
        h.update(part.encode())
        h.update(b"\0\1")
    return h.hexdigest()


def file_identity(path: str) -> str:
    """Path, size and mtime: changes when a compiler is upgraded, without running it."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def find_artifact(kind: str, key: str, filename: str) -> str | None:
    """The path of an already-built, intact artifact, or None (no subprocess, no build)."""
    final = os.path.join(cache_root(), kind, key[:32])
    target = os.path.join(final, filename)
    return target if _intact(final, key, filename) else None


def _intact(directory: str | os.PathLike, key: str, filename: str) -> bool:
    """Whether `directory` holds `filename` for `key`, with the bytes recorded at build time."""
    meta = _meta(directory)
    if meta.get("key") != key or not isinstance(meta.get("sha256"), str):
        return False
    try:
        return file_sha256(os.path.join(directory, filename)) == meta["sha256"]
    except OSError:
        return False


def _remove_abandoned_builds(parent: str | os.PathLike) -> None:
    """Remove `.build-<key>-<pid>-*` directories whose building process no longer exists."""
    import shutil

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(BUILD_DIR_PREFIX):
            continue
        fields = name[len(BUILD_DIR_PREFIX):].split("-")
        if len(fields) < 3 or not fields[1].isdigit():
            continue
        try:
            os.kill(int(fields[1]), 0)
            continue  # still building (or a live process reusing the pid: leave it)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def cached_artifact(kind: str, key: str, filename: str, build: Callable[[Path], dict]) -> Path:
    """`<cache>/<kind>/<key>/<filename>`, calling `build(tmpdir)` to create it when absent.
    `build` writes `filename` into tmpdir and returns metadata recorded beside it."""
    import shutil
    import tempfile
    from pathlib import Path

    final = Path(cache_root()) / kind / key[:32]
    target = final / filename
    if _intact(final, key, filename):
        return target
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(final.parent)
    if final.exists():
        if _intact(final, key, filename):
            return target  # another process renamed its build into place just now
        # A damaged artifact, or a leftover of something else: replace it.
        shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILD_DIR_PREFIX}{key[:8]}-{os.getpid()}-",
                                dir=final.parent))
    try:
        meta = build(tmp)
        if not (tmp / filename).is_file():
            raise BuildError(f"building {kind} {filename}: the build produced no {filename}")
        record = {"key": key, "sha256": file_sha256(tmp / filename), **meta}
        (tmp / META).write_text(json.dumps(record, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same build first; its result is equally good.
            if not _intact(final, key, filename):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _meta(directory: str | os.PathLike) -> dict:
    try:
        with open(os.path.join(directory, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def run_build(argv: Sequence[str], source: Path, what: str, timeout: float = 600) -> None:
    """Run one compiler command; BuildError naming `source` and quoting the compiler on failure."""
    from mlgo_base.process import ProcessError, run

    try:
        run(argv, what=f"building {what}", timeout=timeout)
    except ProcessError as e:
        raise BuildError(f"{source}: {e}") from e
