"""The program `mlgo tune --problem regalloc` tunes: its CMake builds, its workloads, and what a
run of them measures.

Every build is the project's own CMake build (its own build type, Release unless a
--cmake-arg sets another) with mlgo-clang as the compiler, plus -fbasic-block-address-map (a
section of block addresses beside the code, which leaves the code as it is) so that a run can
be told per machine block and per function. The variants differ only in what mlgo-clang
serves and in clang's own profile flags:

  plain      no regalloc policy (MLGO_REGALLOC_POLICY=default: clang-19's own eviction)
  tuned      the tuned eviction policy
  pgo-gen    clang's instrumentation (-fprofile-instr-generate), run on the training workload
  pgo        the instrumented run's profile used (-fprofile-instr-use), no regalloc policy
  pgo-tuned  the same profile used, and the tuned eviction policy
  selected   the tuned policy served only where it was measured to help (regalloc_select.py)
  pgo-selected  the same with the PGO profile used

A workload is a shell command run by sh in a fresh directory with $PROGRAM naming the program
to run (under callgrind, $PROGRAM is a script running it under valgrind --tool=callgrind);
its standard output and exit status are its output, which every build must reproduce."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlgo.tune.project import configure_and_build
from mlgo_base import process, toolchain
from mlgo_base.errors import MlgoError

BB_FLAGS = "-fbasic-block-address-map"
VARIANTS = ("plain", "tuned", "selected", "pgo-gen", "pgo", "pgo-tuned", "pgo-selected")


@dataclass(frozen=True)
class Build:
    """How one variant is built: the regalloc policy mlgo-clang serves and clang's PGO flag."""

    variant: str
    policy: str = "default"  # MLGO_REGALLOC_POLICY for the build
    pgo_flag: str = ""  # -fprofile-instr-generate or -fprofile-instr-use=FILE
    # Serve `policy` only when compiling one of these files (as the compile commands name
    # them), clang's own eviction elsewhere; None: every compile.
    served_sources: tuple[str, ...] | None = None


