"""Finds the LLVM tools of the chosen version and checks them, with errors that say how to fix
things.

mlgo runs on LLVM 19 or LLVM 22 (Debian 12 ships both: clang-19, and clang-22 in the security
suite). Which one, for every command and every worker it starts:
  - MLGO_LLVM_VERSION=19 or 22 when set (the `--llvm-version` flag of the commands that compile
    sets it, so workers inherit it); any other value is refused;
  - else 19 when clang-19 is installed (the version the shipped policies were trained on);
  - else 22 when only clang-22 is installed;
  - else 19, whose install hint the errors then print.
Corpora record the version they were extracted with (corpus_tools/corpus.py), and a corpus of
the other version is refused before any compile."""

from __future__ import annotations

import functools
import os
import re
import shutil
from dataclasses import dataclass

from mlgo_base.errors import ToolchainError

SUPPORTED_MAJORS = (19, 22)
DEFAULT_MAJOR = 19
VERSION_VARIABLE = "MLGO_LLVM_VERSION"


def install_hint(major: int) -> str:
    return (f"install it with: apt-get install clang-{major} llvm-{major} llvm-{major}-dev "
            f"lld-{major}  (or run scripts/setup.sh)")


def is_installed(major: int) -> bool:
    """Whether clang-MAJOR is on PATH or in LLVM's own directory for that version."""
    return bool(shutil.which(f"clang-{major}")) or os.access(
        f"/usr/lib/llvm-{major}/bin/clang", os.X_OK)


def parse_major(text: str, source: str) -> int:
    """'19' or '22' -> the int; anything else is a ToolchainError naming `source`."""
    if text.strip() not in {str(m) for m in SUPPORTED_MAJORS}:
        raise ToolchainError(f"{source}={text!r}: mlgo runs on LLVM "
                             f"{' or '.join(map(str, SUPPORTED_MAJORS))}; give one of those")
    return int(text)


def llvm_major() -> int:
    """The LLVM major version mlgo compiles with (the rule is in the module docstring)."""
    given = os.environ.get(VERSION_VARIABLE)
    if given:
        return parse_major(given, VERSION_VARIABLE)
    if is_installed(DEFAULT_MAJOR):
        return DEFAULT_MAJOR
    others = [m for m in SUPPORTED_MAJORS if m != DEFAULT_MAJOR and is_installed(m)]
    return max(others) if others else DEFAULT_MAJOR


def clang_name() -> str:
    """The chosen clang's name as users type it, e.g. "clang-19" (for messages and reports)."""
    return f"clang-{llvm_major()}"


def __getattr__(name: str) -> object:
    # LLVM_MAJOR and INSTALL_HINT follow the chosen version for the modules that read them.
    if name == "LLVM_MAJOR":
        return llvm_major()
    if name == "INSTALL_HINT":
        return install_hint(llvm_major())
    raise AttributeError(f"module 'mlgo_base.toolchain' has no attribute {name!r}")


def _package(name: str, major: int) -> str:
    """The Debian package that provides tool `name` of LLVM `major`, for the error message."""
    return {"clang": f"clang-{major}", "clang++": f"clang-{major}",
            "llvm-config": f"llvm-{major}-dev"}.get(name, f"llvm-{major}")


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str  # e.g. "19.1.7"


def _env_override(name: str) -> str | None:
    # MLGO_CLANG, MLGO_LLC, MLGO_LLVM_OBJCOPY ... point at a specific binary (tests use fakes).
    return os.environ.get(_override_key(name))


def _override_key(name: str) -> str:
    return "MLGO_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def locate(name: str, *, override: bool = True) -> str:
    """Path of `name-MAJOR` for the chosen LLVM version (or its MLGO_ override), without
    running it: the one place that finds the LLVM tools (mlgo-clang's native program gets its
    compiler from here)."""
    given = _env_override(name) if override else None
    if given:
        path = given if os.path.sep in given else shutil.which(given)
        if not path or not os.access(path, os.X_OK):
            raise ToolchainError(f"{name}: MLGO_ override {given!r} is not an executable file")
        return path
    major = llvm_major()
    path = shutil.which(f"{name}-{major}") or f"/usr/lib/llvm-{major}/bin/{name}"
    if not os.access(path, os.X_OK):
        raise ToolchainError(
            f"{name}-{major} not found (package {_package(name, major)}); mlgo is set to LLVM "
            f"{major}{_chosen_by()}: " + install_hint(major)
        )
    return path


def _chosen_by() -> str:
    return f" ({VERSION_VARIABLE})" if os.environ.get(VERSION_VARIABLE) else ""


def companion_tool(tool: str) -> str:
    """The chosen LLVM's binutil `tool` (e.g. llvm-nm-19 on PATH, else LLVM's own bin directory), never an
    MLGO_ override: mlgo-clang links these beside itself, and profiles read objects with them."""
    return locate(tool, override=False)


def find_tool(name: str, check_version: bool = True) -> Tool:
    """Path of `name-MAJOR` (e.g. clang-19, llc-22, llvm-objcopy-19) for the chosen LLVM
    version, version-checked."""
    return _find_tool(name, check_version, llvm_major(), os.environ.get(_override_key(name)))


@functools.cache
def _find_tool(name: str, check_version: bool, major: int, override: str | None) -> Tool:
    path = locate(name)
    version = _version_of(path) if check_version else ""
    if check_version and not version.startswith(f"{major}."):
        raise ToolchainError(
            f"{path} is LLVM version {version or 'unknown'}, mlgo is set to LLVM {major}.x"
            f"{_chosen_by()}: " + install_hint(major)
        )
    return Tool(name, path, version)


def _version_of(path: str) -> str:
    from mlgo_base.process import ProcessError, run

    try:
        out = run([path, "--version"], what="asking a tool's version", timeout=30, check=False)
    except ProcessError as e:
        raise ToolchainError(str(e)) from e
    m = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    return m.group(1) if m else ""


def clang() -> Tool:
    return find_tool("clang")


def clangxx() -> Tool:
    return find_tool("clang++")


def llc() -> Tool:
    return find_tool("llc")


def objcopy() -> Tool:
    return find_tool("llvm-objcopy")


def compiler_id() -> str:
    """A string that changes whenever the compiler that produced a measurement changes."""
    c = clang()
    st = os.stat(c.path)
    return f"clang-{c.version}:{st.st_size}:{int(st.st_mtime)}"
