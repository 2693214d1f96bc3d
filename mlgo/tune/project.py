"""The project being tuned: its two builds (plain clang-19 -Oz and -Oz with the plugin), which of
its compiles are tuned, the sizes the builds produce, and its tests.

Two kinds of input:
  * a CMake source directory: configured and built here (MinSizeRel with clang-19 and lld, the
    build types' flags set to -Oz, compile_commands.json exported), then once more with the
    plugin's initial-cache file (mlgo/serving/cmake.py). Sizes are of the real linked
    executables and shared libraries of the two build trees, and of each object file;
  * a compile_commands.json from any build system: each of its C/C++ compiles is rerun here
    at -Oz, without and with the plugin, into OUT/objects/; sizes are per object (no link
    commands are known). Its level must be settable: a compile whose options are in a response
    file, or whose compiler is not a GCC/Clang-style driver, is refused.

Which compiles are tuned: paths relative to the source root, matched against --include globs
(when given, only matching ones) and --exclude globs; by default tests are left out: a path with
a directory named test, tests, testing, unittest or unittests (TEST_DIRS), or a file named test_*,
or *_NAME.* for one of those names (foo_test.cc, foo_unittest.cc)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from corpus_tools.corpus import opt_levels_in, replace_opt_level
from corpus_tools.extract import (
    SOURCE_EXTENSIONS,
    CompileEntry,
    _common_root,
    _is_cxx,
    read_compile_db,
    split_compile_args,
)
from mlgo_base import process, toolchain
from mlgo_base.errors import MlgoError

TEST_DIRS = frozenset({"test", "tests", "testing", "unittest", "unittests"})
LEVEL = "-Oz"
_DRIVER = re.compile(r"(.*-)?(cc|c\+\+|gcc|g\+\+|clang|clang\+\+)(-\d+(\.\d+)*)?")
_LAUNCHERS = ("ccache", "sccache", "distcc", "icecc")


def is_test_path(relative: str) -> bool:
    """A source of the project's tests (see the module docstring)."""
    parts = Path(relative).parts
    if any(p.lower() in TEST_DIRS for p in parts[:-1]):
        return True
    stem = Path(relative).stem.lower()
    return (stem.startswith("test_") or stem in TEST_DIRS
            or any(stem.endswith("_" + d) for d in TEST_DIRS))


def selected(relative: str, include: Sequence[str], exclude: Sequence[str],
             include_tests: bool = False) -> bool:
    """Whether the compile of `relative` (a path under the source root) is tuned."""
    if include and not any(fnmatch.fnmatchcase(relative, g) for g in include):
        return False
    if any(fnmatch.fnmatchcase(relative, g) for g in exclude):
        return False
    return include_tests or not is_test_path(relative)


@dataclass(frozen=True)
class Source:
    """One C/C++ compile of the build: its entry, its path under the root (None outside it)."""

    entry: CompileEntry
    relative: str | None
    index: int

    @property
    def cxx(self) -> bool:
        return _is_cxx(self.entry.arguments[0], str(self.entry.file), self.entry.arguments[1:])


def sources(db: Path, root: Path | None = None) -> tuple[list[Source], Path]:
    """The C/C++ compiles of `db`, first compile of each file only, and the root their
    relative paths are under (default: the deepest directory holding all of them)."""
    entries = read_compile_db(db)
    c = [e for e in entries if e.file.suffix in SOURCE_EXTENSIONS]
    if not c:
        raise MlgoError(f"{db}: no C or C++ compile in the compilation database")
    root = (root or _common_root([e.file for e in c]) or Path("/")).resolve()
    out, seen = [], set()
    for i, e in enumerate(entries):
        if e.file.suffix not in SOURCE_EXTENSIONS or e.file in seen:
            continue
        seen.add(e.file)
        try:
            rel: str | None = Path(os.path.realpath(e.file)).relative_to(root).as_posix()
        except ValueError:
            rel = None
        out.append(Source(e, rel, i))
    return out, root


