"""A policy for one's own C++ project, end to end, timed: what a user runs on their own code.

    python benchmarks/own_project.py [--source DIR] [--work DIR] [--workers 1]

Default project: Debian's double-conversion source (downloaded with `apt-get source` and
unpacked into WORK/), a CMake project with a shared library and a test suite (ctest).
  1. build    configure and build it with clang-19 at -Oz (CMake's MinSizeRel, lld, a shared
              library, the tests), export compile_commands.json, run its tests
  2. corpus   `mlgo corpus extract --compile-db` on the library's compiles (-Oz IR)
  3. search   `mlgo search --comdat-aware` (each COMDAT text group charged 1/n)
  4. train    `mlgo train --algorithm imitation --search` on all of the library's modules
              (no validation split: the policy is for this code), with the settings in
              mlgo/problems/inlining/own_project.gin
  5. measure  `mlgo eval` of the policy on the corpus; `mlgo export`
  6. rebuild  the same CMake build with `mlgo cmake-flags POLICY` (-Oz -fpass-plugin=...),
              the library's .text against step 1's, and the project's own tests on it
Every step's command is printed as it runs; the end prints a table of times and sizes. A step
whose output exists is reused (delete WORK/ to start over), so the times of a re-run are not
the flow's: the figures in benchmarks/RESULTS.md, "A policy for one's own project", are from a
fresh WORK/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from mlgo_base import process
from mlgo_base.change import relative_change

ROOT = Path(__file__).resolve().parent.parent
GIN = ROOT / "mlgo" / "problems" / "inlining" / "own_project.gin"
# What double-conversion's CMakeLists.txt builds: the library target and its file.
# A step (search, training) runs minutes on this corpus; this bounds a hung one.
STEP_TIMEOUT = 6 * 3600
DEFAULTS = {"package": "double-conversion", "library_dir": "double-conversion",
            "library": "libdouble-conversion.so"}


def mlgo(*argv: str) -> list[str]:
    return [sys.executable, "-m", "mlgo.cli.main", *argv]


def run(argv: list[str], log: Path, cwd: Path | None = None) -> str:
    """Run a step's command, its output to `log`; stop with the log's tail if it fails."""
    print("$ " + shlex.join(str(a) for a in argv), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with open(log, "a") as f:
        r = process.run([str(a) for a in argv], what="own-project step", timeout=STEP_TIMEOUT,
                        cwd=cwd, env=env, stderr=f, check=False)
        f.write(r.stdout)
    if r.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"failed (exit {r.returncode}): {shlex.join(map(str, argv))}\n"
                         f"--- end of {log} ---\n{tail}")
    return r.stdout


def text_size(path: Path) -> int:
    from mlgo.compiler.measure import text_size as measure

    return int(measure(path))


def cmake_build(src: Path, build: Path, init: Path, log: Path) -> None:
    run(["cmake", "-C", str(init), "-DCMAKE_BUILD_TYPE=MinSizeRel", "-DBUILD_SHARED_LIBS=ON",
         "-DBUILD_TESTING=ON", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "-S", str(src),
         "-B", str(build)], log)
    run(["cmake", "--build", str(build), "-j2"], log)


def ctest(build: Path, log: Path) -> str:
    """The project's own test suite; returns ctest's summary line (stops if a test fails)."""
    out = run(["ctest", "--test-dir", str(build), "--output-on-failure"], log)
    return next((ln.strip() for ln in out.splitlines() if "tests passed" in ln), out[-200:])


def plain_init(path: Path) -> None:
    """The plain -Oz build: what `mlgo cmake-flags` sets, without the plugin."""
    path.write_text(
        'set(CMAKE_C_COMPILER "/usr/bin/clang-19" CACHE FILEPATH "")\n'
        'set(CMAKE_CXX_COMPILER "/usr/bin/clang++-19" CACHE FILEPATH "")\n'
        + "".join(f'set(CMAKE_{lang}_FLAGS_MINSIZEREL "-Oz -DNDEBUG" CACHE STRING "")\n'
                  for lang in ("C", "CXX"))
        + "".join(f'set(CMAKE_{kind}_LINKER_FLAGS "-fuse-ld=lld" CACHE STRING "")\n'
                  for kind in ("EXE", "SHARED", "MODULE")))


def source_tree(package: str, work: Path) -> Path:
    from corpus_tools import debian

    target = work / "src"
    if not (target / "CMakeLists.txt").is_file():
        dsc = debian.download_source(package, debian.DEFAULT_CACHE)
        unpacked = debian.unpack_source(dsc, work / "unpack")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None,
                    help="a CMake project (default: Debian's double-conversion, unpacked into WORK)")
    ap.add_argument("--library-dir", default=DEFAULTS["library_dir"],
                    help="the library's sources: compiles of files under SOURCE/THIS form the corpus")
    ap.add_argument("--library", default=DEFAULTS["library"],
                    help="the linked library (or binary) to measure, in the build directory")
    ap.add_argument("--project", default=None,
                    help="project name in the corpus (default: the package's, or SOURCE's name)")
    ap.add_argument("--work", type=Path, default=Path("own-project"))
    ap.add_argument("--workers", default="1")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "flow.log"
    times: dict[str, float] = {}

    def step(name: str) -> float:
        print(f"\n=== {name}", flush=True)
        return time.monotonic()

    t = step("1. build at plain -Oz, run the tests")
    src = (args.source or source_tree(DEFAULTS["package"], work)).resolve()
    if args.source is None and args.project is None:
        args.project = DEFAULTS["package"]
    plain_init(work / "plain.cmake")
    cmake_build(src, work / "build-plain", work / "plain.cmake", log)
    plain_tests = ctest(work / "build-plain", log)
    times["build"] = time.monotonic() - t

    t = step("2. corpus of the library's compiles (-Oz IR)")
    db = json.loads((work / "build-plain" / "compile_commands.json").read_text())
    lib_dir = src / args.library_dir
    lib = [e for e in db if Path(e["file"]).resolve().is_relative_to(lib_dir)]
    if not lib:
        raise SystemExit(f"{work / 'build-plain' / 'compile_commands.json'}: no compile of a "
                         f"file under {lib_dir}")
    (work / "library_compile_commands.json").write_text(json.dumps(lib, indent=1))
    corpus, search, im = work / "corpus", work / "search", work / "imitation"
    run(mlgo("corpus", "extract", "--compile-db", str(work / "library_compile_commands.json"),
             "--project", args.project or src.name, "--root", str(lib_dir), "-o", str(corpus), "-j", "2"), log)
    times["corpus"] = time.monotonic() - t

    t = step("3. search (COMDAT-aware)")
    out = run(mlgo("search", "--problem", "inlining", "--corpus", str(corpus), "-o", str(search),
                   "--workers", args.workers, "--comdat-aware"), log)
    print(out.strip())
    times["search"] = time.monotonic() - t

    t = step("4. imitation on all of the library's modules")
    run(mlgo("train", "--problem", "inlining", "--algorithm", "imitation", "--corpus",
             str(corpus), "-o", str(im), "--search", str(search), "--workers", args.workers,
             "--validation-fraction", "0", "--gin_file", str(GIN), "--gin_bindings",
             f"inlining.InliningForSize.comdat_weights = '{search / 'comdat_weights.json'}'"),
        log)
    times["train"] = time.monotonic() - t

    t = step("5. the policy on the corpus, and its export")
    policy = im / "policy"
    out = run(mlgo("eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
                   str(policy), "--workers", args.workers, "--json", str(work / "eval.json")), log)
    print(out.strip())
    run(mlgo("export", "--policy", str(policy), "-o", str(work / "export"), "--no-aot"), log)
    times["eval+export"] = time.monotonic() - t

    t = step("6. rebuild with -fpass-plugin, measure, run the tests")
    init = run(mlgo("cmake-flags", str(policy)), log)
    (work / "mlgo.cmake").write_text(init)
    cmake_build(src, work / "build-plugin", work / "mlgo.cmake", log)
    plugin_tests = ctest(work / "build-plugin", log)
    times["rebuild+tests"] = time.monotonic() - t

    plain = text_size(work / "build-plain" / args.library)
    ml = text_size(work / "build-plugin" / args.library)
    ev = json.loads((work / "eval.json").read_text())
    total = sum(times.values())
    print(f"\n{'step':16s} {'minutes':>8s}")
    for k, v in times.items():
        print(f"{k:16s} {v / 60:8.1f}")
    print(f"{'total':16s} {total / 60:8.1f}")
    print(f"\npolicy on the corpus (mlgo eval): {100 * ev['relative_change']:+.2f}% per object"
          + f", {100 * ev['linked_relative_change']:+.2f}% as linking keeps it")
    print(f"{args.library} .text: plain -Oz {plain:,} bytes, -Oz + plugin {ml:,} bytes: "
          f"{100 * relative_change(plain, ml):+.2f}%")
    print(f"tests, plain -Oz: {plain_tests}")
    print(f"tests, plugin:    {plugin_tests}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
