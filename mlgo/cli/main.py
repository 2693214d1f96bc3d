"""`mlgo` entry point: argparse subcommands. Each command module exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mlgo_base.errors import MlgoError, describe_os_error
from mlgo_base.toolchain import VERSION_VARIABLE

# Modules that define subcommands, imported lazily so `mlgo --help` stays quick.
COMMAND_MODULES = [
    "mlgo.cli.corpus",
    "mlgo.cli.trace",
    "mlgo.cli.vocab",
    "mlgo.cli.eval",
    "mlgo.cli.train",
    "mlgo.cli.search",
    "mlgo.cli.export",
    "mlgo.cli.margin",
    "mlgo.cli.profile",
    "mlgo.cli.plugin",
    "mlgo.cli.demo",
    "mlgo.cli.tune",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlgo",
        description="Train ML policies for LLVM's inliner and register allocator, "
        "and serve them to stock clang (clang-19 or clang-22: MLGO_LLVM_VERSION, --llvm-version).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines, reported at error
    # level) is noise here; TF's real failures still surface as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "llvm_version", None):
        os.environ[VERSION_VARIABLE] = args.llvm_version  # inherited by workers and compiles
    try:
        return int(args.func(args) or 0)
    except MlgoError as e:
        print(f"mlgo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only directory, ...: the file and the cause
        print(f"mlgo: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlgo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
