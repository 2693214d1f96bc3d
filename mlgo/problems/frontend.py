"""A corpus must be the IR of the build its policy serves.

At -Os/-Oz clang's frontend marks every function it defines optsize (and minsize at -Oz); the
inliner drops its inlinehint bonus and codegen shrinks on those attributes. IR emitted at -O2
and compiled with -Oz keeps none of that, so its "default" is a build nobody makes (10-17%
more .text: benchmarks/results-archive-2026.md, "-Oz IR: the environment against the real
build"). Problems that replace the level check the attributes of every module
before any work starts (llvmlite; results cached by the bitcode's hash)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from corpus_tools.corpus import Corpus, Module
from corpus_tools.extract import (
    DEFAULT_EXCLUDES,
    compile_db_tasks,
    object_compile_argv,
    read_compile_db,
)
from corpus_tools.extract_pipeline import run_with_timeout
from corpus_tools.ir_analysis import SizeAttributes, size_attributes
from mlgo.compiler.cache import cache_dir
from mlgo.compiler.measure import text_size
from mlgo_base.errors import CorpusError, MlgoError
from mlgo_base.files import atomic_write_text, file_sha256

if TYPE_CHECKING:
    from mlgo.problems.base import Problem

# What SizeAttributes.level() reads from IR emitted at each level.
_EXPECTED = {"-Oz": "-Oz", "-Os": "-Os", "-O1": "-O1/-O2/-O3", "-O2": "-O1/-O2/-O3",
             "-O3": "-O1/-O2/-O3"}


# Bump when what SizeAttributes counts changes: cached counts of another rule are not reused.
_CACHE_NAME = "frontend-levels-v2"


class FrontendLevelError(MlgoError):
    """A module's IR was emitted at another level than the problem compiles it at."""


def module_attributes(module: Module) -> SizeAttributes | None:
    """The module's size attributes, from the cache when its bitcode was seen before; None
    when llvmlite cannot read it (the compile will then fail and report it as usual)."""
    digest = file_sha256(module.bc_path)
    path = cache_dir() / _CACHE_NAME / digest[:2] / f"{digest}.json"
    try:
        d = json.loads(path.read_text())
        return SizeAttributes(int(d["defined"]), int(d["minsize"]), int(d["optsize"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or torn: recompute
    try:
        attrs = size_attributes(module.bc_path)
    except CorpusError:
        return None
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
        return  # -O0, -Og, -Ofast: no size attributes tell these apart from -O2
    bad: list[tuple[Module, SizeAttributes]] = []
    for m in corpus.modules:
        attrs = module_attributes(m)
        if attrs is not None and attrs.level() not in (expected, "no functions"):
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


@dataclass(frozen=True)
class BuildComparison:
    """One module: the environment's default measurement vs the object the build's own
    compile of its source makes at the problem's level."""

    module: str
    source: str
    environment: float
    build: float


def compare_with_build(problem: Problem, corpus: Corpus, compile_db: Path, *, project: str,
                       root: Path, exclude: Sequence[str] = DEFAULT_EXCLUDES,
                       timeout: float = 600.0) -> list[BuildComparison]:
    """For every module of `project` in `corpus` extracted from `compile_db`: the problem's
    default measurement (what rewards are relative to) and the measurement of the object that
    the build's compile of the source makes with its level replaced by the problem's, i.e.
    `clang-19 -Oz -c SOURCE` with the build's flags. Equal numbers mean the environment
    measures the build a user makes."""
    level = problem.opt_level
    tasks = compile_db_tasks(read_compile_db(compile_db), project=project, root=root,
                             exclude=exclude, opt_level=level)
    modules = {m.name: m for m in corpus.modules}
    out: list[BuildComparison] = []
    for task in tasks:
        module = modules.get(task.module)
        if module is None:
            continue  # a duplicate of another module, or failed to extract
        argv = object_compile_argv(task)
        with tempfile.TemporaryDirectory(prefix="mlgo-build-") as td:
            obj = Path(td) / "out.o"
            res = run_with_timeout([*argv, "-o", str(obj)], cwd=task.cwd, timeout=timeout)
            if res.returncode != 0:
                raise MlgoError(f"{task.source}: the build's compile failed: "
                                f"{res.stderr.strip()[:500]}")
            built = float(text_size(obj))
        out.append(BuildComparison(task.module, task.source,
                                   problem.baseline(module).total, built))
    return out