def level_problem(entry: CompileEntry) -> str | None:
    """Why this compile's optimization level cannot be replaced by -Oz, or None."""
    argv = list(entry.arguments)
    while argv and os.path.basename(argv[0]) in _LAUNCHERS:
        argv = argv[1:]
    if not argv:
        return "has no compiler"
    name = os.path.basename(argv[0])
    if not _DRIVER.fullmatch(name):
        return f"is compiled by {name}, not a GCC/Clang-style driver"
    for i, a in enumerate(argv[1:], 1):
        if a.startswith("@"):
            return f"passes options in a response file ({a})"
        if a == "-Xclang" and i + 1 < len(argv) and argv[i + 1].startswith("-O"):
            return f"sets the level behind -Xclang ({argv[i + 1]})"
        if re.fullmatch(r"/O[0-9a-z]*", a):
            return f"uses an MSVC-style level ({a})"
    return None


def check_levels_settable(db: Path, chosen: Sequence[Source]) -> None:
    for s in chosen:
        why = level_problem(s.entry)
        if why:
            raise MlgoError(f"{db}: the compile of {s.entry.file} (entry {s.index}) {why}: its "
                            f"optimization level cannot be set to {LEVEL}")


def check_built_at_oz(db: Path, chosen: Sequence[Source]) -> None:
    """The CMake build's compiles must end at -Oz (a project that adds its own -O2 after
    CMake's flags builds something else than what is tuned)."""
    for s in chosen:
        levels = opt_levels_in(s.entry.arguments[1:])
        if not levels or levels[-1] != LEVEL:
            raise MlgoError(f"{db}: {s.entry.file} is compiled at {levels[-1] if levels else 'no -O level'}"
                            f", not {LEVEL} (the project sets its own level); its level cannot be set")


def object_of(entry: CompileEntry) -> Path | None:
    """The object file a compile writes (its -o), absolute."""
    args = entry.arguments
    for i, a in enumerate(args):
        out = args[i + 1] if a == "-o" and i + 1 < len(args) else a[2:] if a.startswith("-o") and len(a) > 2 else None
        if out:
            p = Path(out)
            return p if p.is_absolute() else entry.directory / p
    return None


# -- CMake ----------------------------------------------------------------------------------
def owned_cmake_variables(build_types: Sequence[str]) -> frozenset[str]:
    """The CMake variables mlgo's own builds set (compilers, flags with the level and the plugin,
    the linker, the build type), with the flags of `build_types`: a --cmake-arg setting one
    would replace mlgo's value in one build or both, so the builds compared would no longer
    differ by the policy alone."""
    from mlgo.serving.cmake import LANGUAGES, LINK_KINDS

    names = {"CMAKE_BUILD_TYPE", "CMAKE_EXPORT_COMPILE_COMMANDS"}
    for lang in LANGUAGES:
        names |= {f"CMAKE_{lang}_COMPILER", f"CMAKE_{lang}_FLAGS"}
        names |= {f"CMAKE_{lang}_FLAGS_{t}" for t in build_types}
    names |= {f"CMAKE_{kind}_LINKER_FLAGS" for kind in LINK_KINDS}
    return frozenset(names)


def cmake_definitions(argv: Sequence[str]) -> list[tuple[str, str, str]]:
    """The -D definitions of a CMake command line, in order: (argument, name, value), for
    `-DNAME=VALUE`, `-DNAME:TYPE=VALUE` and `-D NAME=VALUE`."""
    args = list(argv)
    found = []
    for i, arg in enumerate(args):
        if arg == "-D" and i + 1 < len(args):
            definition = args[i + 1]
        elif arg.startswith("-D") and len(arg) > 2:
            definition = arg[2:]
        else:
            continue
        head, _, value = definition.partition("=")
        found.append((arg, head.split(":", 1)[0].strip(), value))
    return found


def last_build_type(configure: Sequence[str], default: str) -> str:
    """The build type a CMake command line sets (the last -DCMAKE_BUILD_TYPE wins), or
    `default`."""
    return next((value for _, name, value in reversed(cmake_definitions(configure))
                 if name == "CMAKE_BUILD_TYPE"), default)


