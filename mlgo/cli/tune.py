"""`mlgo tune`: make one project's own build smaller in one command (mlgo/tune/, docs/tune.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.checks import MAX_TIMEOUT
from mlgo.cli.args import int_arg, timeout_arg, workers_arg
from mlgo_base import toolchain


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune the inliner on your own project: build, search, train, rebuild "
        "with the plugin, test, report",
        description="Tune the inliner on one project's own code within a time budget, and build "
        "it again with the tuned policy's plugin. Give a CMake source directory (configured and "
        "built here at -Oz with the chosen clang) or --compile-db compile_commands.json from any "
        "build system. Re-run the same command to resume; see docs/tune.md.")
    p.add_argument("--problem", choices=("inlining", "regalloc"), default="inlining",
                   help="inlining (default: a smaller build) or regalloc (the register "
                   "allocator's eviction tuned for --workload, checked on --check-workload)")
    p.add_argument("--program", default=None, metavar="PATH",
                   help="regalloc: the executable the workloads run, relative to the build "
                   "directory")
    p.add_argument("--workload", default=None, metavar="CMD",
                   help="regalloc: the training workload, run by sh with $PROGRAM set")
    p.add_argument("--check-workload", default=None, metavar="CMD",
                   help="regalloc: another input the result is checked on (never trained on)")
    p.add_argument("--no-pgo", action="store_true",
                   help="regalloc: leave out clang's own PGO builds from the comparison")
    p.add_argument("source", nargs="?", type=Path, default=None, metavar="CMAKE_SOURCE_DIR",
                   help="a CMake project to configure and build at -Oz (or give --compile-db)")
    p.add_argument("--compile-db", type=Path, default=None, metavar="FILE",
                   help="a compile_commands.json instead of a CMake source directory")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output directory (run the same command again to resume)")
    p.add_argument("--time-budget", default="60m",
                   help="wall time for the whole run, e.g. 60m, 1h30m, 300s (default 60m)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="tune only compiles whose source path (relative to the source "
                   "directory) matches a GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out compiles whose source path matches GLOB (repeatable)")
    p.add_argument("--include-tests", action="store_true",
                   help="tune test sources too (by default a path with a test/tests/testing/"
                   "unittest(s) directory, or a file test_* or *_test.*, is left out)")
    p.add_argument("--test-command", default=None, metavar="CMD",
                   help="the project's tests, run by sh in the build directory on the plain "
                   "and on the plugin build (e.g. 'ctest --output-on-failure')")
    p.add_argument("--cmake-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for both CMake configures, written with = since it starts with '-': --cmake-arg=-DBUILD_SHARED_LIBS=ON")
    p.add_argument("--project", default=None, help="project name in module names (default: "
                   "the source directory's name)")
    p.add_argument("--previous", type=Path, default=None, metavar="OUT_OLD",
                   help="an earlier tune of this project (another version): reuse the search "
                   "results of unchanged modules, start training from its policy, and report "
                   "what its policy keeps on this code")
    p.add_argument("--search-strategy", default="greedy", choices=("greedy", "strong"),
                   help="greedy (default): single flips from LLVM's decisions, a module still "
                   "searching when the time is up keeps nothing; strong: group moves, pairs, "
                   "perturbation, enumeration of small modules and batched flips on large "
                   "ones, its time spent where it "
                   "gains most and each module's best kept when the time is up (it reaches "
                   "more on small modules, but on lua's whole tune it found less than greedy: "
                   "docs/tune.md)")
    p.add_argument("--module-budget", type=int_arg(lo=0), default=None,
                   help="search compiles per module at most (default: no limit for strong, "
                   "100 for greedy; 0: no limit)")
    p.add_argument("--flips", default="auto", choices=("auto", "all", "inlined", "marginal"),
                   help="greedy: which call sites the search flips (default auto: only inlined "
                   "ones on C, all on C++)")
    p.add_argument("--rounds", type=int_arg(lo=1), default=1,
                   help="imitation rounds (each later one searches again, guided; default 1)")
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="training settings after mlgo/problems/inlining/own_project.gin's, e.g. "
                   "'imitation.ImitationConfig.epochs = 300'")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="worker processes (default: cores)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the compiles on a Ray cluster ('local', 'auto' or host:port)")
    p.add_argument("--timeout", type=timeout_arg, default=300.0,
                   help=f"per-compile wall-clock limit in seconds, at most {MAX_TIMEOUT:g}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.problem == "regalloc":
        return run_regalloc(args)
    from mlgo.tune.flow import TuneOptions, tune
    from mlgo.tune.progress import parse_duration

    doc = tune(TuneOptions(
        output=args.output, source=args.source, compile_db=args.compile_db,
        include=tuple(args.include), exclude=tuple(args.exclude),
        include_tests=args.include_tests, test_command=args.test_command,
        cmake_args=tuple(args.cmake_arg), project=args.project, previous=args.previous,
        search_strategy=args.search_strategy, module_budget=args.module_budget,
        flips=args.flips, rounds=args.rounds,
        time_budget=parse_duration(args.time_budget), workers=args.workers, ray=args.ray,
        timeout=args.timeout, gin_bindings=tuple(args.gin_bindings)))
    print(summary(doc))
    return 0


def summary(doc: dict) -> str:
    """The report's headline figures."""
    lines = []
    if "binaries" in doc:
        t = doc["binaries_total"]
        lines.append(f"linked binaries .text: {t['plain']:,} (plain -Oz) -> {t['plugin']:,} "
                     f"(plugin) bytes: {100 * t['change']:+.2f}%")
    for key, what in (("tuned_modules_total", "tuned modules"),
                      ("other_modules_total", "modules not tuned")):
        t = doc[key]
        if t["count"]:
            lines.append(f"{what} ({t['count']}) .text: {t['plain']:,} -> {t['plugin']:,} "
                         f"bytes: {100 * t['change']:+.2f}%")
    if doc["tests"].get("command"):
        lines.append(f"tests passed on the plugin build: {doc['tests']['command']}")
    lines.append(f"this run: {doc['run_seconds'] / 60:.1f} min; report: {doc['outputs']['report']}")
    lines.append(f"flags: {doc['outputs']['cmake initial cache']} (cmake -C), "
                 f"{doc['outputs']['build-system environment']} (CC/CFLAGS/LDFLAGS)")
    return "\n".join(lines)


