"""A corpus must be the IR of the build its policy serves.

At -Os/-Oz clang's frontend marks every function it defines optsize (and minsize at -Oz); the
inliner drops its inlinehint bonus and codegen shrinks on those attributes. IR emitted at -O2
and compiled with -Oz keeps none of that, so its "default" is a build nobody makes (10-13%
more .text on C++). Problems that replace the level check the attributes of every module
before any work starts (llvmlite; results cached by the bitcode's hash)."""

from __future__ import annotations

import json

from corpus_tools.corpus import Corpus, Module, atomic_write_text, file_sha256
from corpus_tools.ir_analysis import SizeAttributes, size_attributes
from mlgo.compiler.cache import cache_dir
from mlgo.errors import MlgoError

# What SizeAttributes.level() reads from IR emitted at each level.
_EXPECTED = {"-Oz": "-Oz", "-Os": "-Os", "-O1": "-O1/-O2/-O3", "-O2": "-O1/-O2/-O3",
             "-O3": "-O1/-O2/-O3"}


class FrontendLevelError(MlgoError):
    """A module's IR was emitted at another level than the problem compiles it at."""


def module_attributes(module: Module) -> SizeAttributes:
    """The module's size attributes, from the cache when its bitcode was seen before."""
    digest = file_sha256(module.bc_path)
    path = cache_dir() / "frontend-levels" / digest[:2] / f"{digest}.json"
    try:
        d = json.loads(path.read_text())
        return SizeAttributes(int(d["defined"]), int(d["minsize"]), int(d["optsize"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or torn: recompute
    attrs = size_attributes(module.bc_path)
    try:
        atomic_write_text(path, json.dumps(attrs.__dict__))
    except OSError:
        pass  # a read-only cache only costs the parse next time
    return attrs


def check_frontend_level(corpus: Corpus, level: str, problem: str) -> None:
    """Raise FrontendLevelError naming the first module whose IR was not emitted at `level`
    (a flag such as -Oz), what it has instead, and the command that re-extracts it."""
    expected = _EXPECTED.get(level)
    if expected is None:
        return  # e.g. -O0: nothing to compare
    bad: list[tuple[Module, SizeAttributes]] = []
    for m in corpus.modules:
        attrs = module_attributes(m)
        if attrs.level() not in (expected, "no functions"):
            bad.append((m, attrs))
    if not bad:
        return
    module, attrs = bad[0]
    more = f" ({len(bad) - 1} more modules like it)" if len(bad) > 1 else ""
    need = {"-Oz": "every function minsize optsize", "-Os": "every function optsize",
            }.get(level, "no function minsize or optsize")
    raise FrontendLevelError(
        f"{module.bc_path}: IR emitted at {attrs.level()} ({attrs.describe()}), but {problem} "
        f"compiles at {level} and needs IR as `clang-19 {level} -c` emits it ({need}){more}; "
        f"re-extract: {corpus.reextract_command(module.project, level)}")