def check_cmake_args(cmake_args: Sequence[str], build_type: str,
                     owned: frozenset[str]) -> None:
    """Refuse, in one line, a --cmake-arg that defines one of `owned` (owned_cmake_variables).
    Extra link flags have a variable of their own that CMake appends for the build type
    (`build_type`, or the one the arguments set where that is allowed)."""
    build_type = last_build_type(cmake_args, build_type)
    for arg, name, _ in cmake_definitions(cmake_args):
        if name not in owned:
            continue
        hint = ""
        if name.endswith("_LINKER_FLAGS"):
            hint = (f"; for extra link flags use --cmake-arg=-D{name}_{build_type.upper()}=..., "
                    "which CMake adds after mlgo's")
        raise MlgoError(f"--cmake-arg {arg}: mlgo sets {name} in its builds itself; this would "
                        f"replace it, and the builds compared would differ by more than the "
                        f"policy{hint}")


def plain_cache_text() -> str:
    """The initial-cache file of the plain build: what `mlgo cmake-flags` sets, minus the plugin."""
    from mlgo.serving.cmake import BUILD_TYPE_FLAGS, LANGUAGES, LINK_KINDS

    compilers = {"C": toolchain.locate("clang"), "CXX": toolchain.locate("clang++")}
    lines = ["# mlgo tune: the plain clang-19 -Oz build (no plugin)"]
    for lang in LANGUAGES:
        lines.append(f'set(CMAKE_{lang}_COMPILER "{compilers[lang]}" CACHE FILEPATH "")')
        for build_type, flags in BUILD_TYPE_FLAGS.items():
            lines.append(f'set(CMAKE_{lang}_FLAGS_{build_type} "{flags}" CACHE STRING "")')
    lines += [f'set(CMAKE_{kind}_LINKER_FLAGS "-fuse-ld=lld" CACHE STRING "")' for kind in LINK_KINDS]
    return "\n".join(lines) + "\n"


