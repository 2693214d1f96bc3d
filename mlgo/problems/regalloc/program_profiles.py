"""The training programs' block profiles and corpus (`mlgo profile programs`): each program of
mlgo/problems/regalloc/programs.py built plain (clang-19 at the package's own flags, plus
-fbasic-block-address-map), its workload run under callgrind and checked against the known
output, and the run turned into a profile keyed by corpus module (profile.program_profile);
beside it, a corpus of exactly the compiles profiled, each at its build's own level, whose
module names (`<project>/<source>`) are the profile's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlgo.problems.regalloc.profile import Profile, program_profile
from mlgo.problems.regalloc.programs import (
    EXTRA_TRAINING,
    HELD_OUT,
    KNOWN,
    RECIPES,
    TRAINING,
    VALIDATION,
    ProgramError,
    Runner,
    build,
    compile_commands,
    project_of,
    tree_of,
)
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

BB_FLAGS = ("-fbasic-block-address-map",)


def check_training_programs(programs: Sequence[str]) -> None:
    """MlgoError unless every program is a known training program: a profile or corpus made
    from a validation or held-out program would leak it into training."""
    for p in programs:
        if p not in RECIPES:
            raise MlgoError(f"{p}: no such program (known: {', '.join(sorted(RECIPES))})")
    kind = {**dict.fromkeys(HELD_OUT, "held out"), **dict.fromkeys(VALIDATION, "validation")}
    held = [f"{p} ({kind[p]})" for p in programs if p not in TRAINING + EXTRA_TRAINING]
    if held:
        raise MlgoError(f"{', '.join(held)}: a training profile or corpus comes from the training "
                        f"programs only ({', '.join(TRAINING + EXTRA_TRAINING)})")


def profile_program(program: str, work: Path, cache: Path | None = None) -> Profile:
    """Build `program` plain in `work`, run its workload under callgrind, check its output and
    return its block profile per corpus module (every module, executed or not)."""
    recipe = RECIPES[program]
    tree = tree_of(program, recipe, cache)
    recipe = dataclasses.replace(recipe, extra=recipe.extra + BB_FLAGS)
    env = {k: v for k, v in os.environ.items() if k != "MLGO_INLINE_POLICY"}
    exe = build(program, recipe, tree, toolchain.clang().path, env, work / "build")
    run = Runner(program, profile_dir=work / "callgrind", callgrind_args=("--dump-instr=yes",))
    (work / "run").mkdir(parents=True, exist_ok=True)
    output = recipe.workload(exe, work / "run", run)
    if output != KNOWN[program]:
        raise ProgramError(program, "checking the workload's output",
                           f"got {output!r}, expected {KNOWN[program]!r}")
    project = project_of(program)
    return program_profile(exe, sorted((work / "callgrind").glob("*.cg")),
                           {f"{project}/{rel}": work / "build" / (rel.replace("/", "_") + ".o")
                            for rel in recipe.sources})


def extract_program_corpus(program: str, out: Path, cache: Path | None = None) -> None:
    """Add the program's compiles, exactly as profile_program builds them (same arguments,
    same extra defines, without the address-map flag), to the corpus `out`, each at its own
    level: module names match the profile's (`<project>/<source>`)."""
    from corpus_tools.extract import extract_compile_db

    recipe = RECIPES[program]
    tree = tree_of(program, recipe, cache)
    entries = [{"directory": str(cwd), "file": str(tree / rel),
                "arguments": [toolchain.clang().path, *args, *recipe.extra, "-c", str(tree / rel),
                              "-o", "/dev/null"]}
               for rel, args, cwd in compile_commands(program, recipe, tree)
               if not rel.endswith(".S")]
    with tempfile.TemporaryDirectory(prefix="mlgo-rcorpus-") as tmp:
        db = Path(tmp) / "compile_commands.json"
        db.write_text(json.dumps(entries))
        summary = extract_compile_db(db, out, project=project_of(program), root=tree,
                                     exclude=(), progress=False, opt_level=None)
    if summary.failed:
        raise ProgramError(program, "extracting the corpus", str(summary.failed[0]))


def profile_programs(programs: Sequence[str], *, corpus: Path | None = None,
                     workdir: Path | None = None, cache: Path | None = None) -> Profile:
    """The merged profile of `programs` (training programs only), and, with `corpus`, their
    compiles extracted into that corpus. `workdir` keeps the builds and callgrind files
    (default: a temporary directory)."""
    check_training_programs(programs)
    profile: Profile = {}
    with tempfile.TemporaryDirectory(prefix="mlgo-profile-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for program in programs:
            work = root / project_of(program)
            if work.exists():  # old callgrind files would be counted again
                raise MlgoError(f"{work}: already exists; remove it or use another work directory")
            profile.update(profile_program(program, work, cache))
            if corpus is not None:
                extract_program_corpus(program, corpus, cache)
    return profile
