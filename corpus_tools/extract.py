"""Build a corpus (format in corpus_tools/corpus.py) from real code.

The IR is emitted at a chosen optimization level (`opt_level`, e.g. -Oz) or at the build's own
(None, "keep"). The level matters before any LLVM pass runs: at -Os/-Oz the frontend marks
every function optsize/minsize, and the inliner and codegen read those attributes, so IR emitted
at -O2 and compiled with -Oz is not what `clang-19 -Oz -c` makes (it is 10-13% larger on C++).
The level and where each project came from are recorded in corpus_description.json.

Three sources of modules:
  * a compile_commands.json: every compile is re-run with clang-19/clang++-19 so that it
    stops before LLVM's optimizations and writes bitcode (`extract_compile_db`);
  * object files built with `-Xclang -fembed-bitcode=all`: their .llvmbc/.llvmcmd sections
    are dumped with llvm-objcopy-19 (`extract_objects`);
  * a plain source tree compiled with given -I/-D flags (`extract_sources`).

All three share one pipeline (`_run_tasks`): compilers run in a thread pool (the work is in
the subprocesses), each with a timeout; finished bitcode lands in the corpus through temp
name + rename, so an interrupted run leaves no half-written module and a re-run skips every
module whose .bc and .cmd both exist. Identical bitcode is kept once. A failing file is
reported with the compiler's message and the others go on; the summary of failures is also
written to `extract_failures.json` in the corpus directory.

`check_corpus` recompiles every module with its .cmd; `merge_corpora` joins corpora.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import (
    DESCRIPTION,
    KEEP_LEVEL,
    Corpus,
    check_adding_to,
    check_llvm_version,
    opt_levels_in,
    recorded_llvm_version,
    replace_opt_level,
    write_description,
)
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError
from mlgo_base.files import atomic_write_bytes, atomic_write_text, file_sha256

log = logging.getLogger(__name__)

FAILURES_FILE = "extract_failures.json"
DEFAULT_TIMEOUT = 600.0  # seconds for one compile; a hang becomes a reported failure

C_EXTENSIONS = frozenset({".c", ".i"})
CXX_EXTENSIONS = frozenset({".cc", ".cpp", ".cxx", ".c++", ".C", ".cp", ".CPP", ".ii"})
SOURCE_EXTENSIONS = C_EXTENSIONS | CXX_EXTENSIONS

# Driver options whose value is the next argument (so the value is not taken for an input).
_DRIVER_OPTS_WITH_VALUE = frozenset({
    "-o", "-MF", "-MT", "-MQ", "-MJ", "-D", "-U", "-I", "-include", "-imacros", "-isystem",
    "-iquote", "-idirafter", "-iprefix", "-iwithprefix", "-iwithprefixbefore", "-isysroot",
    "-x", "-Xclang", "-Xpreprocessor", "-Xassembler", "-Xlinker", "-arch", "-target",
    "-mllvm", "-L", "-u", "-z", "-T", "--param", "-Xanalyzer", "-MD-file", "-iframework",
    "-F", "-ivfsoverlay", "-resource-dir", "-gcc-toolchain", "--sysroot",
})
# Outputs, actions and dependency files: what names the output or the action is ours to set.
_DROP_ALONE = frozenset({
    "-c", "-S", "-E", "-M", "-MM", "-MD", "-MMD", "-MP", "-MG", "-emit-llvm",
    "-fsyntax-only", "-save-temps", "--coverage", "-ftest-coverage", "-gsplit-dwarf",
})
_DROP_WITH_VALUE = frozenset({"-o", "-MF", "-MT", "-MQ", "-MJ"})
# Prefixes of flags that would make the rebuilt object differ in kind (bitcode instead of an
# object, profile files read or written next to the original build) or name side files.
_DROP_PREFIXES = ("-fembed-bitcode", "-flto", "-fprofile-", "-fcoverage-", "-save-temps=",
                  "-fthinlto", "-fsplit-dwarf", "-gsplit-dwarf=")
# Flags that only matter before IR exists (preprocessor, language dialect, diagnostics):
# dropped from the .cmd since the rebuild starts from IR.
_FRONTEND_WITH_VALUE = frozenset({
    "-D", "-U", "-I", "-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-iprefix",
    "-iwithprefix", "-iwithprefixbefore", "-isysroot", "-x", "-Xpreprocessor", "-iframework",
    "-F", "-ivfsoverlay",
})
_FRONTEND_PREFIXES = ("-D", "-U", "-I", "-std=", "-stdlib=", "-pedantic", "-fdiagnostics-",
                      "-fcolor-diagnostics", "-fno-color-diagnostics", "-ferror-limit",
                      "-fmessage-length", "-isystem", "-iquote", "-idirafter", "-include",
                      "-imacros", "-nostdinc", "-Wp,", "-Xpreprocessor", "--include")

# cc1 options (in an embedded .llvmcmd) that name the input, an output, or a side file.
_CC1_DROP_WITH_VALUE = frozenset({
    "-main-file-name", "-o", "-dependency-file", "-MT", "-MQ", "-x",
    "-split-dwarf-file", "-split-dwarf-output", "-coverage-notes-file", "-coverage-data-file",
    "-header-include-file", "-diagnostic-log-file", "-stats-file",
})
_CC1_DROP_ALONE = frozenset({"-sys-header-deps", "-MP", "-module-file-deps"})
_CC1_DROP_PREFIXES = ("-fembed-bitcode", "-stats-file=", "-fprofile-instrument-use-path=",
                      "-fprofile-instrument-path=")

# Compiles a build system runs to probe the compiler, not part of the project.
DEFAULT_EXCLUDES = ("*CMakeFiles/*", "*conftest.c", "*conftest.cpp", "*conftest.cc",
                    "*/meson-private/*", "meson-private/*")
# Sources outside the root get relative paths under this prefix (see _relative_source).
OUTSIDE_ROOT = "_outside"
OUTSIDE_ROOT_PATTERN = OUTSIDE_ROOT + "/*"

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+\-]")
# What turns a compile into one that writes IR before any LLVM pass ran.
STOP_BEFORE_PASSES = ("-Xclang", "-disable-llvm-passes", "-emit-llvm")


# ---------------------------------------------------------------------------------------------
# Tasks and results


@dataclass(frozen=True)
class ExtractTask:
    """One module to produce. Either `compile_argv` (run in `cwd`, `-o BC` appended) with the
    `recompile_args` to record, or `object_path` whose embedded sections are dumped."""

    module: str
    project: str
    source: str  # what the user should look at when this fails
    compile_argv: tuple[str, ...] = ()
    cwd: str = ""
    recompile_args: tuple[str, ...] = ()
    object_path: str = ""
    required_level: str = ""  # with object_path: the level its embedded command must have


@dataclass(frozen=True)
class Failure:
    module: str
    source: str
    reason: str
    stderr: str = ""

    def to_json(self) -> dict:
        return {"module": self.module, "source": self.source, "reason": self.reason,
                "stderr": self.stderr}


@dataclass
class ExtractSummary:
    corpus_dir: Path
    extracted: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped module -> kept module
    failed: list[Failure] = field(default_factory=list)
    # Not attempted: same source compiled again by the build (e.g. PIC and non-PIC copies),
    # or a compile of something that is not C/C++ (assembly).
    repeated_sources: list[str] = field(default_factory=list)
    not_c_family: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    opt_level: str = KEEP_LEVEL  # the frontend level of the IR ("-Oz"), or "keep"

    def format(self) -> str:
        level = ("at the build's own optimization level" if self.opt_level == KEEP_LEVEL
                 else f"IR emitted at {self.opt_level}")
        lines = [
            f"{self.corpus_dir} ({level}): {len(self.extracted)} extracted, "
            f"{len(self.skipped_existing)} skipped (already present), "
            f"{len(self.duplicates)} duplicates (identical bitcode), {len(self.failed)} failed"
        ]
        if self.repeated_sources:
            lines.append(f"  {len(self.repeated_sources)} repeated compiles of an already "
                         "listed source ignored (one module per source file)")
        if self.excluded:
            lines.append(f"  {len(self.excluded)} compiles excluded (build-system probes or "
                         "excluded paths)")
        if self.not_c_family:
            lines.append(f"  {len(self.not_c_family)} compiles of non-C/C++ files ignored")
        for f in self.failed:
            first = f.stderr.strip().splitlines()[:1]
            detail = f": {first[0]}" if first else ""
            lines.append(f"  FAILED {f.source}: {f.reason}{detail}")
        if self.failed:
            lines.append(f"  details in {self.corpus_dir / FAILURES_FILE}")
        return "\n".join(lines)


class _TaskFailed(Exception):
    def __init__(self, reason: str, stderr: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr


@dataclass(frozen=True)
class _Produced:
    tmp_bc: Path
    cmd: tuple[str, ...]
    digest: str


# ---------------------------------------------------------------------------------------------
# Helpers


def module_name(project: str, relative_source: str | Path) -> str:
    """`<project>/<relative path>` with every path component made filesystem-safe."""
    parts = [p for p in Path(relative_source).as_posix().split("/") if p not in ("", ".")]
    safe = [("__" if p == ".." else _SAFE_CHARS.sub("_", p)) for p in parts]
    if not safe:
        raise CorpusError(f"empty source path for project {project!r}")
    proj = _SAFE_CHARS.sub("_", project) if project else ""
    return "/".join([proj, *safe]) if proj else "/".join(safe)


def _is_bitcode(data: bytes) -> bool:
    # Raw bitcode starts with 'BC' 0xC0DE; the wrapper format with 0x0B17C0DE (little endian).
    return data[:4] == b"BC\xc0\xde" or data[:4] == b"\xde\xc0\x17\x0b"


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the session `proc` leads (started with start_new_session):
    compilers and builds spawn children that outlive a kill of the leader alone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_with_timeout(argv: Sequence[str], *, cwd: str | Path | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a compiler; on timeout kill its whole process group (clang may spawn cc1 children)
    and raise subprocess.TimeoutExpired."""
    proc = subprocess.Popen(list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        proc.communicate()
        raise
    except BaseException:
        kill_session(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode,
                                       out.decode(errors="replace"), err.decode(errors="replace"))


def _is_cxx(compiler: str, source: str, args: Sequence[str]) -> bool:
    for i, a in enumerate(args):
        lang = args[i + 1] if a == "-x" and i + 1 < len(args) else a[2:] if a.startswith("-x") else ""
        if lang:
            return lang.startswith("c++")
    name = os.path.basename(compiler)
    if "++" in name or name in ("CC", "cxx") or re.search(r"(^|-)c\+\+", name):
        return True
    return Path(source).suffix in CXX_EXTENSIONS


# ---------------------------------------------------------------------------------------------
# compile_commands.json


@dataclass(frozen=True)
class CompileEntry:
    directory: Path
    file: Path  # absolute
    arguments: tuple[str, ...]  # argv including the compiler


def read_compile_db(path: Path | str,
                    malformed: list[tuple[int, str]] | None = None) -> list[CompileEntry]:
    """Parse a compile_commands.json (both the `arguments` and the `command` form).

    A malformed entry raises CorpusError, or, given a `malformed` list, is appended to it as
    (index, reason) and skipped, so that one bad entry does not cost the whole database."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CorpusError(f"{path}: compilation database not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise CorpusError(f"{path}: a compilation database must be a JSON list of entries")
    entries = []
    for i, e in enumerate(data):
        try:
            entries.append(_compile_entry(e))
        except ValueError as err:
            if malformed is None:
                raise CorpusError(f"{path}: entry {i}: {err}") from None
            malformed.append((i, str(err)))
    return entries


def _compile_entry(e: object) -> CompileEntry:
    """One entry of a compilation database; ValueError saying what is wrong with it."""
    if not isinstance(e, dict) or not isinstance(e.get("file"), str) or \
            not isinstance(e.get("directory"), str) or not e["file"] or not e["directory"]:
        raise ValueError("lacks 'file' or 'directory' (strings)")
    if isinstance(e.get("arguments"), list) and e["arguments"]:
        argv = [str(a) for a in e["arguments"]]
    elif isinstance(e.get("command"), str) and e["command"].strip():
        try:
            argv = shlex.split(e["command"])
        except ValueError as err:
            raise ValueError(f"cannot split 'command' ({err})") from None
    else:
        raise ValueError("has neither 'arguments' nor 'command'")
    directory = Path(e["directory"])
    file = Path(e["file"])
    if not file.is_absolute():
        file = directory / file
    return CompileEntry(directory, Path(os.path.normpath(file)), tuple(argv))


def split_compile_args(entry: CompileEntry) -> tuple[list[str], list[str]]:
    """From a recorded compile, (args to produce IR, args to recompile IR to an object).

    The first keep everything the frontend needs (-D, -I, -std ...) but not the action, the
    output, the input or dependency-file flags. The second are `-c` plus what still matters
    once IR exists: optimization level, target and codegen flags (-O2 -fPIC -march ...)."""
    args = list(entry.arguments[1:])
    frontend: list[str] = []
    recompile: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        value = args[i + 1] if a in _DRIVER_OPTS_WITH_VALUE and i + 1 < len(args) else None
        step = 2 if value is not None else 1
        pair = [a, value] if value is not None else [a]
        i += step
        if a in _DROP_ALONE or a in _DROP_WITH_VALUE or a.startswith(_DROP_PREFIXES):
            continue
        if a.startswith(("-MF", "-MT", "-MQ", "-MJ")):
            continue
        if a.startswith("-o") and not a.startswith(("-obj", "-order")):
            continue  # -oFILE
        if a.startswith("-Wp,") and re.search(r",-M", a):
            continue  # -Wp,-MD,file: a dependency file via the preprocessor
        if a == "-Xclang" and value is not None and value.startswith(_DROP_PREFIXES):
            continue
        if not a.startswith("-") or a == "-":
            if _same_file(entry.directory, a, entry.file):
                continue  # the input itself
            frontend.append(a)  # another input: clang will complain, which is reported
            continue
        frontend.extend(pair)
        if a in _FRONTEND_WITH_VALUE or a.startswith(_FRONTEND_PREFIXES):
            continue
        if a.startswith("-W") and not a.startswith("-Wa,"):
            continue  # warnings (but -Wa, passes options to the assembler)
        if a in ("-w", "-ansi", "-C", "-CC", "-P", "-H", "-trigraphs"):
            continue
        recompile.extend(pair)
    return frontend, ["-c", *recompile]


def _same_file(directory: Path, arg: str, file: Path) -> bool:
    p = Path(arg)
    if not p.is_absolute():
        p = directory / p
    return os.path.normpath(p) == os.path.normpath(file)


def _relative_source(file: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return file.relative_to(root).as_posix()
        except ValueError:
            pass
    # Outside the root (e.g. a generated file in an out-of-tree build dir): keep the full
    # path under a marker so it cannot clash with a file inside the root.
    return OUTSIDE_ROOT + file.as_posix()


def compile_db_tasks(
    entries: Sequence[CompileEntry], *, project: str, root: Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDES, summary: ExtractSummary | None = None,
    opt_level: str | None = None,
) -> list[ExtractTask]:
    """One task per C/C++ source file; later compiles of the same file are ignored, and so
    are sources whose path relative to `root` matches an `exclude` glob. With `opt_level`
    (e.g. -Oz) the build's level is replaced in both the IR-emitting compile and the .cmd."""
    if root is None:
        root = _common_root([e.file for e in entries])
    tasks: list[ExtractTask] = []
    seen: set[str] = set()
    for e in entries:
        if e.file.suffix not in SOURCE_EXTENSIONS:
            if summary is not None:
                summary.not_c_family.append(str(e.file))
            continue
        relative = _relative_source(e.file, root)
        if any(fnmatch.fnmatchcase(relative, pat) for pat in exclude):
            if summary is not None:
                summary.excluded.append(str(e.file))
            continue
        name = module_name(project, relative)
        if name in seen:
            if summary is not None:
                summary.repeated_sources.append(str(e.file))
            continue
        seen.add(name)
        frontend, recompile = split_compile_args(e)
        if opt_level is not None:
            frontend = replace_opt_level(frontend, opt_level)
            recompile = replace_opt_level(recompile, opt_level)
        cxx = _is_cxx(e.arguments[0], str(e.file), e.arguments[1:])
        compiler = (toolchain.clangxx() if cxx else toolchain.clang()).path
        argv = (compiler, *frontend, *STOP_BEFORE_PASSES, "-c", str(e.file))
        tasks.append(ExtractTask(name, project, str(e.file), argv, str(e.directory),
                                 tuple(recompile)))
    return tasks


def object_compile_argv(task: ExtractTask) -> list[str]:
    """The compile the task's IR comes from, as the build runs it (an object, all passes),
    without its output: the task's command minus STOP_BEFORE_PASSES."""
    argv = list(task.compile_argv)
    n = len(STOP_BEFORE_PASSES)
    for i in range(len(argv) - n + 1):
        if tuple(argv[i:i + n]) == STOP_BEFORE_PASSES:
            return argv[:i] + argv[i + n:]
    raise CorpusError(f"{task.source}: not an IR-emitting compile: {' '.join(argv[:4])} ...")


def _common_root(files: Sequence[Path]) -> Path | None:
    if not files:
        return None
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def extract_compile_db(
    compile_db: Path | str, out_dir: Path | str, *, project: str, root: Path | str | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDES, jobs: int = 1, timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True, opt_level: str | None = None, origin: dict | None = None,
) -> ExtractSummary:
    """Re-run every compile of `compile_db` to bitcode into the corpus `out_dir`, at
    `opt_level` (e.g. -Oz; None keeps each compile's own level).
    Module names are `<project>/<source path relative to root>`; `root` defaults to the
    deepest directory holding every source. Sources matching an `exclude` glob (on the
    relative path) are left out. `origin` describes where the project came from (recorded
    so that error messages can give the command that re-extracts it)."""
    out_dir = Path(out_dir)
    summary = ExtractSummary(out_dir)
    malformed: list[tuple[int, str]] = []
    entries = read_compile_db(compile_db, malformed)
    if malformed and not entries:
        i, why = malformed[0]
        raise CorpusError(f"{compile_db}: no usable entry ({len(malformed)} malformed; entry "
                          f"{i} {why})")
    tasks = compile_db_tasks(entries, project=project,
                             root=Path(root) if root is not None else None,
                             exclude=exclude, summary=summary, opt_level=opt_level)
    origin = origin or {"source": "compile-db", "path": str(Path(compile_db).resolve())}
    summary = _run_tasks(tasks, out_dir, summary, jobs=jobs, timeout=timeout, progress=progress,
                         opt_level=opt_level, origins={project: origin})
    # Reported and counted as failures (so the command exits non-zero), after the run: they
    # name no module, so they stay out of the corpus's per-module failures file.
    summary.failed.extend(Failure(f"entry {i}", f"{compile_db} entry {i}", why)
                          for i, why in malformed)
    return summary


# ---------------------------------------------------------------------------------------------
# Plain source trees


def extract_sources(
    src_dir: Path | str, out_dir: Path | str, *, project: str | None = None,
    flags: Sequence[str] = (), codegen_flags: Sequence[str] = ("-O2",), jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT, progress: bool = True, opt_level: str | None = None,
) -> ExtractSummary:
    """Compile every C/C++ file under `src_dir` with the preprocessor `flags` (-I, -D ...)
    and `codegen_flags`, whose level `opt_level` replaces when given, and record
    `-c <codegen_flags>` as each module's .cmd."""
    if opt_level is not None:
        codegen_flags = replace_opt_level(codegen_flags, opt_level)
    src_dir = Path(src_dir).resolve()
    if not src_dir.is_dir():
        raise CorpusError(f"{src_dir}: not a directory")
    project = project or src_dir.name
    summary = ExtractSummary(Path(out_dir))
    sources = sorted(p for p in src_dir.rglob("*")
                     if p.suffix in SOURCE_EXTENSIONS and p.is_file())
    tasks = []
    for src in sources:
        cxx = src.suffix in CXX_EXTENSIONS
        compiler = (toolchain.clangxx() if cxx else toolchain.clang()).path
        argv = (compiler, *flags, *codegen_flags, *STOP_BEFORE_PASSES, "-c", str(src))
        tasks.append(ExtractTask(module_name(project, src.relative_to(src_dir)), project,
                                 str(src), argv, str(src.parent), ("-c", *codegen_flags)))
    origin = {"source": "sources", "path": str(src_dir), "flags": list(flags)}
    return _run_tasks(tasks, Path(out_dir), summary, jobs=jobs, timeout=timeout,
                      progress=progress, opt_level=opt_level, origins={project: origin})


# ---------------------------------------------------------------------------------------------
# Objects with embedded bitcode


def extract_objects(
    obj_dir: Path | str, out_dir: Path | str, *, project: str | None = None, jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT, progress: bool = True, opt_level: str | None = None,
) -> ExtractSummary:
    """Dump the bitcode and cc1 command embedded (-Xclang -fembed-bitcode=all) in every .o
    under `obj_dir`. Module names come from the object's path relative to `obj_dir`. The
    embedded IR is the build's own, so it cannot be re-emitted at another level: with
    `opt_level`, an object whose embedded command has another level is a reported failure."""
    obj_dir = Path(obj_dir).resolve()
    if not obj_dir.is_dir():
        raise CorpusError(f"{obj_dir}: not a directory")
    project = project or obj_dir.name
    objects = sorted(p for p in obj_dir.rglob("*.o") if p.is_file())
    tasks = [ExtractTask(module_name(project, o.relative_to(obj_dir)), project, str(o),
                         object_path=str(o), required_level=opt_level or "")
             for o in objects]
    return _run_tasks(tasks, Path(out_dir), ExtractSummary(Path(out_dir)), jobs=jobs,
                      timeout=timeout, progress=progress, opt_level=opt_level,
                      origins={project: {"source": "objects", "path": str(obj_dir)}})


def clean_cc1_args(args: Sequence[str]) -> list[str]:
    """Embedded cc1 args minus the re-embedding flag and anything naming an input/output."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in _CC1_DROP_WITH_VALUE:
            i += 2
            continue
        i += 1
        if a in _CC1_DROP_ALONE or a.startswith(_CC1_DROP_PREFIXES):
            continue
        out.append(a)
    if not out or out[0] != "-cc1":
        raise _TaskFailed(f"embedded command does not start with -cc1: {' '.join(args[:3])!r}")
    return out


def _dump_embedded(obj: Path, tmp_dir: Path, timeout: float) -> tuple[Path, list[str]]:
    bc = tmp_dir / "embedded.bc"
    cmd = tmp_dir / "embedded.cmd"
    argv = [toolchain.objcopy().path, f"--dump-section=.llvmbc={bc}",
            f"--dump-section=.llvmcmd={cmd}", str(obj), str(tmp_dir / "scratch.o")]
    try:
        res = run_with_timeout(argv, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise _TaskFailed(f"llvm-objcopy timed out after {timeout:g} s") from e
    if res.returncode != 0:
        raise _TaskFailed("llvm-objcopy could not dump .llvmbc/.llvmcmd (was the object built "
                          "with -Xclang -fembed-bitcode=all?)", res.stderr)
    raw = cmd.read_bytes()
    try:
        args = [a for a in raw.decode().split("\0") if a]
    except UnicodeDecodeError as e:
        raise _TaskFailed(".llvmcmd section is not UTF-8 text") from e
    return bc, clean_cc1_args(args)


def _check_embedded_level(cc1_args: Sequence[str], wanted: str) -> None:
    levels = opt_levels_in(cc1_args)
    found = levels[-1] if levels else "-O0"
    if found != wanted:
        raise _TaskFailed(
            f"built at {found}, not {wanted}: its embedded IR is that build's; rebuild the "
            f"object at {wanted} (with -Xclang -fembed-bitcode=all) or extract with "
            "--opt-level keep")


# ---------------------------------------------------------------------------------------------
# The shared pipeline


def _produce(task: ExtractTask, out_dir: Path, timeout: float) -> _Produced:
    """Make the bitcode of one task into a temp file inside `out_dir` (same filesystem, so
    the final step is a rename)."""
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".extract.", suffix=".bc.tmp")
    os.close(fd)
    tmp_bc = Path(tmp_name)
    try:
        if task.object_path:
            with tempfile.TemporaryDirectory(prefix="mlgo-objcopy-") as td:
                bc, cmd = _dump_embedded(Path(task.object_path), Path(td), timeout)
                if task.required_level:
                    _check_embedded_level(cmd, task.required_level)
                shutil.move(bc, tmp_bc)
        else:
            argv = [*task.compile_argv, "-o", str(tmp_bc)]
            try:
                res = run_with_timeout(argv, cwd=task.cwd or None, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise _TaskFailed(f"compiler timed out after {timeout:g} s") from e
            except OSError as e:
                raise _TaskFailed(f"cannot run the compiler: {e}") from e
            if res.returncode != 0:
                raise _TaskFailed(f"compiler exited with status {res.returncode}", res.stderr)
            cmd = list(task.recompile_args)
        with open(tmp_bc, "rb") as f:
            head = f.read(4)
        if not _is_bitcode(head):
            raise _TaskFailed("output is not LLVM bitcode (empty or truncated)")
        return _Produced(tmp_bc, tuple(cmd), file_sha256(tmp_bc))
    except OSError as e:
        tmp_bc.unlink(missing_ok=True)
        raise _TaskFailed(f"{e.filename or task.source}: {e.strerror or e}") from e
    except BaseException:
        tmp_bc.unlink(missing_ok=True)
        raise


def _read_existing_description(out_dir: Path) -> dict:
    path = out_dir / DESCRIPTION
    if not path.exists():
        return {}
    try:
        desc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: exists but is not valid JSON ({e}); "
                          "remove it or choose another output directory") from e
    if not isinstance(desc, dict) or not isinstance(desc.get("modules", []), list):
        raise CorpusError(f"{path}: exists but is not a corpus description")
    return desc


def _check_same_level(out_dir: Path, desc: dict, level: str) -> None:
    """One corpus, one level and one LLVM version: adding IR of another level or compiler
    would mix builds nobody makes."""
    if not desc.get("modules"):
        return
    check_adding_to(desc, out_dir / DESCRIPTION)
    recorded = desc.get("opt_level")
    if recorded is None:
        raise CorpusError(
            f"{out_dir / DESCRIPTION}: this corpus records no optimization level (extracted "
            f"before levels were recorded); extract at {level} into a new directory")
    if recorded != level:
        raise CorpusError(
            f"{out_dir / DESCRIPTION}: this corpus holds IR at {recorded}, not {level}; "
            "extract into another directory (one corpus, one level)")


def _read_failures(out_dir: Path) -> list[dict]:
    path = out_dir / FAILURES_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: not valid JSON ({e}); delete it to start a fresh list") from e
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a list of failures; delete it to start afresh")
    return [f for f in data if isinstance(f, dict)]


def _has_module(out_dir: Path, name: str) -> bool:
    return (out_dir / (name + ".bc")).is_file() and (out_dir / (name + ".cmd")).is_file()


def _run_tasks(
    tasks: Sequence[ExtractTask], out_dir: Path, summary: ExtractSummary, *, jobs: int,
    timeout: float, progress: bool, opt_level: str | None = None,
    origins: dict[str, dict] | None = None,
) -> ExtractSummary:
    level = opt_level or KEEP_LEVEL
    summary.opt_level = level
    out_dir.mkdir(parents=True, exist_ok=True)
    desc = _read_existing_description(out_dir)
    _check_same_level(out_dir, desc, level)
    all_origins: dict[str, dict] = {**(desc.get("origins") or {}), **(origins or {})}
    modules: list[str] = [m for m in desc.get("modules", []) if _has_module(out_dir, m)]
    projects: dict[str, str] = dict(desc.get("projects") or {})
    known_dups: dict[str, str] = dict(desc.get("duplicates") or {})
    # Hashes of the modules already in the corpus, so that dedup spans runs and projects.
    by_digest: dict[str, str] = {}
    for m in modules:
        by_digest.setdefault(file_sha256(out_dir / (m + ".bc")), m)

    listed = set(modules)
    todo: list[ExtractTask] = []
    for t in tasks:
        if _has_module(out_dir, t.module):
            summary.skipped_existing.append(t.module)
            if t.module not in listed:  # left by an interrupted run
                modules.append(t.module)
                listed.add(t.module)
                by_digest.setdefault(file_sha256(out_dir / (t.module + ".bc")), t.module)
            projects[t.module] = t.project
        elif t.module in known_dups and _has_module(out_dir, known_dups[t.module]):
            summary.duplicates[t.module] = known_dups[t.module]
        else:
            todo.append(t)

    def finish() -> None:
        write_description(out_dir, modules, projects, opt_level=level,
                          llvm_version=toolchain.llvm_major(), origins=all_origins,
                          **({"duplicates": known_dups} if known_dups else {}))
        # Failures of earlier runs into this corpus (e.g. other projects) stay listed unless
        # this run attempted the same module again.
        attempted = {t.module for t in tasks}
        kept = [f for f in _read_failures(out_dir) if f.get("module") not in attempted]
        atomic_write_text(out_dir / FAILURES_FILE, json.dumps(
            kept + [f.to_json() for f in summary.failed], indent=1) + "\n")

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="mod", file=sys.stderr, disable=not progress,
               desc="extract")
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures: list[Future] = []
            for t in todo:
                fut = pool.submit(_produce, t, out_dir, timeout)
                fut.add_done_callback(lambda _f: bar.update(1))
                futures.append(fut)
            try:
                # Results are taken in task order so that dedup keeps the same module
                # whatever the completion order.
                for t, fut in zip(todo, futures, strict=True):
                    _take_result(t, fut, out_dir, summary, modules, projects, by_digest,
                                 known_dups, bar)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.close()
        _remove_temp_files(out_dir)
        finish()
    return summary


def _take_result(t: ExtractTask, fut: Future, out_dir: Path, summary: ExtractSummary,
                 modules: list[str], projects: dict[str, str], by_digest: dict[str, str],
                 known_dups: dict[str, str], bar) -> None:
    try:
        produced: _Produced = fut.result()
    except _TaskFailed as e:
        failure = Failure(t.module, t.source, e.reason, e.stderr)
        summary.failed.append(failure)
        first = e.stderr.strip().splitlines()[:1]
        bar.write(f"FAILED {t.source}: {e.reason}" + (f": {first[0]}" if first else ""),
                  file=sys.stderr)
        return
    kept = by_digest.get(produced.digest)
    if kept is not None:
        produced.tmp_bc.unlink(missing_ok=True)
        summary.duplicates[t.module] = kept
        known_dups[t.module] = kept
        return
    bc_path = out_dir / (t.module + ".bc")
    bc_path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(produced.tmp_bc, bc_path)
    atomic_write_bytes(out_dir / (t.module + ".cmd"), "\0".join(produced.cmd).encode())
    by_digest[produced.digest] = t.module
    if t.module not in modules:
        modules.append(t.module)
    projects[t.module] = t.project
    summary.extracted.append(t.module)


def _remove_temp_files(out_dir: Path) -> None:
    for p in out_dir.glob(".extract.*.bc.tmp"):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Checking and merging


@dataclass
class CheckSummary:
    corpus_dir: Path
    ok: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{self.corpus_dir}: {len(self.ok)} modules recompile, "
                 f"{len(self.failed)} fail"]
        for f in self.failed:
            first = f.stderr.strip().splitlines()[:1]
            lines.append(f"  FAILED {f.module}: {f.reason}" + (f": {first[0]}" if first else ""))
        return "\n".join(lines)


def _recompile(module, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mlgo-check-") as td:
        obj = Path(td) / "module.o"
        argv = [toolchain.clang().path, *module.compile_args(), "-o", str(obj)]
        try:
            res = run_with_timeout(argv, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise _TaskFailed(f"compiler timed out after {timeout:g} s") from e
        if res.returncode != 0:
            raise _TaskFailed(f"compiler exited with status {res.returncode}", res.stderr)
        with open(obj, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise _TaskFailed("compiler output is not an ELF object")


def check_corpus(corpus_dir: Path | str, *, modules: Iterable[str] | None = None, jobs: int = 1,
                 timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> CheckSummary:
    """Recompile every module (`clang-19 <.cmd> -x ir M.bc -o M.o`), or only `modules`, and
    collect failures."""
    corpus = Corpus.load(corpus_dir)
    check_llvm_version(corpus)  # recompiled by another clang, it is not the corpus's build
    if modules is not None:
        wanted = set(modules)
        unknown = wanted - {m.name for m in corpus.modules}
        if unknown:
            raise CorpusError(f"{corpus_dir}: not in the corpus: {sorted(unknown)[:5]}")
        corpus = corpus.subset(wanted)
    summary = CheckSummary(Path(corpus_dir))
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(corpus), unit="mod", file=sys.stderr, disable=not progress,
                 desc="check") as bar:
        futures = {}
        for m in corpus.modules:
            fut = pool.submit(_recompile, m, timeout)
            fut.add_done_callback(lambda _f: bar.update(1))
            futures[m.name] = fut
        for name, fut in futures.items():
            try:
                fut.result()
                summary.ok.append(name)
            except _TaskFailed as e:
                summary.failed.append(Failure(name, name, e.reason, e.stderr))
            except CorpusError as e:
                summary.failed.append(Failure(name, name, str(e)))
    return summary


@dataclass
class MergeSummary:
    out_dir: Path
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    def format(self) -> str:
        return (f"{self.out_dir}: {len(self.added)} modules added, "
                f"{len(self.already_present)} already present, "
                f"{len(self.duplicates)} duplicates (identical bitcode) dropped")


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.merge.tmp")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.link(src, tmp)
        except OSError as e:
            # EXDEV: another filesystem; EPERM: links not allowed there. Copy instead, as
            # documented for `link=True`.
            if e.errno not in (errno.EXDEV, errno.EPERM):
                raise
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_corpora(inputs: Iterable[Path | str], out_dir: Path | str, *, link: bool = True,
                  progress: bool = False, keep_projects: Collection[str] | None = None,
                  drop_projects: Collection[str] = ()) -> MergeSummary:
    """Union of several corpora into `out_dir` (which may already hold a corpus).

    Files are hard-linked when possible (`link`), else copied. Bitcode already present
    under another name is dropped as a duplicate; the same name with different content
    (bitcode or command) in two inputs is an error. `keep_projects` (if given) keeps only those
    projects of the inputs and `drop_projects` drops some: how a training, validation or
    held-out corpus is cut from whole ones. A named project no input holds is an error (a typo
    would otherwise leave a held-out project in training)."""
    inputs = [Path(i) for i in inputs]
    out_dir = Path(out_dir)
    corpora = [Corpus.load(i) for i in inputs]
    named = set(keep_projects or ()) | set(drop_projects)
    unknown = sorted(named - {m.project for c in corpora for m in c.modules})
    if unknown:
        raise CorpusError(f"no input corpus ({', '.join(map(str, inputs))}) holds project(s) "
                          f"{', '.join(unknown)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = MergeSummary(out_dir)
    desc = _read_existing_description(out_dir)
    modules: list[str] = []
    projects: dict[str, str] = {}
    origin: dict[str, str] = {}
    by_digest: dict[str, str] = {}
    # The merged corpus keeps one level: the first non-empty corpus's, which every other must
    # share (one corpus, one level; see _check_same_level).
    level: str | None = desc.get("opt_level") if desc.get("modules") else None
    level_from = str(out_dir)
    # And one LLVM version (corpus_tools/corpus.py): the existing output's, else the first
    # non-empty input's.
    version: int | None = (recorded_llvm_version(desc, out_dir / DESCRIPTION)
                           if desc.get("modules") else None)
    version_from = str(out_dir)
    origins: dict[str, dict] = dict(desc.get("origins") or {})
    if desc:
        existing = Corpus.load(out_dir)
        for m in existing.modules:
            modules.append(m.name)
            projects[m.name] = m.project
            origin[m.name] = str(out_dir)
            by_digest.setdefault(file_sha256(m.bc_path), m.name)
    digest_of = {name: d for d, name in by_digest.items()}
    for inp, corpus in zip(inputs, corpora, strict=True):
        if inp.resolve() == out_dir.resolve():
            continue
        corpus.modules = [m for m in corpus.modules if m.project not in drop_projects
                          and (keep_projects is None or m.project in keep_projects)]
        if corpus.modules:
            if version is None:
                version, version_from = corpus.llvm_version, str(inp)
            elif corpus.llvm_version != version:
                raise CorpusError(
                    f"{inp} holds IR of LLVM {corpus.llvm_version} but {version_from} of LLVM "
                    f"{version}: corpora of different LLVM versions cannot be merged")
            # A corpus that records no level (made by hand or before levels were recorded)
            # makes the merged one unrecorded too; the problems still check the IR itself.
            theirs = corpus.opt_level or "unrecorded"
            if level is None or "unrecorded" in (level, theirs):
                if level != "unrecorded":
                    level, level_from = theirs, str(inp)
            elif theirs != level:
                raise CorpusError(
                    f"{inp} holds IR at {theirs} but {level_from} at {level}: corpora of "
                    "different optimization levels cannot be merged (one corpus, one level)")
        kept_projects = {m.project for m in corpus.modules}
        origins.update((p, o) for p, o in (corpus.extra.get("origins") or {}).items()
                       if p in kept_projects)
        for m in corpus.modules:
            digest = file_sha256(m.bc_path)
            if m.name in origin:
                out_bc = out_dir / (m.name + ".bc")
                same = (digest_of.get(m.name) or file_sha256(out_bc)) == digest and \
                    (out_dir / (m.name + ".cmd")).read_bytes() == m.cmd_path.read_bytes()
                if not same:
                    raise CorpusError(
                        f"module {m.name!r} is in both {origin[m.name]} and {inp} with "
                        "different bitcode or command; rename one project before merging")
                summary.already_present.append(m.name)
                continue
            kept = by_digest.get(digest)
            if kept is not None:
                summary.duplicates[m.name] = kept
                continue
            # Names were checked at load; this also catches a symlink inside the output.
            dest = (out_dir / m.name).parent.resolve()
            if not dest.is_relative_to(out_dir.resolve()):
                raise CorpusError(f"{out_dir / m.name}: leads outside {out_dir} (to {dest}); "
                                  "refusing to write there")
            _link_or_copy(m.bc_path, out_dir / (m.name + ".bc"), link)
            _link_or_copy(m.cmd_path, out_dir / (m.name + ".cmd"), link)
            modules.append(m.name)
            projects[m.name] = m.project
            origin[m.name] = str(inp)
            by_digest[digest] = m.name
            digest_of[m.name] = digest
            summary.added.append(m.name)
    extra: dict = {"origins": origins} if origins else {}
    if level is not None and level != "unrecorded":
        extra["opt_level"] = level
    if version is not None:
        extra["llvm_version"] = version
    write_description(out_dir, modules, projects, **extra)
    return summary

