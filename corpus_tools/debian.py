"""Corpora from Debian source packages, built with clang-19 under `bear`.

Each package has a recipe (format in corpus_tools/debian_recipe.py).

The flow per package: make sure apt knows deb-src entries, `apt-get source --download-only`
into the cache, install build dependencies, `dpkg-source -x`, build with CC=clang-19
CXX=clang++-19 under `bear`, then `extract_compile_db` into the corpus with the package name
as the project. "debian-rules" builds with the package's own flags (dpkg-buildflags: -O2 -g
-fstack-protector-strong ...); extraction then re-emits each compile's IR at the requested
level (`opt_level`, -Oz for inlining-for-size corpora) with all its other flags, which is the
IR `clang-19 -Oz -c` makes from that source with the build's flags, or keeps the build's
level (None).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corpus_tools.debian_recipe import RECIPES_DIR, Recipe, load_recipe
from corpus_tools.extract import (
    DEFAULT_EXCLUDES,
    OUTSIDE_ROOT_PATTERN,
    extract_compile_db,
    is_compile,
    read_compile_db,
)
from corpus_tools.extract_pipeline import DEFAULT_TIMEOUT, SOURCE_EXTENSIONS, ExtractSummary
from mlgo_base import process, toolchain
from mlgo_base.errors import CorpusError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlgo" / "debian"
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEBIAN_SOURCES = APT_SOURCES_DIR / "debian.sources"
DEB_SRC_FILE = APT_SOURCES_DIR / "mlgo-deb-src.sources"
COMPILE_DB = "mlgo_compile_commands.json"  # in the built tree: what the build compiled


# ---------------------------------------------------------------------------------------------
# apt


def _is_root() -> bool:
    return os.geteuid() == 0


def _run(argv: Sequence[str], what: str, *, cwd: Path | None = None,
         timeout: float = 1800.0, env: dict[str, str] | None = None) -> str:
    """Run a tool to success and return its output; any failure is a one-line CorpusError
    (what the command line reports per package) naming the step, the command, how it ended
    and the line of its output that says why."""
    log.info("%s: %s", what, " ".join(argv))
    try:
        return process.run(argv, what=what, cwd=cwd, timeout=timeout, env=env).stdout
    except process.ProcessError as e:
        why = f": {_apt_reason(e.output)}" if e.output.strip() else ""
        raise CorpusError(f"{what}: `{shlex.join(e.argv)}` {e.reason}{why}") from e


def has_deb_src(sources_dir: Path = APT_SOURCES_DIR,
                sources_list: Path = Path("/etc/apt/sources.list")) -> bool:
    """True if any apt source (one-line or deb822 format) is enabled for deb-src."""
    files = [sources_list] if sources_list.is_file() else []
    files += sorted(sources_dir.glob("*.list")) + sorted(sources_dir.glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            if re.search(r"^Types:.*\bdeb-src\b", text, re.MULTILINE):
                return True
        elif re.search(r"^\s*deb-src\s", text, re.MULTILINE):
            return True
    return False


def deb_src_text(debian_sources: str) -> str:
    """The deb822 sources with every `Types:` line turned into `Types: deb-src`."""
    out = re.sub(r"^Types:.*$", "Types: deb-src", debian_sources, flags=re.MULTILINE)
    if "Types: deb-src" not in out:
        raise CorpusError("the apt sources have no 'Types:' line to copy")
    return out


def ensure_deb_src() -> None:
    """Make `apt-get source` possible: add deb-src entries copied from debian.sources."""
    if has_deb_src():
        return
    command = (f"sed 's/^Types:.*/Types: deb-src/' {DEBIAN_SOURCES} > {DEB_SRC_FILE} "
               "&& apt-get update")
    if not DEBIAN_SOURCES.is_file():
        raise CorpusError(f"no deb-src entry in the apt sources and {DEBIAN_SOURCES} does not "
                          "exist to copy one from; add a deb-src source and run apt-get update")
    if not _is_root():
        raise CorpusError(f"apt has no deb-src entry, needed by `apt-get source`; as root run:\n"
                          f"  {command}")
    DEB_SRC_FILE.write_text(deb_src_text(DEBIAN_SOURCES.read_text()))
    log.info("added %s; running apt-get update", DEB_SRC_FILE)
    _run(["apt-get", "update"], "apt-get update")


def source_versions(package: str) -> list[str]:
    """Versions of a source package apt knows, newest first."""
    out = _run(["apt-cache", "showsrc", package], f"{package}: apt-cache showsrc")
    versions = []
    current = None
    for line in out.splitlines():
        if line.startswith("Package: "):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("Version: ") and current == package:
            v = line.split(":", 1)[1].strip()
            if v not in versions:
                versions.append(v)
    if not versions:
        raise CorpusError(f"{package}: apt knows no source package of that name")
    return sort_versions(versions)


def sort_versions(versions: Sequence[str]) -> list[str]:
    """Debian versions, newest first, compared by dpkg's rules."""
    return sorted(versions, key=functools.cmp_to_key(_compare_versions), reverse=True)


