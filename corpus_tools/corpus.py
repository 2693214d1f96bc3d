"""The corpus on disk, in google/ml-compiler-opt's layout so corpora move between the two tools.

    CORPUS/corpus_description.json   {"has_thinlto": false, "modules": ["proj/path/file.c", ...]}
    CORPUS/<module>.bc               pre-optimization bitcode
    CORPUS/<module>.cmd              compiler arguments, NUL-separated

Rebuilding module M:  clang-19 <args of M.cmd> -x ir CORPUS/M.bc -o M.o
The arguments hold neither the input nor -o. They are either clang driver arguments (starting
with -c) or, for bitcode taken from objects built with -fembed-bitcode, cc1 arguments (starting
with -cc1). A problem may append flags (e.g. -mllvm ...) or replace the optimization level.
mlgo adds an optional "projects" map {module: project} used for train/validation splits; other
tools ignore unknown keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlgo.errors import CorpusError

DESCRIPTION = "corpus_description.json"
_OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Ofast", "-Og", "-O")


@dataclass(frozen=True)
class Module:
    """One module of a corpus: its name (relative path, no extension) and where its files are."""

    name: str
    root: Path
    project: str = ""

    @property
    def bc_path(self) -> Path:
        return self.root / (self.name + ".bc")

    @property
    def cmd_path(self) -> Path:
        return self.root / (self.name + ".cmd")

    def args(self) -> list[str]:
        """The recorded compiler arguments (no input, no -o)."""
        try:
            raw = self.cmd_path.read_bytes()
        except FileNotFoundError as e:
            raise CorpusError(f"{self.cmd_path}: module's .cmd file is missing") from e
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise CorpusError(f"{self.cmd_path}: not UTF-8 text") from e
        return [a for a in text.split("\0") if a]

    def compile_args(
        self, *, opt_level: str | None = None, extra: Sequence[str] = ()
    ) -> list[str]:
        """Arguments for `clang-19 ARGS -o OUT`: the recorded ones, the bitcode as IR input,
        optionally with the optimization level replaced, plus `extra`."""
        args = self.args()
        if opt_level is not None:
            args = [a for a in args if not _is_opt_flag(a)] + [opt_level]
        return [*args, *extra, "-x", "ir", str(self.bc_path)]


def _is_opt_flag(a: str) -> bool:
    return a in _OPT_LEVELS or (a.startswith("-O") and a[2:].isdigit())


@dataclass
class Corpus:
    root: Path
    modules: list[Module]
    has_thinlto: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | str, *, check_files: bool = True) -> Corpus:
        root = Path(root)
        desc_path = root / DESCRIPTION
        try:
            desc = json.loads(desc_path.read_text())
        except FileNotFoundError as e:
            raise CorpusError(f"{desc_path}: not found; is {root} a corpus directory?") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorpusError(f"{desc_path}: not valid JSON ({e})") from e
        if not isinstance(desc, dict) or not isinstance(desc.get("modules"), list):
            raise CorpusError(f"{desc_path}: needs a 'modules' list")
        names = desc["modules"]
        if not all(isinstance(n, str) and n for n in names):
            raise CorpusError(f"{desc_path}: every entry of 'modules' must be a non-empty string")
        if desc.get("has_thinlto"):
            raise CorpusError(f"{desc_path}: ThinLTO corpora are not supported yet")
        projects = desc.get("projects") or {}
        if not isinstance(projects, dict):
            raise CorpusError(f"{desc_path}: 'projects' must be an object")
        mods = [Module(n, root, str(projects.get(n, _default_project(n)))) for n in names]
        if check_files:
            missing = [m.name for m in mods if not m.bc_path.is_file() or not m.cmd_path.is_file()]
            if missing:
                raise CorpusError(
                    f"{desc_path}: {len(missing)} listed module(s) lack their .bc or .cmd file, "
                    f"e.g. {missing[:3]}"
                )
        extra = {k: v for k, v in desc.items() if k not in ("modules", "has_thinlto")}
        return cls(root, mods, bool(desc.get("has_thinlto", False)), extra)

    def __len__(self) -> int:
        return len(self.modules)

    def by_project(self) -> dict[str, list[Module]]:
        out: dict[str, list[Module]] = {}
        for m in self.modules:
            out.setdefault(m.project, []).append(m)
        return out

    def subset(self, names: Iterable[str]) -> Corpus:
        keep = set(names)
        return Corpus(self.root, [m for m in self.modules if m.name in keep], self.has_thinlto,
                      dict(self.extra))


def _default_project(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


def write_description(
    root: Path | str, modules: Sequence[str], projects: dict[str, str] | None = None, **extra: object
) -> Path:
    """Write corpus_description.json atomically (temp file + rename)."""
    root = Path(root)
    desc: dict = {"has_thinlto": False, "modules": list(modules)}
    if projects:
        desc["projects"] = {m: projects[m] for m in modules if m in projects}
    desc.update(extra)
    return atomic_write_text(root / DESCRIPTION, json.dumps(desc, indent=1) + "\n")


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
