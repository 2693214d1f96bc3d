"""The corpus on disk, in google/ml-compiler-opt's layout so corpora move between the two tools.

    CORPUS/corpus_description.json   {"has_thinlto": false, "modules": ["proj/path/file.c", ...]}
    CORPUS/<module>.bc               pre-optimization bitcode
    CORPUS/<module>.cmd              compiler arguments, NUL-separated

Rebuilding module M:  clang-19 <args of M.cmd> -x ir CORPUS/M.bc -o M.o
The arguments hold neither the input nor -o. They are either clang driver arguments (starting
with -c) or, for bitcode taken from objects built with -fembed-bitcode, cc1 arguments (starting
with -cc1). A problem may append flags (e.g. -mllvm ...) or replace the optimization level.
mlgo adds an optional "projects" map {module: project} used for train/validation splits, and
records how the IR was emitted: "opt_level" (the frontend level) and "llvm_version" (the major
version of the clang that emitted it, 19 or 22; a corpus that records none is LLVM 19's, the only
version mlgo ran on before). Other tools ignore unknown keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlgo_base import toolchain
from mlgo_base.errors import CorpusError, MlgoError
from mlgo_base.files import atomic_write_text

log = logging.getLogger(__name__)
DESCRIPTION = "corpus_description.json"
_OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Ofast", "-Og", "-O")
# The levels extraction can emit IR at (the frontend's level: at -Os/-Oz it marks every
# function optsize/minsize, which the inliner and codegen read), and "keep" for the build's own.
EXTRACT_LEVELS = ("Oz", "Os", "O1", "O2", "O3")
KEEP_LEVEL = "keep"
# The LLVM version of corpora that record none: mlgo extracted with clang-19 only until it
# recorded the version.
UNRECORDED_LLVM_VERSION = 19


class LlvmVersionError(CorpusError):
    """A corpus's IR was emitted by another LLVM version than the one mlgo compiles with."""


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
            args = replace_opt_level(args, opt_level)
        return [*args, *extra, "-x", "ir", str(self.bc_path)]


def is_opt_flag(a: str) -> bool:
    return a in _OPT_LEVELS or (a.startswith("-O") and a[2:].isdigit())


def replace_opt_level(args: Sequence[str], level_flag: str) -> list[str]:
    """`args` with every optimization-level flag removed and `level_flag` (e.g. -Oz) appended."""
    return [a for a in args if not is_opt_flag(a)] + [level_flag]


def opt_levels_in(args: Sequence[str]) -> list[str]:
    """The optimization-level flags of a command line, in order (the last one wins)."""
    return [a for a in args if is_opt_flag(a)]


def level_flag(level: str) -> str | None:
    """'Oz' or '-Oz' -> '-Oz'; 'keep' -> None. Anything else is a CorpusError."""
    name = level[1:] if level.startswith("-") else level
    if name == KEEP_LEVEL:
        return None
    if name not in EXTRACT_LEVELS:
        raise CorpusError(f"unknown optimization level {level!r}; choose one of "
                          f"{', '.join((*EXTRACT_LEVELS, KEEP_LEVEL))}")
    return "-" + name


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
        for n in names:
            why = unsafe_module_name(n)
            if why:
                raise CorpusError(f"{desc_path}: module name {n!r} {why}; a module name is a "
                                  "relative path inside the corpus")
        if len(set(names)) != len(names):
            # Listed twice, a module would be compiled, counted and weighted twice.
            seen: set[str] = set()
            dups = sorted({n for n in names if n in seen or seen.add(n)})
            log.warning("%s: %d module name(s) listed more than once, used once: %s", desc_path,
                        len(dups), ", ".join(dups[:5]) + (" ..." if len(dups) > 5 else ""))
            names = list(dict.fromkeys(names))
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

    @property
    def opt_level(self) -> str | None:
        """The frontend level the IR was emitted at ("-Oz", or "keep" for each build's own),
        as recorded at extraction; None for corpora made before it was recorded."""
        level = self.extra.get("opt_level")
        return level if isinstance(level, str) else None

    @property
    def llvm_version(self) -> int:
        """The major version of the clang that emitted the IR, as recorded at extraction (19
        for corpora that record none)."""
        return recorded_llvm_version(self.extra, self.root / DESCRIPTION)

    def reextract_command(self, project: str, level: str) -> str:
        """The command that extracts `project` again at `level` (e.g. -Oz), from what the
        corpus recorded about its origin."""
        name = level.lstrip("-")
        origin = (self.extra.get("origins") or {}).get(project) or {}
        kind = origin.get("source")
        if kind == "debian":
            return f"mlgo corpus debian {origin.get('package', project)} --opt-level {name} -o NEW_CORPUS"
        if kind == "compile-db":
            return (f"mlgo corpus extract --compile-db {origin.get('path')} --project {project} "
                    f"--opt-level {name} -o NEW_CORPUS")
        if kind == "sources":
            flags = " ".join(origin.get("flags") or [])
            return (f"mlgo corpus extract --sources {origin.get('path')} {flags} --project "
                    f"{project} --opt-level {name} -o NEW_CORPUS").replace("  ", " ")
        if kind == "objects":
            return (f"rebuild {origin.get('path')} at {level} with -Xclang -fembed-bitcode=all, "
                    f"then mlgo corpus extract --objects {origin.get('path')} --opt-level {name} "
                    "-o NEW_CORPUS")
        return (f"mlgo corpus extract ... --opt-level {name} -o NEW_CORPUS (or mlgo corpus "
                f"debian PACKAGE --opt-level {name})")

    def subset(self, names: Iterable[str]) -> Corpus:
        keep = set(names)
        return Corpus(self.root, [m for m in self.modules if m.name in keep], self.has_thinlto,
                      dict(self.extra))


