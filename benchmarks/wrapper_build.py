"""A real project built through the mlgo-clang native launcher: Debian's lua5.4, its own build.

The lua5.4 source package (from the `mlgo corpus debian lua5.4` download cache) is unpacked
twice and built with its own `debian/rules build-arch` (libtool; every source compiled four
times: C and C++ library, PIC and static; links through the compiler driver), once with
  plain   CC=clang-19 CXX=clang++-19
  mlgo    CC="$(mlgo-clang --print-launcher)" CXX="$(mlgo-clang++ --print-launcher)"
          (the regalloc policy MLGO_REGALLOC_POLICY, default default-rule, served to every compile)
Both builds get `-fsave-optimization-record=yaml -foptimization-record-passes=regalloc`
through DEB_CFLAGS_APPEND, so each object leaves its register allocator remarks beside it,
and the mlgo build counts the eviction decisions it served (MLGO_HOST_DECISION_LOG).

Then both interpreters run the demo's Lua program (known output) and a self-checking script
(closures, coroutines, string patterns, string.pack, integer/float arithmetic, table.sort, utf8,
pcall, goto, the GC), which must print the same lines. Reported: .text of the interpreter, of
the shared libraries and of all objects, the weighted spill+reload+copy cost summed over every
object's remarks, objects whose .text differs, and wall/CPU time of each build (CPU:
getrusage(RUSAGE_CHILDREN), the whole build tree). The builds run one after another, -j1 by
default: at -j2 Debian's lua5.4 build sometimes fails in its static library's `ar` step (twice
in the few -j2 builds tried here, both times with plain clang-19: a race in the package's own
rules);
with --repeats N each variant is built N times in the order plain, mlgo, mlgo, plain, ... (so
a load swing on this shared machine does not land on one variant) and the median times are
reported; every build's objects and interpreter must come out the same as its variant's first.
Usage: python benchmarks/wrapper_build.py [--jobs 1] [--repeats 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mlgo.compiler.measure import parse_regalloc_remarks, text_size
from mlgo.lua_demo import LUA_EXPECTED, LUA_PROGRAM
from mlgo.serving.launcher import DEFAULT_REGALLOC_POLICY, launcher_for
from mlgo_base import process
from mlgo_base.toolchain import locate

REMARK_FLAGS = "-fsave-optimization-record=yaml -foptimization-record-passes=regalloc"

# Every line is checked by the script itself; it prints "all checks passed" only if each holds.
LUA_CHECKS = r"""
local function check(cond, what) if not cond then error("check failed: " .. what, 2) end end
local function counter() local n = 0 return function() n = n + 1 return n end end
local c = counter(); c(); c(); check(c() == 3, "closure")
local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
check(co(1) == 2 and co(10) == 20, "coroutine")
local s, n = string.gsub("hello world from lua", "(%w+)", "<%1>")
check(n == 4 and s == "<hello> <world> <from> <lua>", "gsub")
check(string.format("%5.2f|%-4d|%x|%q", 3.14159, 42, 255, "a\n") == ' 3.14|42  |ff|"a\\\n"',
      "format")
