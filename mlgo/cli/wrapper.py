"""`mlgo-clang` / `mlgo-clang++`: drop-in CC/CXX that compile with mlgo's policies.

The work is done by one native program (mlgo/serving/mlgo_clang.cpp) built for the current
MLGO_REGALLOC_POLICY (unset or empty: `default-rule`; `default` serves none) and
MLGO_INLINE_POLICY (unset or empty: none): it tells compile jobs from everything else, serves
the regalloc policy to the chosen clang (clang-19, or clang-22 with MLGO_LLVM_VERSION=22) in its
own process and passes everything else to that clang unchanged. This entry point only finds
that program (building it on first use) and executes it; `--print-launcher` prints its path
instead, so that a build can use it as CC with no Python
per compile. The program itself takes either variable unset or empty as asking for what it
was made for.
"""

from __future__ import annotations

import os
import sys


def _error(msg: str) -> int:
    print(f"mlgo-clang: error: {msg}", file=sys.stderr)
    return 1


def _main(driver: str) -> None:
    from mlgo.serving.launcher import launcher_for
    from mlgo_base.errors import MlgoError

    args = sys.argv[1:]
    printing = args == ["--print-launcher"]
    try:
        # Executing, a policy that cannot be had is the program's to report: it still passes
        # preprocessing, links and --version through. Printing, it is refused here.
        program = launcher_for(driver, strict=printing)
    except MlgoError as e:
        sys.exit(_error(f"cannot make the native launcher: {e}" if printing else str(e)))
    if printing:
        print(program)
        sys.exit(0)
    try:
        os.execv(program, [program, *args])
    except OSError as e:
        sys.exit(_error(f"cannot run {program}: {e}"))


def main_c() -> None:
    _main("clang")


def main_cxx() -> None:
    _main("clang++")
