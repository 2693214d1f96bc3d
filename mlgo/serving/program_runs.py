"""Policies measured on whole programs: regalloc's training and validation programs
(mlgo/problems/regalloc/programs.py) built through mlgo-clang's launcher serving each policy,
their workloads run under callgrind, and the instructions executed compared with plain
clang-19's build (`mlgo margin --choose-on-programs`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mlgo.problems.regalloc.programs import HELD_OUT, RECIPES, project_of, workload_instructions
from mlgo.serving.launcher import launcher_for
from mlgo_base import toolchain
from mlgo_base.change import relative_change
from mlgo_base.errors import MlgoError


def check_choice_programs(programs: Sequence[str]) -> None:
    """MlgoError for an unknown program or a held-out one (those are measured once, for
    reports: choosing on them would leak them into the policy)."""
    for p in programs:
        if p not in RECIPES:
            raise MlgoError(f"{p}: no such program (known: {', '.join(sorted(RECIPES))})")
        if p in HELD_OUT:
            raise MlgoError(f"{p}: a held-out program; choose on validation or training "
                            "programs only")


@contextmanager
def _serving(policy: str | None) -> Iterator[dict[str, str]]:
    """The environment of a compile serving `policy` for eviction (None: plain clang-19), and
    no inlining policy: only eviction is measured. os.environ is restored afterwards."""
    saved = dict(os.environ)
    try:
        os.environ.pop("MLGO_INLINE_POLICY", None)
        if policy is not None:
            os.environ["MLGO_REGALLOC_POLICY"] = policy
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def plain_instructions(programs: Sequence[str], work: Path,
                       cache: Path | None = None) -> dict[str, int]:
    """{program: instructions its workload executes built by plain clang-19}."""
    check_choice_programs(programs)
    with _serving(None) as env:
        return {p: workload_instructions(p, toolchain.clang().path, env,
                                         work / f"{project_of(p)}-plain", cache)
                for p in programs}


def policy_instructions(policy: str, programs: Sequence[str], work: Path,
                        cache: Path | None = None) -> dict[str, int]:
    """{program: instructions its workload executes built through the launcher serving
    `policy` for eviction}."""
    check_choice_programs(programs)
    tag = Path(policy).name or "policy"
    with _serving(policy) as env:
        cc = launcher_for("clang")
        return {p: workload_instructions(p, cc, env, work / f"{project_of(p)}-{tag}", cache)
                for p in programs}


def program_changes(plain: dict[str, int], policy: dict[str, int]) -> dict[str, float]:
    """Each program's relative change in executed instructions, and "total": the change of
    their sum (mlgo_base/change.py: negative is fewer)."""
    out = {p: relative_change(plain[p], policy[p]) for p in plain}
    out["total"] = relative_change(sum(plain.values()), sum(policy[p] for p in plain))
    return out
