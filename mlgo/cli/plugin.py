"""`mlgo plugin POLICY`: print the path of an inliner pass plugin serving POLICY, building it
on first use, for `clang-19 -Oz -fpass-plugin=$(mlgo plugin POLICY)` (clang-22 with
MLGO_LLVM_VERSION=22: the plugin is built against the chosen LLVM). Also `mlgo cmake-flags`
(the same for CMake projects) and `mlgo summary` (what was served in a build)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo.policies.builtins import RULES
from mlgo.policies.shipped import shipped_names

_POLICY_HELP = (f"a built-in inliner heuristic ({', '.join(RULES['inlining'])}), a shipped policy "
                f"({', '.join(shipped_names()) or 'none installed'}) or a trained policy directory")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plugin",
        help="build (once) and print the path of an inliner plugin for clang -fpass-plugin",
        description="Print the path of libmlgo_inliner.so serving POLICY to the stock clang of "
        "the chosen LLVM version (MLGO_LLVM_VERSION, default 19 when clang-19 is installed): "
        "clang-19 -Oz -fpass-plugin=$(mlgo plugin cost-threshold) -c x.c",
    )
    p.add_argument("policy", metavar="POLICY", help=_POLICY_HELP)
    p.add_argument("--decisions", metavar="TABLE", type=Path, default=None,
                   help="a decision table (`mlgo tune` writes OUT/decisions.json): the plugin "
                   "serves its answers at the call sites it names, in the modules whose source "
                   "path ends with the table's path for them, and POLICY's everywhere else "
                   "(docs/tune.md)")
    p.set_defaults(func=run)

    c = subparsers.add_parser(
        "cmake-flags",
        help="print a CMake initial-cache file serving an inliner policy in every build type",
        description="Print a CMake initial-cache file that compiles every optimizing build type "
        "(Release, MinSizeRel, RelWithDebInfo) at -Oz with the inliner plugin for POLICY and, "
        "unless --no-lld, links with lld loading the plugin (so -flto links get the policy "
        "too): mlgo cmake-flags inlining-oz > mlgo.cmake; cmake -C mlgo.cmake "
        "-DCMAKE_BUILD_TYPE=Release ..",
    )
    c.add_argument("policy", metavar="POLICY", help=_POLICY_HELP)
    c.add_argument("--cc", metavar="PATH",
                   help="C compiler (default: the chosen clang, clang-19 or clang-22; e.g. "
                   "$(mlgo-clang --print-launcher))")
    c.add_argument("--cxx", metavar="PATH",
                   help="C++ compiler (default: the chosen clang++; e.g. "
                   "$(mlgo-clang++ --print-launcher))")
    c.add_argument("--no-lld", action="store_true",
                   help="leave the linker alone (then -flto links use LLVM's own inliner)")
    c.set_defaults(func=run_cmake_flags)

    s = subparsers.add_parser(
        "summary",
        help="add up the decisions a build's policies served (MLGO_DECISION_SUMMARY)",
        description="Build with MLGO_DECISION_SUMMARY=FILE set (the plugin "
        "and mlgo-clang append one line per compile), then print which policy served how many "
        "decisions where, and what was not served.",
    )
    s.add_argument("file", metavar="FILE", type=Path,
                   help="the file MLGO_DECISION_SUMMARY named during the build")
    s.set_defaults(func=run_summary)


def run(args: argparse.Namespace) -> int:
    from mlgo.serving.plugin import plugin_for

    print(plugin_for(args.policy, args.decisions))
    return 0


def run_cmake_flags(args: argparse.Namespace) -> int:
    from mlgo.serving.cmake import initial_cache
    from mlgo.serving.plugin import plugin_for
    from mlgo_base.toolchain import locate

    compilers = {"C": args.cc or locate("clang"), "CXX": args.cxx or locate("clang++")}
    print(initial_cache(str(plugin_for(args.policy)), args.policy, compilers,
                        lld=not args.no_lld), end="")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from mlgo.serving.summary import format_summary, read_summary

    print(format_summary(read_summary(args.file)), end="")
    return 0