def cmake_build(src: Path, build: Path, init_cache: Path, cmake_args: Sequence[str], log: Path,
                *, jobs: int, timeout: float) -> Path:
    """Configure and build `src` into `build`; returns its compile_commands.json."""
    if not (src / "CMakeLists.txt").is_file():
        raise MlgoError(f"{src}: no CMakeLists.txt (give a CMake source directory or a "
                        "compile_commands.json)")
    return configure_and_build(
        ["cmake", "-C", str(init_cache), "-DCMAKE_BUILD_TYPE=MinSizeRel",
         "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *cmake_args, "-S", str(src), "-B", str(build)],
        src, build, log, jobs=jobs, timeout=timeout)


def configure_and_build(configure: Sequence[str], src: Path, build: Path, log: Path, *,
                        jobs: int, timeout: float, env: dict[str, str] | None = None,
                        label: str = "") -> Path:
    """Run the CMake `configure` command, then build `build`, both logged to `log`; a failure
    is one line with the log's first error. Returns the build's compile_commands.json."""
    suffix = f" ({label})" if label else ""
    build_type = last_build_type(configure, "MinSizeRel")
    log.parent.mkdir(parents=True, exist_ok=True)
    for what, argv in ((f"configuring {src}{suffix}", list(configure)),
                       (f"building {build}{suffix}",
                        ["cmake", "--build", str(build), "-j", str(jobs)])):
        with open(log, "a") as f:
            try:
                process.run(argv, what=what, timeout=timeout, env=env, stdout=f, stderr=f)
            except process.ProcessError as e:
                raise MlgoError(f"{what} failed ({e.reason}){_first_error(log, build_type)}; "
                                f"the whole output is in {log}") from None
    db = build / "compile_commands.json"
    if not db.is_file():
        raise MlgoError(f"{build}: CMake wrote no compile_commands.json")
    return db


# lld (unlike GNU ld) refuses a version script that names a symbol the library lacks.
_UNDEFINED_VERSION = re.compile(r"version script assignment of .* failed: symbol not defined")


def _first_error(log: Path, build_type: str = "MinSizeRel") -> str:
    """': <the first error line of the log>', or '', with what to do where there is one."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    first = next((x.strip() for x in lines if "error:" in x.lower() or "error at" in x.lower()),
                 None)
    if not first:
        return ""
    hint = ""
    if _UNDEFINED_VERSION.search(first):
        hint = (" (lld, which mlgo's builds link with, refuses that where GNU ld does not: "
                f"--cmake-arg=-DCMAKE_SHARED_LINKER_FLAGS_{build_type.upper()}"
                "=-Wl,--undefined-version lets it link)")
    return f": {first[:300]}{hint}"


# -- a compile database's compiles, redone ----------------------------------------------------
def recompile(chosen: Sequence[Source], objects: Path, flags: Sequence[str], log: Path, *,
              jobs: int, timeout: float, root: Path) -> dict[str, Path]:
    """Each compile again with clang-19 at -Oz plus `flags`, into `objects`; {relative: object}."""
    objects.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)

    def one(s: Source) -> tuple[str, Path]:
        frontend, _ = split_compile_args(s.entry)
        cc = (toolchain.clangxx() if s.cxx else toolchain.clang()).path
        rel = s.relative or f"_outside{s.entry.file}"
        obj = objects / (rel + ".o")
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_name(f".{obj.name}.tmp")
        with open(log, "a") as f:
            process.run([cc, *replace_opt_level(frontend, LEVEL), *flags, "-c", str(s.entry.file),
                         "-o", str(tmp)], what=f"compiling {s.entry.file}", timeout=timeout,
                        cwd=s.entry.directory, stdout=f, stderr=f)
        os.replace(tmp, obj)
        return rel, obj

    with ThreadPoolExecutor(max(1, jobs)) as ex:
        return dict(ex.map(one, chosen))


# -- sizes ------------------------------------------------------------------------------------
def _elf_type(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return None
    if len(head) < 18 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")


def linked_binaries(build: Path) -> dict[str, int]:
    """.text bytes of every executable and shared library of a build tree (CMake's own probes
    under CMakeFiles/ left out), by path relative to the tree."""
    from mlgo.compiler.measure import text_size

    out = {}
    for p in sorted(build.rglob("*")):
        rel = p.relative_to(build)
        if "CMakeFiles" in rel.parts or p.is_symlink() or not p.is_file():
            continue
        if _elf_type(p) in (2, 3):  # ET_EXEC, ET_DYN
            out[rel.as_posix()] = int(text_size(p))
    return out


def object_sizes(chosen: Sequence[Source]) -> dict[str, int]:
    """.text bytes of each compile's object as the build wrote it, by relative source path."""
    from mlgo.compiler.measure import text_size

    out = {}
    for s in chosen:
        obj = object_of(s.entry)
        if s.relative is not None and obj is not None and obj.is_file():
            out[s.relative] = int(text_size(obj))
    return out


def is_test_binary(relative: str) -> bool:
    name = Path(relative).name.lower()
    return "test" in name or any(p.lower() in TEST_DIRS for p in Path(relative).parts[:-1])


# -- the project's tests ----------------------------------------------------------------------
def run_tests(command: str, cwd: Path, log: Path, label: str, timeout: float) -> float:
    """Run `command` (a shell command) in `cwd`; one MlgoError line if it fails. Its seconds."""
    import time

    t0 = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "w") as f:
            process.run(["sh", "-c", command], what="tests", timeout=max(timeout, 1.0), cwd=cwd,
                        stdout=f, stderr=f)
    except process.ProcessError as e:
        raise MlgoError(f"the test command failed on the {label} build ({e.reason}): {command} "
                        f"(in {cwd}; output in {log})") from None
    return time.monotonic() - t0


def write_json(path: Path, doc: object) -> None:
    from mlgo_base.files import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
