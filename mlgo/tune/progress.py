"""The run's clock and voice: the time budget (`--time-budget 60m`), a progress line at least
every 10 s with an estimated end, and the record of finished steps that makes a run resumable.

A step's record (OUT/steps/NAME.json, written atomically when the step ends) holds its wall
time and its results; a re-run skips every recorded step and reads its results from there."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text, directory_lock

# Each tune's settings, recorded by its first run (check_identity).
IDENTITY = "tune.json"

HEARTBEAT_SECONDS = 10.0  # the longest silence a run allows itself
STEPS_DIR = "steps"
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 60.0}  # a bare number is minutes


def parse_duration(text: str) -> float:
    """'60m', '1h30m', '90s', '2.5m' or '45' (minutes) -> seconds (MlgoError otherwise)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", text.strip().lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms]?)", "", text.strip().lower()).strip():
        raise MlgoError(f"--time-budget {text!r}: not a duration (e.g. 60m, 1h30m, 90s)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise MlgoError(f"--time-budget {text!r}: must be more than zero")
    return seconds


def clock(seconds: float) -> str:
    """Seconds as 'M:SS' (or 'H:MM:SS')."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Prints `[tune 3:05 | ETA 12:40] ...` lines; a background thread repeats the current
    status when nothing was printed for HEARTBEAT_SECONDS. The ETA is the run's elapsed time
    plus `remaining` (the estimate of what is left, set by the flow), never past the budget."""

    def __init__(self, budget: float, out=None) -> None:
        self.start = time.monotonic()
        self.budget = budget
        self.deadline = self.start + budget
        self._end: float | None = None  # estimated total run time, when known
        self.status = "starting"
        self._out = out or sys.stdout
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlgo-tune-progress", daemon=True)
        self._thread.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.deadline - time.monotonic()

    @property
    def remaining(self) -> float | None:
        return None if self._end is None else max(self._end - self.elapsed(), 0.0)

    @remaining.setter
    def remaining(self, seconds: float) -> None:
        """Set the estimate of the seconds left from now."""
        self._end = self.elapsed() + max(seconds, 0.0)

    def eta(self) -> float:
        """Estimated total run time in seconds (a step running late pushes it along)."""
        if self._end is None:
            return self.budget
        return min(max(self._end, self.elapsed()), self.budget)

    def say(self, text: str) -> None:
        with self._lock:
            print(f"[tune {clock(self.elapsed())} | ETA {clock(self.eta())} of "
                  f"{clock(self.budget)}] {text}", file=self._out, flush=True)
            self._last = time.monotonic()

    def set_status(self, text: str, say: bool = False) -> None:
        self.status = text
        if say:
            self.say(text)

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            if time.monotonic() - self._last >= HEARTBEAT_SECONDS:
                self.say(self.status)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def quiet_tensorflow() -> None:
    """Import TensorFlow with the process's standard error closed: its C++ start-up lines (CUDA
    probing on a CPU-only machine, absl's pre-initialization warning) ignore
    TF_CPP_MIN_LOG_LEVEL. An import that fails still raises; its Python logging is kept to
    warnings."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Steps:
    """The records of finished steps under OUT/steps/."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(out) / STEPS_DIR

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def done(self, name: str) -> dict[str, Any] | None:
        p = self.path(name)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MlgoError(f"{p}: unreadable step record ({e}); delete it to redo the step") from e

    def record(self, name: str, seconds: float, data: dict[str, Any] | None = None) -> dict:
        doc = {"step": name, "seconds": round(seconds, 3), **(data or {})}
        atomic_write_text(self.path(name), json.dumps(doc, indent=1) + "\n")
        return doc

    def forget(self, *names: str) -> None:
        for n in names:
            self.path(n).unlink(missing_ok=True)

    def seconds(self) -> dict[str, float]:
        """Wall time of every recorded step, in the order the steps ran."""
        out = {}
        for p in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns):
            try:
                out[p.stem] = float(json.loads(p.read_text())["seconds"])
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                continue
        return out


def tune_lock(out: Path) -> AbstractContextManager[None]:
    """One tune per output directory at a time."""
    return directory_lock(out / ".lock", f"{out}: another mlgo tune is running on this "
                          "directory", "wait for it to finish or use another output directory")


def run_tune(output: Path, identity: dict[str, Any], time_budget: float,
             body: Callable[[Path, Steps, Progress], dict[str, Any]]) -> dict[str, Any]:
    """What both tunes do around their steps: the output directory made and locked, the run's
    settings checked against the ones it started with, and the progress line for `body`'s
    run (its result returned), closed however the run ends."""
    out = output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tune_lock(out):
        check_identity(out, identity)
        prog = Progress(time_budget)
        try:
            return body(out, Steps(out), prog)
        finally:
            prog.close()


def check_identity(out: Path, want: dict[str, Any]) -> None:
    """A tune resumes only with the settings it started with (`want`, recorded on the first
    run): finished steps made with others would be mixed into its result."""
    path = out / IDENTITY
    if path.is_file():
        have = json.loads(path.read_text())
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            raise MlgoError(f"{path}: this directory holds a tune with other settings "
                            f"({', '.join(diff)}); use another output directory")
    else:
        atomic_write_text(path, json.dumps(want, indent=1) + "\n")
