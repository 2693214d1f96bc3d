"""On-disk cache of default-heuristic measurements, so each baseline is compiled once.

Keyed by the bitcode's hash, the exact compiler arguments, the compiler's identity and the
problem, so a changed module, flag or compiler never reuses a stale number."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mlgo_base.files import atomic_write_text, file_sha256


def cache_dir() -> Path:
    d = os.environ.get("MLGO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mlgo"
    )
    return Path(d)


def baseline_key(problem: str, bitcode: Path, args: list[str], compiler: str) -> str:
    h = hashlib.sha256()
    for part in (problem, file_sha256(bitcode), "\0".join(args), compiler):
        h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()


class BaselineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_dir()) / "baselines"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / (key + ".json")

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # a torn or missing entry is recomputed, never trusted

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_write_text(self._path(key), json.dumps(value))
