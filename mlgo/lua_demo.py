"""The demo's project, Debian's lua5.4, as a small CMake project `mlgo tune` can build: its
unpacked Debian source with a CMakeLists.txt written beside it (the core as a static library,
the interpreter `lua` linked from it, compiled as Debian's Makefile does: -DLUA_COMPAT_5_3
-DLUA_USE_LINUX), a Lua program with known output as the project's test, and the source files
held out of tuning so the demo can report the policy on code it never saw. Used by `mlgo demo`
(mlgo/cli/demo.py, as `LUA`); `lua_sources` and the program are also used by benchmarks.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text

PROJECT = "lua5.4"
# A small program exercising the interpreter (closures, tables, strings, arithmetic).
LUA_PROGRAM = (
    "local function fib(n) if n < 2 then return n end return fib(n-1) + fib(n-2) end "
    "local t = {} for i = 1, 200 do t[i] = string.format('%03d', (i * 37) % 101) end "
    "table.sort(t) print(fib(20), t[1], t[200], #table.concat(t))"
)
LUA_EXPECTED = "6765\t000\t100\t600"
LUA_DEFINES = ("LUA_COMPAT_5_3", "LUA_USE_LINUX")


def lua_sources() -> Path:
    """The unpacked, configured lua5.4 source tree from the corpus step's build cache."""
    from corpus_tools.debian import DEFAULT_CACHE, download_source

    dsc = download_source(PROJECT, DEFAULT_CACHE)
    src = DEFAULT_CACHE / "build" / dsc.stem.replace("_", "-", 1) / "src"
    if not (src / "lua.c").is_file():
        raise MlgoError(f"{src}: lua sources not found (run the corpus step first)")
    return src


def held_out(files: list[str]) -> list[str]:
    """Every fifth source file, alphabetically from the third: the modules the demo keeps out
    of the search and the training, to report the policy on code it never saw."""
    return sorted(files)[2::5]


def lua_cmake_project(work: Path) -> Path:
    """Debian's lua5.4 source, unpacked under `work` (downloaded once into the Debian cache),
    with a CMakeLists.txt building liblua (static) and the interpreter `lua`."""
    from corpus_tools.debian import DEFAULT_CACHE, download_source, unpack_source

    dsc = download_source(PROJECT, DEFAULT_CACHE)
    target = work / "lua-src"
    if not (target / "CMakeLists.txt").is_file():
        unpacked = unpack_source(dsc, work / "unpack")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
        shutil.rmtree(work / "unpack", ignore_errors=True)
        # What Debian's configure step writes (debian/rules); luaconf.h includes it.
        from mlgo_base import process

        arch = process.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
                           what="asking dpkg for the multiarch triple", timeout=60).stdout.strip()
        atomic_write_text(target / "src" / "lua5.4-deb-multiarch.h",
                          "#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n"
                          f'#define DEB_HOST_MULTIARCH "{arch}"\n#endif\n')
        atomic_write_text(target / "CMakeLists.txt", cmake_lists(target))
    return target


def cmake_lists(tree: Path) -> str:
    core = sorted(p.name for p in (tree / "src").glob("*.c") if p.name not in ("lua.c", "luac.c"))
    if not core:
        raise MlgoError(f"{tree / 'src'}: no lua sources")
    return ("cmake_minimum_required(VERSION 3.13)\nproject(lua54 C)\n"
            f"add_library(liblua STATIC {' '.join('src/' + c for c in core)})\n"
            f"target_compile_definitions(liblua PUBLIC {' '.join(LUA_DEFINES)})\n"
            "add_executable(lua src/lua.c)\n"
            "target_link_libraries(lua liblua m dl)\n")


@dataclass(frozen=True)
class DemoProject:
    """What the demo needs of a project: a CMake source directory made under a work
    directory, its program (path in the build tree) and a run of it with known output (the
    project's test), and the source globs held out of tuning. tests/test_demo.py runs the demo
    on a small one."""

    name: str
    cmake_source: Callable[[Path], Path]  # work dir -> CMake source directory
    program: str
    run_args: tuple[str, ...]
    expected_output: str
    held_out: Callable[[Path], list[str]]  # CMake source dir -> globs left out of tuning

    def test_command(self) -> str:
        """A shell command, run in the build directory, that fails unless the program prints
        the expected output."""
        run = shlex.join([f"./{self.program}", *self.run_args])
        expected = shlex.quote(self.expected_output)
        return (f'out=$({run}) || exit 1; [ "$out" = {expected} ] || '
                f'{{ echo "unexpected output: $out"; exit 1; }}')


LUA = DemoProject(
    name=PROJECT,
    cmake_source=lua_cmake_project,
    program="lua",
    run_args=("-e", LUA_PROGRAM),
    expected_output=LUA_EXPECTED,
    held_out=lambda tree: held_out([f"src/{p.name}" for p in (tree / "src").glob("*.c")
                                    if p.name != "luac.c"]),
)
