"""`mlgo plugin POLICY`: print the path of an inliner pass plugin serving POLICY, building it
on first use, for `clang-19 -Oz -fpass-plugin=$(mlgo plugin POLICY)`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plugin",
        help="build (once) and print the path of an inliner plugin for clang-19 -fpass-plugin",
        description="Print the path of libmlgo_inliner.so serving POLICY to stock clang-19: "
        "clang-19 -Oz -fpass-plugin=$(mlgo plugin cost-threshold) -c x.c",
    )
    p.add_argument("policy", metavar="POLICY",
                   help="a built-in inliner heuristic (cost-threshold, never, always) or a "
                   "trained policy directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.serving.plugin import plugin_for

    print(plugin_for(args.policy))
    return 0