def _compare_versions(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = process.run(["dpkg", "--compare-versions", a, "lt", b], what="compare versions",
                     timeout=60, check=False).returncode == 0
    return -1 if lt else 1


def _strip_epoch(version: str) -> str:
    return version.split(":", 1)[1] if ":" in version else version


def source_archives(package: str) -> dict[str, list[str]]:
    """For each version of a source package, the archives apt lists it in (`bookworm`,
    `bookworm-security`), from `apt-cache madison`. The same version is often in two (a
    point release copies a security upload), and one of them may still serve it."""
    argv = ["apt-cache", "madison", package]
    try:
        out = process.run(argv, what=f"{package}: apt-cache madison", timeout=300).stdout
    except process.ProcessError as e:
        raise CorpusError(str(e)) from e
    archives: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or parts[0] != package:
            continue
        where = parts[2].split()  # URI suite/component Sources
        if len(where) >= 3 and where[-1] == "Sources":
            suite = where[-2].split("/")[0]
            if suite not in archives.setdefault(parts[1], []):
                archives[parts[1]].append(suite)
    return archives


def download_source(package: str, cache: Path) -> Path:
    """`apt-get source --download-only` into `cache/src/<package>`; returns the .dsc.

    The newest version comes first; when the archive no longer serves it (a mirror snapshot
    behind the package index answers 404), the same version is asked of the other archives
    apt lists it in, then older versions are tried, with a warning naming the version used.
    When none can be had, the one-line error names every request and why it failed."""
    ensure_deb_src()
    dest = cache / "src" / package
    dest.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    archives: dict[str, list[str]] | None = None  # asked of apt once a download fails
    versions = source_versions(package)
    for version in versions:
        dsc = dest / f"{package}_{_strip_epoch(version)}.dsc"
        if dsc.is_file() and not missing_source_files(dsc):
            return dsc
        if not _fetch_source(package, f"{package}={version}", dest, failures):
            if archives is None:
                archives = source_archives(package)
            suites = archives.get(version, [])
            # In a single archive, `package=version` has asked it already.
            if len(suites) < 2 or not any(
                    _fetch_source(package, f"{package}/{suite}", dest, failures)
                    for suite in suites):
                continue
        if not dsc.is_file():
            raise CorpusError(f"{package}: apt-get source succeeded but {dsc} is missing")
        missing = missing_source_files(dsc)
        if missing:
            raise CorpusError(f"{dsc}: apt-get source succeeded but left out "
                              f"{', '.join(missing)}")
        if version != versions[0]:
            log.warning("%s: newest source version could not be downloaded; using %s",
                        package, version)
        return dsc
    raise CorpusError(f"{package}: no source version could be downloaded (apt lists "
                      f"{', '.join(versions)}): " + "; ".join(failures))


def _fetch_source(package: str, request: str, dest: Path, failures: list[str]) -> bool:
    """`apt-get source --download-only REQUEST`; a failure is added to `failures` as
    `REQUEST: <apt's reason>`."""
    try:
        _run(["apt-get", "source", "--download-only", request], f"{package}: download",
             cwd=dest, timeout=1800)
    except CorpusError as e:
        failures.append(f"{request}: {_apt_reason(str(e))}")
        return False
    return True


def _apt_reason(message: str) -> str:
    """The first of apt's `E: ...` lines (`E: Failed to fetch ... 404  Not Found`, `E: Unable
    to locate ...`) in a tool's output or an error naming it, else the last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        found = re.search(r"(?:^|\s)(E: .*)", line)
        if found:
            return found.group(1)[:300]
    return lines[-1][:300] if lines else "failed"


def missing_source_files(dsc: Path) -> list[str]:
    """The files the .dsc lists (its `Files:` field) that are not next to it with the listed
    size. A failed `apt-get source` (the archive serving the .dsc but answering 404 for a
    tarball) leaves the .dsc behind; it must not pass for a finished download."""
    text = dsc.read_text(errors="replace")
    field = re.search(r"^Files:[ \t]*\n((?:[ \t]+\S.*\n?)+)", text, re.MULTILINE)
    if field is None:
        raise CorpusError(f"{dsc}: no 'Files:' field; not a Debian source control file")
    missing = []
    for line in field.group(1).splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit():
            raise CorpusError(f"{dsc}: bad 'Files:' line {line.strip()!r}")
        f = dsc.parent / parts[2]
        if not f.is_file() or f.stat().st_size != int(parts[1]):
            missing.append(parts[2])
    return missing


def unpack_source(dsc: Path, build_root: Path) -> Path:
    """`dpkg-source -x` into a fresh directory under build_root."""
    target = build_root / dsc.stem.replace("_", "-", 1)
    if target.exists():
        shutil.rmtree(target)
    build_root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-source", "--no-check", "-x", str(dsc), str(target)], f"{dsc.name}: unpack",
         timeout=600)
    return target


def install_build_deps(recipe: Recipe, src_dir: Path) -> None:
    """Install what the build needs, only when something is missing."""
    pkg = recipe.package
    if recipe.build_deps == "all":
        # Architecture-dependent dependencies only (-B / --arch-only): the corpus needs the
        # compiled code, not the documentation toolchains of Build-Depends-Indep.
        check = process.run(["dpkg-checkbuilddeps", "-B"], what=f"{pkg}: check build "
                            "dependencies", cwd=src_dir, timeout=300, check=False)
        if check.returncode == 0:
            return
        argv = ["apt-get", "build-dep", "-y", "--arch-only", pkg]
        missing = check.stderr.strip()
    else:
        missing_pkgs = [d for d in recipe.build_deps if not _installed(d)]
        if not missing_pkgs:
            return
        argv = ["apt-get", "install", "-y", "--no-install-recommends", *missing_pkgs]
        missing = " ".join(missing_pkgs)
    if not _is_root():
        raise CorpusError(f"{pkg}: build dependencies missing ({missing}); as root run:\n"
                          f"  {' '.join(argv)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(argv, f"{pkg}: install build dependencies", env=env, timeout=3600)


def _installed(binary_package: str) -> bool:
    res = process.run(["dpkg-query", "-W", "-f=${Status}", binary_package],
                      what="dpkg-query", timeout=60, check=False)
    return res.returncode == 0 and res.stdout.strip().endswith("installed")


# ---------------------------------------------------------------------------------------------
# Build and extract


@dataclass
class PackageResult:
    package: str
    build_seconds: float
    extract: ExtractSummary
    src_dir: Path | None = None  # the built tree (its mlgo_compile_commands.json: the build)
    exclude: tuple[str, ...] = ()  # what extraction left out of the build
    build_failure: str = ""  # the build failed after compiling: what it said (one line)


# Packages are written for GCC, and some pass GCC-only warnings (-Werror=clobbered); with
# -Werror clang-19 rejects a warning option it does not know. Warnings change no code, so
# the build tells clang to let unknown ones pass (dpkg-buildflags appends the user's
# DEB_<FLAGS>_APPEND to what the package sets).
TOLERATE_GCC_WARNINGS = "-Wno-unknown-warning-option"
_APPENDED_FLAGS = ("DEB_CFLAGS_APPEND", "DEB_CXXFLAGS_APPEND")


# Where Debian's build tools and the system's Python live. A package's build runs the
# `python3` its build dependencies installed modules into; a pyenv or virtualenv earlier on
# the user's PATH lacks them (a documentation step then fails: "No module named ...").
SYSTEM_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def build_path(user_path: str) -> str:
    """PATH for a package build: the system's directories first, then the user's others."""
    rest = [d for d in user_path.split(os.pathsep) if d and d not in SYSTEM_PATH]
    return os.pathsep.join([*SYSTEM_PATH, *dict.fromkeys(rest)])


@functools.cache
def architecture_env() -> dict[str, str]:
    """The DEB_BUILD_*, DEB_HOST_* and DEB_TARGET_* variables of this machine
    (`dpkg-architecture`)."""
    try:
        out = process.run(["dpkg-architecture"], what="dpkg-architecture", timeout=60).stdout
    except process.ProcessError as e:
        raise CorpusError(f"{e} (debian/rules builds need dpkg-dev)") from e
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {name: value for name, value in pairs if name.startswith("DEB_")}


def build_env(recipe: Recipe, jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CC=toolchain.clang().path,
        CXX=toolchain.clangxx().path,
        DEB_BUILD_OPTIONS=f"nocheck nodoc parallel={max(1, jobs)}",
        DEBIAN_FRONTEND="noninteractive",
        MAKEFLAGS=f"-j{max(1, jobs)}",
    )
    env["PATH"] = build_path(env.get("PATH", ""))
    if recipe.build == "debian-rules":
        # What dpkg-buildpackage sets before it runs debian/rules; rules that compare
        # DEB_BUILD_GNU_TYPE with DEB_HOST_GNU_TYPE take an unset one for a cross build.
        for name, value in architecture_env().items():
            env.setdefault(name, value)
    env.update(recipe.env)
    for name in _APPENDED_FLAGS:
        env[name] = " ".join(f for f in (TOLERATE_GCC_WARNINGS, env.get(name, "")) if f)
    return env


@dataclass(frozen=True)
class Build:
    """A finished package build: its compile database and, when the build failed after
    compiling (a documentation step, a test), one line saying what failed."""

    compile_db: Path
    failure: str = ""


def build_with_bear(recipe: Recipe, src_dir: Path, jobs: int) -> Path:
    """Run the recipe's build under bear; returns the compile_commands.json. A build that
    fails is an error, even after compiles (see run_build for keeping those)."""
    build = run_build(recipe, src_dir, jobs)
    if build.failure:
        raise CorpusError(build.failure)
    return build.compile_db


def run_build(recipe: Recipe, src_dir: Path, jobs: int) -> Build:
    """Run the recipe's build under bear. A build that fails after recording compiles keeps
    its compile database, with the failure in `Build.failure`; one that fails before any
    compile is a CorpusError."""
    bear = shutil.which("bear")
    if bear is None:
        raise CorpusError("bear is not installed (apt-get install bear); it records the "
                          "compile commands of a build")
    compile_db = src_dir / COMPILE_DB
    # bear appends every compile to an events file next to its output while the build runs;
    # inside the tree a build step that rewrites the tree's files (graphite2's `sed -i` over
    # everything) would replace it and lose the compiles before it. So bear writes beside
    # the tree, and the finished database is moved in afterwards.
    bear_dir = src_dir.parent / f"{src_dir.name}.bear"
    if bear_dir.exists():
        shutil.rmtree(bear_dir)
    bear_dir.mkdir()
    bear_db = bear_dir / "compile_commands.json"
    if recipe.build == "debian-rules":
        # build-arch, not build: some trees have a directory named `build` that would make
        # make consider the target up to date.
        command = ["debian/rules", "build-arch"]
    else:
        command = ["bash", "-euo", "pipefail", "-c", "\n".join(recipe.steps)]
    argv = [bear, "--output", str(bear_db), "--", *command]
    log_path = src_dir / "mlgo_build.log"
    log.info("%s: building in %s (log %s)", recipe.package, src_dir, log_path)
    with open(log_path, "wb") as log_file:
        try:
            returncode = _run_build(argv, src_dir, build_env(recipe, jobs), log_file,
                                    recipe.build_timeout)
        except process.ProcessError as e:
            if e.timed_out:
                raise CorpusError(f"{recipe.package}: build timed out after "
                                  f"{recipe.build_timeout:g} s; log: {log_path}") from e
            raise CorpusError(f"{recipe.package}: cannot build: {e.reason}") from e
    failure = ""
    if returncode != 0:
        text = log_path.read_text(errors="replace")
        compiles = _recorded_compiles(bear_db, src_dir)
        if not compiles:
            raise CorpusError(f"{recipe.package}: build failed with status {returncode} "
                              f"({first_error_line(text)}); log: {log_path}")
        failure = (f"{recipe.package}: build failed with status {returncode} after "
                   f"{compiles} compiles ({first_error_line(text)}); log: {log_path}")
    if not bear_db.is_file():
        raise CorpusError(f"{recipe.package}: bear wrote no {bear_db}")
    shutil.move(bear_db, compile_db)
    shutil.rmtree(bear_dir)
    return Build(compile_db, failure)


def _recorded_compiles(compile_db: Path, root: Path) -> int:
    """How many compiles of the project's C/C++ sources (not configure's probes) a possibly
    failed build's database records."""
    if not compile_db.is_file():
        return 0
    try:
        entries = read_compile_db(compile_db, malformed=[])
    except CorpusError:
        return 0
    return sum(is_compile(e.arguments) and e.file.suffix in SOURCE_EXTENSIONS
               and not any(fnmatch.fnmatchcase(str(e.file), f"{root}/{pattern}")
                           or fnmatch.fnmatchcase(str(e.file), pattern)
                           for pattern in DEFAULT_EXCLUDES)
               for e in entries)


