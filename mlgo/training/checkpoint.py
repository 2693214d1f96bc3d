"""Atomic training checkpoints: a killed run resumes from its last complete iteration.

    OUT/checkpoints/ckpt-000012/arrays.npz   parameters, optimizer moments, baselines ...
    OUT/checkpoints/ckpt-000012/state.json   iteration, metrics, rng state, sha256 of arrays.npz
    OUT/checkpoints/LATEST                   name of the newest complete checkpoint

A checkpoint directory is written under a temporary name and renamed when complete; LATEST is
replaced atomically after that. Loading verifies the checksum and falls back to an older
checkpoint rather than ever loading a torn one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlgo_base.errors import writing
from mlgo_base.files import atomic_write_text, file_sha256

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    iteration: int
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]


class Checkpointer:
    def __init__(self, output_dir: Path | str, keep: int = 3) -> None:
        self.dir = Path(output_dir) / "checkpoints"
        self.keep = keep

    def save(self, iteration: int, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
        name = f"ckpt-{iteration:06d}"
        with writing(self.dir / name):
            return self._save(iteration, name, arrays, state)

    def _save(self, iteration: int, name: str, arrays: dict[str, np.ndarray],
              state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.dir))
        try:
            with open(tmp / "arrays.npz", "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            digest = file_sha256(tmp / "arrays.npz")
            (tmp / "state.json").write_text(json.dumps(
                {"iteration": iteration, "sha256": digest, "state": state}, indent=1))
            final = self.dir / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.dir / "LATEST", name + "\n")
        self._prune(final)
        return final

    def _complete(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))

    def _prune(self, newest: Path) -> None:
        """Keep the `keep` newest checkpoints up to `newest`, which was just saved. Any named
        after it belong to a history this run did not continue (they could not be loaded),
        so they go too, and never push `newest` itself out."""
        done = self._complete()
        stale = [p for p in done if p.name > newest.name]
        kept = [p for p in done if p.name <= newest.name]
        for p in stale + kept[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.dir.iterdir():  # temp dirs of a run killed mid-save, torn checkpoints
            if p.is_dir() and p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies, or None for a fresh run."""
        candidates = self._complete()
        latest = (self.dir / "LATEST")
        if latest.is_file():
            named = self.dir / latest.read_text().strip()
            if named in candidates:  # prefer what LATEST names, then older ones
                candidates = [c for c in candidates if c <= named]
        for path in reversed(candidates):
            try:
                return self._load(path)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                log.warning("%s: unusable checkpoint (%s); trying an older one", path, e)
                # Out of the way (the next save removes it), so that it can never outrank
                # or prune a good checkpoint saved after it.
                aside = path.with_name(f".torn-{path.name}")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
        return None

    def _load(self, path: Path) -> Checkpoint:
        meta = json.loads((path / "state.json").read_text())
        if file_sha256(path / "arrays.npz") != meta["sha256"]:
            raise ValueError("checksum mismatch")
        with np.load(path / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return Checkpoint(int(meta["iteration"]), arrays, meta["state"])
