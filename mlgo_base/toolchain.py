"""Finds the LLVM 19 tools and checks their versions, with errors that say how to fix things."""

from __future__ import annotations

import functools
import os
import re
import shutil
from dataclasses import dataclass

from mlgo_base.errors import ToolchainError

LLVM_MAJOR = 19
INSTALL_HINT = (
    f"install it with: apt-get install clang-{LLVM_MAJOR} llvm-{LLVM_MAJOR} "
    f"llvm-{LLVM_MAJOR}-dev lld-{LLVM_MAJOR}  (or run scripts/setup.sh)"
)

# Package that provides each tool, for the error message.
_PACKAGES = {"clang": f"clang-{LLVM_MAJOR}", "clang++": f"clang-{LLVM_MAJOR}",
             "llvm-config": f"llvm-{LLVM_MAJOR}-dev"}


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str  # e.g. "19.1.7"


def _env_override(name: str) -> str | None:
    # MLGO_CLANG, MLGO_LLC, MLGO_LLVM_OBJCOPY ... point at a specific binary (tests use fakes).
    key = "MLGO_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    return os.environ.get(key)


def locate(name: str, *, override: bool = True) -> str:
    """Path of `name-19` (or its MLGO_ override), without running it: the one place that
    finds the LLVM tools (mlgo-clang's native program gets its compiler from here)."""
    given = _env_override(name) if override else None
    if given:
        path = given if os.path.sep in given else shutil.which(given)
        if not path or not os.access(path, os.X_OK):
            raise ToolchainError(f"{name}: MLGO_ override {given!r} is not an executable file")
        return path
    path = shutil.which(f"{name}-{LLVM_MAJOR}") or f"/usr/lib/llvm-{LLVM_MAJOR}/bin/{name}"
    if not os.access(path, os.X_OK):
        pkg = _PACKAGES.get(name, f"llvm-{LLVM_MAJOR}")
        raise ToolchainError(
            f"{name}-{LLVM_MAJOR} not found (package {pkg}); mlgo needs LLVM {LLVM_MAJOR}: "
            + INSTALL_HINT
        )
    return path


def companion_tool(tool: str) -> str:
    """LLVM 19's binutil `tool` (llvm-nm-19 on PATH, else LLVM's own bin directory), never an
    MLGO_ override: mlgo-clang links these beside itself, and profiles read objects with them."""
    return locate(tool, override=False)


@functools.cache
def find_tool(name: str, check_version: bool = True) -> Tool:
    """Path of `name-19` (e.g. clang-19, llc-19, llvm-objcopy-19), version-checked."""
    path = locate(name)
    version = _version_of(path) if check_version else ""
    if check_version and not version.startswith(f"{LLVM_MAJOR}."):
        raise ToolchainError(
            f"{path} is LLVM version {version or 'unknown'}, mlgo needs LLVM {LLVM_MAJOR}.x: "
            + INSTALL_HINT
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