# What says why a build failed, most telling first: a tool's `error:` line (compilers,
# debhelper) or CMake's, then Python's and the shell's. Make's `*** [...] Error N` and
# CMake's `-- Looking for x - not found` only echo or precede the cause.
_ERROR_LINES = (re.compile(r"\berror:|^CMake Error", re.IGNORECASE),
                re.compile(r"No module named|command not found|: not found|No such file"))


def first_error_line(log_text: str) -> str:
    """The line of a build log that says why it failed; else the log's last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    candidates = [line for line in lines if "***" not in line and not line.startswith("--")]
    for pattern in _ERROR_LINES:
        for i, line in enumerate(candidates):
            if pattern.search(line):
                if line.endswith("(message):") and i + 1 < len(candidates):
                    line = f"{line} {candidates[i + 1]}"  # CMake says what on the next line
                return line[:300]
    return lines[-1][:300] if lines else "no output"


def _run_build(argv: Sequence[str], cwd: Path, env: dict[str, str], log_file: IO[bytes],
               timeout: float) -> int:
    """Run a build into `log_file` and return its status. Whatever ends the wait (timeout,
    Ctrl-C, and SIGTERM, turned into KeyboardInterrupt while we wait) kills the whole session
    (process.run does): bear ignores SIGTERM, and make's compilers would otherwise go on
    building into a tree that the next run unpacks afresh."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return process.run(argv, what="build", cwd=cwd, env=env, timeout=timeout,
                           stdout=log_file, stderr=log_file, check=False).returncode
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def build_package(
    package: str, out_dir: Path | str, *, cache: Path | str = DEFAULT_CACHE, jobs: int = 1,
    recipes_dir: Path = RECIPES_DIR, progress: bool = True, rebuild: bool = False,
    timeout: float = DEFAULT_TIMEOUT, opt_level: str | None = None,
    recipe: Recipe | None = None,
) -> PackageResult:
    """Download, build and extract one package into the corpus `out_dir` (project =
    package name) with its IR at `opt_level` (None: the build's own). The recipe is the
    package's in `recipes_dir` unless one is given (`recipe`, e.g. read from a file of the
    user's). A previous successful build in the cache is reused unless `rebuild`."""
    if recipe is None:
        recipe = load_recipe(package, recipes_dir)
    elif recipe.package != package:
        raise CorpusError(f"{recipe.source or 'recipe'}: 'package' is {recipe.package!r}, "
                          f"not {package!r}")
    cache = Path(cache)
    dsc = download_source(package, cache)
    build_root = cache / "build"
    src_dir = build_root / dsc.stem.replace("_", "-", 1)
    stamp = src_dir / "mlgo_build.ok"
    failed_stamp = src_dir / "mlgo_build.failed"  # a build that failed after its compiles
    build_seconds = 0.0  # the build proper: not download, unpacking or dependencies
    if rebuild or not stamp.is_file():
        src_dir = unpack_source(dsc, build_root)
        install_build_deps(recipe, src_dir)
        start = time.monotonic()
        build = run_build(recipe, src_dir, jobs)
        build_seconds = time.monotonic() - start
        if build.failure:
            failed_stamp.write_text(build.failure + "\n")
        stamp.write_text(f"{build_seconds:.1f}\n")
        failure = build.failure
    else:
        log.info("%s: reusing the build in %s", package, src_dir)
        failure = failed_stamp.read_text().strip() if failed_stamp.is_file() else ""
    exclude = (*DEFAULT_EXCLUDES, OUTSIDE_ROOT_PATTERN, *recipe.exclude)
    summary = extract_compile_db(
        src_dir / COMPILE_DB, out_dir, project=package, root=src_dir,
        exclude=exclude, jobs=jobs,
        timeout=timeout, progress=progress, opt_level=opt_level,
        origin={"source": "debian", "package": package})
    return PackageResult(package, build_seconds, summary, src_dir, exclude, failure)