def cmake_build(src: Path, build: Path, spec: Build, cmake_args: Sequence[str], log: Path, *,
                jobs: int, timeout: float) -> Path:
    """Configure and build `src` into `build` as `spec` says; returns its
    compile_commands.json. The compiler is mlgo-clang serving spec.policy."""
    env = {k: v for k, v in os.environ.items() if k != "MLGO_INLINE_POLICY"}
    env["MLGO_REGALLOC_POLICY"] = spec.policy
    if spec.served_sources is None:
        cc, cxx = _launchers(spec.policy)
    else:
        cc, cxx = per_source_compilers(spec.policy, spec.served_sources,
                                       build.parent / f"compilers-{spec.variant}")
        env.pop("MLGO_REGALLOC_POLICY")  # each compile's script sets it
        # mlgo-clang appends a line per compile it served a policy in: the check below.
        served_log = log.parent / f"served-{spec.variant}.tsv"
        served_log.parent.mkdir(parents=True, exist_ok=True)
        served_log.write_text("")
        env["MLGO_DECISION_SUMMARY"] = str(served_log)
    flags = " ".join(f for f in (BB_FLAGS, spec.pgo_flag) if f)
    link = " ".join(f for f in ("-fuse-ld=lld", spec.pgo_flag if "generate" in spec.pgo_flag
                                else "") if f)
    if build.exists():  # a build cut short earlier: start it again from nothing
        shutil.rmtree(build)
    db = configure_and_build(
        ["cmake", f"-DCMAKE_C_COMPILER={cc}", f"-DCMAKE_CXX_COMPILER={cxx}",
         "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
         f"-DCMAKE_EXE_LINKER_FLAGS={link}", f"-DCMAKE_SHARED_LINKER_FLAGS={link}",
         "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *cmake_args, "-S", str(src), "-B", str(build)],
        src, build, log, jobs=jobs, timeout=max(timeout, 1.0), env=env, label=spec.variant)
    if spec.served_sources:
        served = sum(line.startswith("regalloc\t") for line in
                     served_log.read_text().splitlines())
        wanted = len(set(spec.served_sources))
        if served < wanted:
            raise MlgoError(f"{served_log}: the {spec.variant} build served the policy in "
                            f"{served} compile(s), fewer than the {wanted} source(s) it was "
                            "for: a compile names its source otherwise than "
                            "compile_commands.json does")
    return db


def _launchers(policy: str) -> tuple[str, str]:
    """mlgo-clang's programs (C, C++) serving `policy` for eviction."""
    from mlgo.serving.launcher import launcher_for

    saved = os.environ.get("MLGO_REGALLOC_POLICY")
    os.environ["MLGO_REGALLOC_POLICY"] = policy
    try:
        return launcher_for("clang"), launcher_for("clang++")
    finally:
        if saved is None:
            os.environ.pop("MLGO_REGALLOC_POLICY", None)
        else:
            os.environ["MLGO_REGALLOC_POLICY"] = saved


def per_source_compilers(policy: str, sources: Sequence[str], where: Path) -> tuple[str, str]:
    """Compilers (C, C++) in `where` serving `policy` when a compile names one of `sources`
    (source paths exactly as the compile commands give them) and clang's own eviction for
    every other compile: each a shell script choosing one of mlgo-clang's two programs by the
    compile's arguments. mlgo-clang serves one policy per program; this is the one place a
    build serves a policy per source file."""
    tuned, plain = _launchers(policy), _launchers("default")
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    patterns = "|".join(shlex.quote(s) for s in sorted(set(sources)))
    out = []
    for driver, t, p in (("clang", tuned[0], plain[0]), ("clang++", tuned[1], plain[1])):
        script = where / f"mlgo-{driver}"
        served = (f'for a in "$@"; do\n  case "$a" in\n    {patterns})\n'
                  f"      MLGO_REGALLOC_POLICY={shlex.quote(policy)} exec {shlex.quote(t)} "
                  '"$@" ;;\n  esac\ndone\n') if sources else ""
        script.write_text("#!/bin/sh\n# mlgo tune --problem regalloc: the policy for the listed "
                          "sources only\n" + served + "MLGO_REGALLOC_POLICY=default exec "
                          f'{shlex.quote(p)} "$@"\n')
        script.chmod(0o755)
        out.append(str(script))
    # CMake's LTO support looks for llvm-ar beside the compiler, as mlgo-clang provides.
    for tool in Path(plain[0]).parent.iterdir():
        if tool.is_symlink():
            os.symlink(os.readlink(tool), where / tool.name)
    return out[0], out[1]


def program_in(build: Path, program: str) -> Path:
    """The executable `program` (a path relative to the build directory) of a build."""
    exe = build / program
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise MlgoError(f"{exe}: the build made no such executable (--program is a path "
                        "relative to the build directory)")
    return exe


@dataclass
class Run:
    """One workload run: its output (exit status and standard output) and, under callgrind,
    the instructions the whole process executed and the callgrind files."""

    status: int
    stdout: str
    seconds: float
    instructions: int = 0
    callgrind: tuple[Path, ...] = ()


def run_workload(command: str, exe: Path, work: Path, what: str, *, timeout: float,
                 callgrind: bool = False, env: Mapping[str, str] | None = None) -> Run:
    """Run the workload `command` with $PROGRAM = `exe` (or a callgrind wrapper of it) in the
    fresh directory `work`. A status other than 0 is one MlgoError line naming the workload."""
    import time

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    program = exe
    if callgrind:
        program = work / "program-under-callgrind"
        program.write_text(
            "#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=yes -q "
            f"--callgrind-out-file={shlex.quote(str(work))}/callgrind.out.%p "
            f"{shlex.quote(str(exe))} \"$@\"\n")
        program.chmod(0o755)
    full_env = {**(env or os.environ), "PROGRAM": str(program)}
    t = time.monotonic()
    try:
        r = process.run(["sh", "-c", command], what=what, timeout=max(timeout, 1.0), cwd=work,
                        env=full_env, check=False)
    except process.ProcessError as e:
        raise MlgoError(f"{what} failed ({e.reason}): {command}") from None
    seconds = time.monotonic() - t
    (work / "stdout").write_text(r.stdout)
    (work / "stderr").write_text(r.stderr)
    if r.returncode != 0:
        why = process.describe_status(r.returncode)
        last = r.stderr.strip().splitlines()[-1:] or [""]
        raise MlgoError(f"{what} failed ({why}): {command}"
                        + (f": {last[0][:200]}" if last[0] else "") + f" (output in {work})")
    files = tuple(sorted(work.glob("callgrind.out.*")))
    if callgrind and not files:
        raise MlgoError(f"{what}: the workload never ran $PROGRAM: {command}")
    return Run(r.returncode, r.stdout, seconds, sum(map(_callgrind_total, files)), files)


def _callgrind_total(path: Path) -> int:
    """Instructions (Ir) the whole process executed, from the file's summary/totals line."""
    total = None
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        raise MlgoError(f"{path}: no totals line in the callgrind output")
    return total


def check_output(run: Run, reference: Run, what: str, workload: str) -> None:
    """The same output as the plain build's run, or one MlgoError line."""
    if run.stdout != reference.stdout:
        a, b = reference.stdout.splitlines(), run.stdout.splitlines()
        i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        got = b[i][:80] if i < len(b) else "<end of output>"
        want = a[i][:80] if i < len(a) else "<end of output>"
        raise MlgoError(f"{what}: the output differs from the plain build's at line {i + 1} "
                        f"({got!r} instead of {want!r}): {workload}")


def function_instructions(exe: Path, files: Sequence[Path]) -> tuple[dict[str, int], int]:
    """Instructions executed per function of the program's own code in a callgrind run, and
    in all of its code (the total does not rely on a function's blocks being contiguous: a
    PGO build moves cold parts away, and a function's address range then spans others)."""
    from mlgo.problems.regalloc import profile as bb

    counts = bb.CallgrindProfile()
    for f in files:
        counts.add(bb.read_callgrind(f, exe))
    executed = bb.function_instructions(bb.read_block_map(exe), bb.instruction_addresses(exe),
                                        counts.instructions)
    return {fn: n for fn, n in executed.items() if n}, sum(counts.instructions.values())


def module_profile(exe: Path, files: Sequence[Path], module_objects: Mapping[str, Path]
                   ) -> dict[str, dict]:
    """The block profile (mlgo/problems/regalloc/profile.py) of each corpus module from a
    callgrind run of the plain build: {module: {function: {block ID: BlockProfile}}}. A function
    two modules define (static functions of one name) counts for neither: the run cannot tell
    them apart."""
    from mlgo.problems.regalloc import profile as bb

    counts = bb.CallgrindProfile()
    for f in files:
        counts.add(bb.read_callgrind(f, exe))
    executed = bb.block_profile(bb.read_block_map(exe), bb.instruction_addresses(exe),
                                counts.instructions)
    owners: dict[str, list[str]] = {}
    for module, obj in module_objects.items():
        for fn in bb.defined_functions(obj):
            owners.setdefault(fn, []).append(module)
    return {m: {fn: executed[fn] for fn, mods in owners.items() if mods == [m] and fn in executed}
            for m in module_objects}


def merge_pgo_profile(raw_dir: Path, out: Path, timeout: float) -> Path:
    """llvm-profdata-19 merge of the instrumented runs' .profraw files into `out`."""
    raws = sorted(raw_dir.glob("*.profraw"))
    if not raws:
        raise MlgoError(f"{raw_dir}: the instrumented build's workload wrote no .profraw file "
                        "(does the program exit through exit() or return from main?)")
    tool = toolchain.companion_tool("llvm-profdata")
    try:
        process.run([tool, "merge", "-o", str(out), *map(str, raws)],
                    what="merging the PGO profile", timeout=max(timeout, 30.0))
    except process.ProcessError as e:
        raise MlgoError(f"llvm-profdata merge of {raw_dir} failed ({e.reason})") from None
    return out
