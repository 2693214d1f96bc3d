"""The demo's project, Debian's lua5.4, outside the corpus: its configured sources (from the
Debian build cache that `mlgo corpus debian lua5.4` fills), its interpreter built at -Oz with
extra flags (e.g. a pass plugin), and a small Lua program with known output. Used by
`mlgo demo` (mlgo/cli/demo.py, as `LUA`) and the benchmarks that build lua.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

PROJECT = "lua5.4"
# A small program exercising the interpreter (closures, tables, strings, arithmetic).
LUA_PROGRAM = (
    "local function fib(n) if n < 2 then return n end return fib(n-1) + fib(n-2) end "
    "local t = {} for i = 1, 200 do t[i] = string.format('%03d', (i * 37) % 101) end "
    "table.sort(t) print(fib(20), t[1], t[200], #table.concat(t))"
)
LUA_EXPECTED = "6765\t000\t100\t600"


def lua_sources() -> Path:
    """The unpacked, configured lua5.4 source tree from the corpus step's build cache."""
    from corpus_tools.debian import DEFAULT_CACHE, download_source

    dsc = download_source(PROJECT, DEFAULT_CACHE)
    src = DEFAULT_CACHE / "build" / dsc.stem.replace("_", "-", 1) / "src"
    if not (src / "lua.c").is_file():
        raise MlgoError(f"{src}: lua sources not found (run the corpus step first)")
    return src


def build_lua(src: Path, build: Path, flags: list[str]) -> Path:
    """The lua interpreter from `src`, every file compiled at -Oz with `flags`."""
    cc = toolchain.clang().path
    build.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in src.glob("*.c") if p.name != "luac.c")

    def compile_one(c: Path) -> Path:
        obj = build / (c.stem + ".o")
        cmd = [cc, "-Oz", "-c", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-I", str(src), *flags,
               str(c), "-o", str(obj)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise MlgoError(f"{c}: compile failed: {r.stderr.strip()[-1500:]}")
        return obj

    with ThreadPoolExecutor(2) as ex:
        objs = list(ex.map(compile_one, sources))
    exe = build / "lua"
    r = subprocess.run([cc, *map(str, objs), "-o", str(exe), "-lm", "-ldl"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise MlgoError(f"{exe}: link failed: {r.stderr.strip()[-1500:]}")
    return exe


@dataclass(frozen=True)
class DemoProject:
    """What the demo needs of a project: the `mlgo` command that extracts its -Oz corpus into a
    directory, a build of its program at -Oz with extra flags (a pass plugin), and a run of
    that program with known output. tests/test_demo.py runs the demo on a small one."""

    name: str
    corpus_command: Callable[[Path], list[str]]  # corpus dir -> `mlgo` arguments
    build: Callable[[Path, list[str]], Path]  # (build dir, extra flags) -> the executable
    run_args: tuple[str, ...]
    expected_output: str


LUA = DemoProject(
    name=PROJECT,
    corpus_command=lambda out: ["corpus", "debian", PROJECT, "--opt-level", "Oz", "-o", str(out)],
    build=lambda build, flags: build_lua(lua_sources(), build, flags),
    run_args=("-e", LUA_PROGRAM),
    expected_output=LUA_EXPECTED,
)
