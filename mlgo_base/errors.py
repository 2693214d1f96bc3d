"""Exceptions shared across mlgo. Each one names the file or module and the cause."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MlgoError(Exception):
    """Base class: an error a user can act on; the CLI prints it without a traceback."""


class ToolchainError(MlgoError):
    """A required LLVM tool is missing or has the wrong version."""


class ProtocolError(MlgoError):
    """The compiler's interactive stream is malformed, truncated or does not match the header."""


class CompileError(MlgoError):
    """The compiler failed, crashed or timed out on a module."""

    def __init__(self, module: str, message: str, stderr: str = "") -> None:
        self.module = module
        self.stderr = stderr
        detail = f"\n{stderr.strip()[-2000:]}" if stderr.strip() else ""
        super().__init__(f"{module}: {message}{detail}")


class CorpusError(MlgoError):
    """A corpus directory or one of its modules is unusable."""


def _tf_cause(e: Exception) -> str:
    """The cause in a TensorFlow I/O error ('<path>; No space left on device [Op:...]')."""
    first = (getattr(e, "message", None) or str(e)).strip().splitlines()[0]
    return first.rsplit("; ", 1)[-1].split(" [Op:", 1)[0].strip() or type(e).__name__


@contextmanager
def writing(path: object) -> Iterator[None]:
    """Turn a failure to write `path` (a full disk, a read-only or missing directory: an
    OSError, or TensorFlow's equivalent) into one MlgoError naming the file and the cause.
    Python's own write errors often name no file (ENOSPC surfaces at write or close)."""
    try:
        yield
    except OSError as e:  # named by what was to be written, not by a temporary file of it
        raise MlgoError(f"{path}: cannot write: {e.strerror or e}") from e
    except Exception as e:
        if type(e).__module__.startswith("tensorflow"):  # tf.errors.OpError, without importing TF
            raise MlgoError(f"{path}: cannot write: {_tf_cause(e)}") from e
        raise


def describe_os_error(e: OSError) -> str:
    """One line for an OSError that reached the command line: the file(s) and the cause."""
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    cause = e.strerror or str(e)
    return f"{files}: {cause}" if files else cause


def summary_line(error: str, module: str | None = None, limit: int = 300) -> str:
    """One line for a per-module failure: what failed and, for a compiler failure, the
    compiler's own first error (`compiler exited with status 1: error: Expected a single
    module`), which the first line alone would drop."""
    lines = [x.strip() for x in error.strip().splitlines() if x.strip()]
    if not lines:
        return "unknown error"
    first = lines[0]
    if module and first.startswith(f"{module}: "):
        first = first[len(module) + 2:]
    diag = next((x for x in lines[1:] if "error:" in x or "fatal error" in x), None)
    if diag is None and len(lines) > 1 and first.startswith("compiler "):
        diag = lines[1]  # a compiler failure whose stderr has no "error:" line (a crash)
    text = f"{first}: {diag}" if diag else first
    return text if len(text) <= limit else text[: limit - 3] + "..."