def run_regalloc(args: argparse.Namespace) -> int:
    from mlgo.tune.progress import parse_duration
    from mlgo.tune.regalloc_flow import RegallocTuneOptions, tune_regalloc
    from mlgo_base.errors import MlgoError

    if args.compile_db is not None or args.source is None:
        raise MlgoError("--problem regalloc builds and runs the program: give its CMake source "
                        "directory (a compile database alone cannot be linked and run)")
    doc = tune_regalloc(RegallocTuneOptions(
        output=args.output, source=args.source, program=args.program or "",
        workload=args.workload or "", check_workload=args.check_workload or "",
        cmake_args=tuple(args.cmake_arg), project=args.project,
        module_budget=args.module_budget or 100, pgo=not args.no_pgo,
        time_budget=parse_duration(args.time_budget), workers=args.workers,
        timeout=args.timeout, gin_bindings=tuple(args.gin_bindings)))
    for v, r in doc["instructions"].items():
        if v != "plain":
            print(f"{v}: training workload {100 * r['train']['change']:+.3f}%, check workload "
                  f"{100 * r['check']['change']:+.3f}% instructions against plain "
                  f"clang-{toolchain.llvm_major()}")
    print(f"verdict: {doc['verdict']}; policy: {doc['outputs']['policy']}")
    print(f"this run: {doc['run_seconds'] / 60:.1f} min; report: {doc['outputs']['report']}")
    return 0