def recorded_llvm_version(desc: dict, desc_path: Path) -> int:
    """The "llvm_version" of a corpus description (19 when absent); anything but a supported
    major version is a CorpusError naming the file."""
    version = desc.get("llvm_version", UNRECORDED_LLVM_VERSION)
    if isinstance(version, bool) or version not in toolchain.SUPPORTED_MAJORS:
        raise CorpusError(f"{desc_path}: llvm_version {version!r} is not one mlgo runs on "
                          f"({', '.join(map(str, toolchain.SUPPORTED_MAJORS))})")
    return int(version)


def check_adding_to(desc: dict, desc_path: Path) -> None:
    """Raise unless IR extracted now (by the LLVM mlgo is set to) may join the corpus of
    `desc`: one corpus, one LLVM version."""
    theirs, ours = recorded_llvm_version(desc, desc_path), toolchain.llvm_major()
    if theirs != ours:
        raise LlvmVersionError(
            f"{desc_path}: this corpus holds IR of LLVM {theirs}, mlgo is set to LLVM {ours}; "
            f"extract into another directory (one corpus, one LLVM version) or set "
            f"{toolchain.VERSION_VARIABLE}={theirs}")


def check_llvm_version(corpus: Corpus, major: int | None = None) -> None:
    """Raise LlvmVersionError, naming the corpus's first module, unless its IR was emitted by
    LLVM `major` (default: the version mlgo is set to). IR of another clang is not the build
    this compiler's users make (its frontend emits other IR), and clang-19 may not read IR of
    a newer LLVM at all."""
    major = toolchain.llvm_major() if major is None else major
    theirs = corpus.llvm_version
    if theirs == major or not corpus.modules:
        return
    module = corpus.modules[0]
    how = ("no version recorded: LLVM 19" if "llvm_version" not in corpus.extra
           else f"llvm_version {theirs} in {DESCRIPTION}")
    raise LlvmVersionError(
        f"{module.bc_path}: IR emitted by LLVM {theirs} ({how}), but mlgo is set to LLVM "
        f"{major}; set {toolchain.VERSION_VARIABLE}={theirs}, or re-extract with LLVM {major}: "
        f"{toolchain.VERSION_VARIABLE}={major} "
        + corpus.reextract_command(module.project, corpus.opt_level or "-Oz"))


def unsafe_module_name(name: str) -> str | None:
    """Why `name` cannot be a module name (None if it can): the corpus joins it to its root to
    read and write M.bc and M.cmd, so it must not lead anywhere else."""
    if "\0" in name:
        return "contains a NUL byte"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path component"
    return None


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


def _stable_unit_hash(seed: int, text: str) -> int:
    # sha256 rather than hash(): Python salts str hashes per process.
    return int.from_bytes(hashlib.sha256(f"{seed}\0{text}".encode()).digest()[:8], "big")


def split_named_projects(corpus: Corpus,
                         projects: Collection[str]) -> tuple[list[str], list[str]]:
    """(train, validation) module names, each in corpus order: validation is exactly the named
    projects' modules, training the rest. A name the corpus does not hold is an error (a typo
    would otherwise validate on nothing), and so is leaving nothing to train on."""
    by_project = corpus.by_project()
    unknown = sorted(set(projects) - set(by_project))
    if unknown:
        raise CorpusError(f"{corpus.root}: holds no project {', '.join(unknown)} (its projects: "
                          f"{', '.join(sorted(by_project))})")
    held_out = set(projects)
    validation = [m.name for m in corpus.modules if m.project in held_out]
    train = [m.name for m in corpus.modules if m.project not in held_out]
    if not train:
        raise CorpusError(f"{corpus.root}: validating on {', '.join(sorted(held_out))} leaves no "
                          "module to train on")
    return train, validation


def split_by_project(corpus: Corpus, validation_fraction: float,
                     seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, validation) module names, each in corpus order.

    With two or more projects, whole projects go to one side: projects are ordered by a SHA-256
    hash of (seed, project name) and moved to validation in that order until it holds at least
    `validation_fraction` of the modules; at least one project always stays in training. The
    split depends only on the names, the fraction and the seed, so it is the same on every run and
    machine.

    With a single project, there is no project to hold out, so modules are split one by one
    instead: ordered by the hash of (seed, module name), the first round(fraction * n) (at least
    one when fraction > 0 and there are two or more modules) go to validation.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise MlgoError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    names = [m.name for m in corpus.modules]
    if validation_fraction == 0.0 or len(names) < 2:
        return names, []
    by_project = corpus.by_project()
    if len(by_project) >= 2:
        target = validation_fraction * len(names)
        order = sorted(by_project, key=lambda p: (_stable_unit_hash(seed, p), p))
        held_out: set[str] = set()
        count = 0
        for project in order[:-1]:  # the last project in hash order always trains
            if count >= target:
                break
            held_out.add(project)
            count += len(by_project[project])
        validation = {m.name for p in held_out for m in by_project[p]}
    else:
        size = max(1, round(validation_fraction * len(names)))
        size = min(size, len(names) - 1)
        order = sorted(names, key=lambda n: (_stable_unit_hash(seed, n), n))
        validation = set(order[:size])
    return ([n for n in names if n not in validation], [n for n in names if n in validation])