check(("abc"):rep(3, "-") == "abc-abc-abc", "rep")
check(select("#", string.find("key = value", "(%w+)%s*=%s*(%w+)")) == 4, "find captures")
local packed = string.pack("<i4 d s1", -7, 0.5, "xy")
local a, b, str = string.unpack("<i4 d s1", packed)
check(a == -7 and b == 0.5 and str == "xy" and #packed == 4 + 8 + 3, "pack")
check(7 // 2 == 3 and -7 // 2 == -4 and 7 % -3 == -2 and 2^10 == 1024.0, "arithmetic")
check(math.maxinteger + 1 == math.mininteger and math.type(1) == "integer"
      and math.type(1.0) == "float" and 3 | 5 == 7 and 6 & 3 == 2 and 1 << 62 == 2^62,
      "integers")
local t = {}
for i = 1, 1000 do t[i] = (i * 7919) % 1009 end
table.sort(t, function(x, y) return x > y end)
for i = 2, #t do check(t[i - 1] >= t[i], "sort") end
check(table.concat({1, 2, 3}, ",") == "1,2,3" and select(2, table.unpack({4, 5, 6})) == 5,
      "table")
check(utf8.len("häßlich") == 7 and utf8.char(72, 228) == "Hä", "utf8")
local ok, err = pcall(function() error({code = 7}) end)
check(not ok and err.code == 7, "pcall")
ok, err = pcall(function() return nil + 1 end)
check(not ok and err:find("arithmetic") ~= nil, "error message")
local sum = 0
for i = 1, 10 do if i % 2 == 0 then goto continue end sum = sum + i ::continue:: end
check(sum == 25, "goto")
local weak = setmetatable({}, {__mode = "k"})
weak[{}] = true
collectgarbage(); collectgarbage()
check(next(weak) == nil, "weak table")
local mt = {__add = function(x, y) return x.v + y.v end, __index = function() return 0 end}
local p, q = setmetatable({v = 2}, mt), setmetatable({v = 3}, mt)
check(p + q == 5 and p.missing == 0, "metatables")
local fib = {}
local function f(k) if k < 2 then return k end fib[k] = fib[k] or f(k - 1) + f(k - 2)
  return fib[k] end
check(f(80) == 23416728348467685, "memoized fib")
print("all checks passed")
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def find_dsc() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlgo" / "debian"
    found = sorted(glob.glob(str(cache / "src" / "lua5.4" / "lua5.4_*.dsc")))
    if not found:
        sys.exit("no lua5.4 source package in the cache: run `mlgo corpus debian lua5.4 -o X`")
    return Path(found[-1])


def debian_build(dsc: Path, tree: Path, cc: str, cxx: str, jobs: int,
                 extra_env: dict[str, str]) -> tuple[float, float]:
    """Unpack `dsc` into `tree` and run its debian/rules build-arch; (wall, CPU) seconds."""
    process.run(["dpkg-source", "--no-check", "-x", str(dsc), str(tree)],
                what=f"unpacking {dsc.name}", timeout=600)
    env = dict(os.environ, CC=cc, CXX=cxx, DEB_BUILD_OPTIONS=f"nocheck nodoc parallel={jobs}",
               MAKEFLAGS=f"-j{jobs}", DEB_CFLAGS_APPEND=REMARK_FLAGS, **extra_env)
    c0, t0 = _children_cpu(), time.perf_counter()
    with open(tree / "mlgo_build.log", "wb") as log:
        r = process.run(["debian/rules", "build-arch"], what=f"building {tree}", timeout=4 * 3600,
                        cwd=tree, env=env, stdout=log, stderr=log, check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if r.returncode != 0:
        sys.exit(f"{tree}: build failed ({r.returncode}); log {tree / 'mlgo_build.log'}")
    return wall, cpu


def run_lua(exe: Path, program: str) -> str:
    r = process.run([str(exe), "-e", program], what=f"running {exe}", timeout=120, check=False)
    if r.returncode != 0:
        sys.exit(f"{exe} failed ({r.returncode}): {r.stdout} {r.stderr}")
    return r.stdout.strip()


def objects(tree: Path) -> dict[str, Path]:
    src = tree / "src"
    return {str(p.relative_to(src)): p for p in sorted(src.glob("*.o")) + sorted(
        src.glob(".libs/*.o"))}


def measure(tree: Path) -> dict:
    """Run the tree's interpreter (exits on a wrong result) and measure its outputs."""
    exe = tree / "src" / "lua5.4"
    demo_out = run_lua(exe, LUA_PROGRAM)
    if demo_out != LUA_EXPECTED:
        sys.exit(f"{exe}: the demo program printed {demo_out!r}, not {LUA_EXPECTED!r}")
    objs = objects(tree)
    remarks = [p.with_suffix(".opt.yaml") for p in objs.values()]
    missing = [str(p) for p in remarks if not p.is_file()]
    if missing:
        sys.exit(f"{tree}: objects without remarks: {', '.join(missing[:5])}")
    libs = sorted((tree / "src" / ".libs").glob("liblua5.4*.so.*.*.*"))
    return {
        "demo": demo_out, "checks": run_lua(exe, LUA_CHECKS),
        "lua_text": text_size(exe), "lib_text": sum(text_size(p) for p in libs),
        "objects": {k: text_size(p) for k, p in objs.items()},
        "spill_cost": sum(parse_regalloc_remarks(p).total for p in remarks),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="build here and keep the trees (default: a "
                    "temporary directory, removed)")
    args = ap.parse_args()
    dsc = find_dsc()
    policy = os.environ.get("MLGO_REGALLOC_POLICY", DEFAULT_REGALLOC_POLICY)
    variants = {
        "plain": (locate("clang"), locate("clang++"), {}),
        "mlgo": (launcher_for("clang"), launcher_for("clang++"), {}),
    }
    work = args.keep or Path(tempfile.mkdtemp(prefix="wrapper-build-"))
    work.mkdir(parents=True, exist_ok=True)
    decision_log = work / "decisions.tsv"
    decision_log.unlink(missing_ok=True)
    variants["mlgo"][2]["MLGO_HOST_DECISION_LOG"] = str(decision_log)
    rows: dict[str, dict] = {}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    try:
        for r in range(args.repeats):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                cc, cxx, extra = variants[name]
                if name == "plain" or r > 0:
                    extra = {}  # decisions are counted in the first mlgo build only
                tree = work / name
                if tree.exists():
                    shutil.rmtree(tree)
                times[name].append(debian_build(dsc, tree, cc, cxx, args.jobs, extra))
                row = measure(tree)
                if name in rows and {k: v for k, v in row.items() if k != "demo"} != {
                        k: v for k, v in rows[name].items() if k != "demo"}:
                    sys.exit(f"{name}: build {r + 1} differs from the first one")
                rows.setdefault(name, row)
        decisions = len(decision_log.read_text().splitlines()) if decision_log.exists() else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for name, row in rows.items():
        row["wall"] = statistics.median(w for w, _ in times[name])
        row["cpu"] = statistics.median(c for _, c in times[name])

    plain, ml = rows["plain"], rows["mlgo"]
    if plain["checks"] != ml["checks"] or ml["checks"] != "all checks passed":
        sys.exit(f"the Lua checks differ: plain {plain['checks']!r}, mlgo {ml['checks']!r}")
    if plain["objects"].keys() != ml["objects"].keys():
        sys.exit("the two builds made different sets of objects")
    differ = sum(plain["objects"][k] != ml["objects"][k] for k in plain["objects"])
    version = process.run([variants["plain"][0], "--version"],
                          what="asking the compiler its version", timeout=60).stdout.splitlines()[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load}, "
          f"Python {platform.python_version()}")
    print(f"compiler: {version}; {dsc.name}, debian/rules build-arch -j{args.jobs}, "
          f"{args.repeats} build(s) per variant; regalloc "
          f"policy {policy!r}; mlgo build: {decisions} eviction decisions served")
    print(f"both interpreters: demo program -> {ml['demo']!r}; checks -> {ml['checks']!r}")
    print(f"objects: {len(plain['objects'])}, of which {differ} have a different .text")

    def line(what: str, key: str) -> None:
        a, b = plain[key], ml[key]
        print(f"{what:34s} {a:14,.0f} {b:14,.0f} {100 * (b - a) / a:+8.2f}%")

    print(f"{'':34s} {'plain':>14s} {'mlgo':>14s} {'change':>9s}")
    line("lua5.4 interpreter .text (bytes)", "lua_text")
    line("liblua5.4{,-c++}.so .text (bytes)", "lib_text")
    for r in rows.values():
        r["all_objects"] = sum(r["objects"].values())
    line("all objects .text (bytes)", "all_objects")
    line("spill+reload+copy cost (weighted)", "spill_cost")
    line("build wall time (s), median", "wall")
    line("build CPU time (s), median", "cpu")
    for name, series in times.items():
        print(f"{name} builds (wall/CPU s): "
              + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in series))


if __name__ == "__main__":
    main()
