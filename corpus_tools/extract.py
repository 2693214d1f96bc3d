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

All three make a list of tasks for the shared pipeline of corpus_tools/extract_pipeline.py.
`check_corpus` (corpus_tools/check.py) recompiles every module with its .cmd; `merge_corpora`
(corpus_tools/merge.py) joins corpora.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corpus_tools.corpus import replace_opt_level
from corpus_tools.extract_pipeline import (
    CXX_EXTENSIONS,
    DEFAULT_TIMEOUT,
    SOURCE_EXTENSIONS,
    STOP_BEFORE_PASSES,
    ExtractSummary,
    ExtractTask,
    Failure,
    module_name,
    run_tasks,
)
from mlgo_base import process, toolchain
from mlgo_base.errors import CorpusError

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

# Actions under which a recorded command produces no object.
_NOT_COMPILING = frozenset({"-E", "-M", "-MM", "-fsyntax-only"})

_SILENCE_UNKNOWN_WARNINGS = frozenset({"-Wno-unknown-warning-option"})

# Compiles a build system runs to probe the compiler, not part of the project.
DEFAULT_EXCLUDES = ("*CMakeFiles/*", "*conftest.c", "*conftest.cpp", "*conftest.cc",
                    "*/meson-private/*", "meson-private/*")
# Sources outside the root get relative paths under this prefix (see _relative_source).
OUTSIDE_ROOT = "_outside"
OUTSIDE_ROOT_PATTERN = OUTSIDE_ROOT + "/*"

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
    compiles = []
    for e in entries:
        if not is_compile(e.arguments):
            # Before the one-module-per-source rule: a `-cc1 -Eonly` of a source recorded
            # before its compile must not take that source's place.
            if summary is not None:
                summary.not_compiles.append(str(e.file))
            continue
        compiles.append(e)
    unknown = unknown_warning_options(compiles)
    if summary is not None:
        summary.dropped_warnings = sorted(unknown)
    for e in compiles:
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
        frontend = [a for a in frontend if a not in unknown]
        if opt_level is not None:
            frontend = replace_opt_level(frontend, opt_level)
            recompile = replace_opt_level(recompile, opt_level)
        cxx = _is_cxx(e.arguments[0], str(e.file), e.arguments[1:])
        compiler = (toolchain.clangxx() if cxx else toolchain.clang()).path
        argv = (compiler, *frontend, *STOP_BEFORE_PASSES, "-c", str(e.file))
        tasks.append(ExtractTask(name, project, str(e.file), argv, str(e.directory),
                                 tuple(recompile)))
    return tasks


def is_compile(argv: Sequence[str]) -> bool:
    """Whether a recorded command compiles its input: not one that only preprocesses
    (-E, -M, -MM) or checks it (-fsyntax-only), and not a compiler's internal step (`clang
    -cc1 ...`, which the driver runs as a process of its own for some jobs, and `-cc1as`)."""
    args = argv[1:]
    if args and args[0].startswith("-cc1"):
        return False
    return not any(a in _NOT_COMPILING for a in args)


def unknown_warning_options(entries: Sequence[CompileEntry]) -> set[str]:
    """The -W options of these compiles that clang-19 does not know (GCC's -Wclobbered,
    -Werror=clobbered ...), found by one clang run over all of them."""
    # Without the options that silence the report (a Debian build adds one: debian.py).
    options = sorted({a for e in entries for a in e.arguments[1:]
                      if a.startswith("-W") and not a.startswith(("-Wa,", "-Wl,", "-Wp,"))
                      and a not in _SILENCE_UNKNOWN_WARNINGS})
    if not options:
        return set()
    argv = [toolchain.clang().path, "-ferror-limit=0", *options, "-fsyntax-only", "-x", "c",
            "-"]
    try:
        res = process.run(argv, what="check warning options", timeout=DEFAULT_TIMEOUT,
                          input="", check=False)
    except process.ProcessError as e:
        raise CorpusError(str(e)) from e
    named = set(re.findall(r"unknown warning option '([^']+)'", res.stderr))
    return named & set(options)


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
    summary = run_tasks(tasks, out_dir, summary, jobs=jobs, timeout=timeout, progress=progress,
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
    return run_tasks(tasks, Path(out_dir), summary, jobs=jobs, timeout=timeout,
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
    return run_tasks(tasks, Path(out_dir), ExtractSummary(Path(out_dir)), jobs=jobs,
                      timeout=timeout, progress=progress, opt_level=opt_level,
                      origins={project: {"source": "objects", "path": str(obj_dir)}})

