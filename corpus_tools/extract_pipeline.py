"""What the three extractors of corpus_tools/extract.py share: one module to produce
(`ExtractTask`), the pipeline that produces them into a corpus (`run_tasks`), and the record of
what happened (`ExtractSummary`, `Failure`).

Compilers run in a thread pool (the work is in the subprocesses), each with a timeout; finished
bitcode lands in the corpus through temp name + rename, so an interrupted run leaves no
half-written module and a re-run skips every module whose .bc and .cmd both exist. Identical
bitcode is kept once. A failing file is reported with the compiler's message and the others go
on; the summary of failures is also written to `extract_failures.json` in the corpus directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import (
    DESCRIPTION,
    KEEP_LEVEL,
    check_adding_to,
    opt_levels_in,
    write_description,
)
from mlgo_base import process, toolchain
from mlgo_base.errors import CorpusError
from mlgo_base.files import atomic_write_bytes, atomic_write_text, file_sha256

FAILURES_FILE = "extract_failures.json"
DEFAULT_TIMEOUT = 600.0  # seconds for one compile; a hang becomes a reported failure

C_EXTENSIONS = frozenset({".c", ".i"})
CXX_EXTENSIONS = frozenset({".cc", ".cpp", ".cxx", ".c++", ".C", ".cp", ".CPP", ".ii"})
SOURCE_EXTENSIONS = C_EXTENSIONS | CXX_EXTENSIONS

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+\-]")
# What turns a compile into one that writes IR before any LLVM pass ran.
STOP_BEFORE_PASSES = ("-Xclang", "-disable-llvm-passes", "-emit-llvm")

# ---------------------------------------------------------------------------------------------
# Tasks and results


@dataclass(frozen=True)
class ExtractTask:
    """One module to produce. Either `compile_argv` (run in `cwd`, `-o BC` appended) with the
    `recompile_args` to record, or `object_path` whose embedded sections are dumped."""

    module: str
    project: str
    source: str  # what the user should look at when this fails
    compile_argv: tuple[str, ...] = ()
    cwd: str = ""
    recompile_args: tuple[str, ...] = ()
    object_path: str = ""
    required_level: str = ""  # with object_path: the level its embedded command must have


@dataclass(frozen=True)
class Failure:
    module: str
    source: str
    reason: str
    stderr: str = ""

    def to_json(self) -> dict:
        return {"module": self.module, "source": self.source, "reason": self.reason,
                "stderr": self.stderr}


@dataclass
class ExtractSummary:
    corpus_dir: Path
    extracted: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped module -> kept module
    failed: list[Failure] = field(default_factory=list)
    # Not attempted: same source compiled again by the build (e.g. PIC and non-PIC copies),
    # or a compile of something that is not C/C++ (assembly).
    repeated_sources: list[str] = field(default_factory=list)
    not_c_family: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # Commands a build records that compile nothing: preprocessing only (-E, -M, -MM) and
    # the driver's own `clang -cc1 ...` children (dependency generation runs -cc1 -Eonly).
    not_compiles: list[str] = field(default_factory=list)
    # Warning options of the build that clang-19 does not know (GCC's -Werror=clobbered),
    # left out of the IR-emitting compiles: warnings change no IR, but with -Werror an
    # unknown one is an error.
    dropped_warnings: list[str] = field(default_factory=list)
    opt_level: str = KEEP_LEVEL  # the frontend level of the IR ("-Oz"), or "keep"

    def format(self) -> str:
        level = ("at the build's own optimization level" if self.opt_level == KEEP_LEVEL
                 else f"IR emitted at {self.opt_level}")
        lines = [
            f"{self.corpus_dir} ({level}): {len(self.extracted)} extracted, "
            f"{len(self.skipped_existing)} skipped (already present), "
            f"{len(self.duplicates)} duplicates (identical bitcode), {len(self.failed)} failed"
        ]
        if self.repeated_sources:
            lines.append(f"  {len(self.repeated_sources)} repeated compiles of an already "
                         "listed source ignored (one module per source file)")
        if self.excluded:
            lines.append(f"  {len(self.excluded)} compiles excluded (build-system probes or "
                         "excluded paths)")
        if self.not_c_family:
            lines.append(f"  {len(self.not_c_family)} compiles of non-C/C++ files ignored")
        if self.not_compiles:
            lines.append(f"  {len(self.not_compiles)} commands that compile nothing ignored "
                         "(preprocessing only, or the compiler's own -cc1 steps)")
        if self.dropped_warnings:
            lines.append(f"  warning options clang-{toolchain.llvm_major()} does not know, left out: "
                         + " ".join(self.dropped_warnings))
        for f in self.failed:
            first = f.stderr.strip().splitlines()[:1]
            detail = f": {first[0]}" if first else ""
            lines.append(f"  FAILED {f.source}: {f.reason}{detail}")
        if self.failed:
            lines.append(f"  details in {self.corpus_dir / FAILURES_FILE}")
        return "\n".join(lines)


class TaskFailed(Exception):
    def __init__(self, reason: str, stderr: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr


@dataclass(frozen=True)
class _Produced:
    tmp_bc: Path
    cmd: tuple[str, ...]
    digest: str


# ---------------------------------------------------------------------------------------------
# Helpers


def module_name(project: str, relative_source: str | Path) -> str:
    """`<project>/<relative path>` with every path component made filesystem-safe."""
    parts = [p for p in Path(relative_source).as_posix().split("/") if p not in ("", ".")]
    safe = [("__" if p == ".." else _SAFE_CHARS.sub("_", p)) for p in parts]
    if not safe:
        raise CorpusError(f"empty source path for project {project!r}")
    proj = _SAFE_CHARS.sub("_", project) if project else ""
    return "/".join([proj, *safe]) if proj else "/".join(safe)


def _is_bitcode(data: bytes) -> bool:
    # Raw bitcode starts with 'BC' 0xC0DE; the wrapper format with 0x0B17C0DE (little endian).
    return data[:4] == b"BC\xc0\xde" or data[:4] == b"\xde\xc0\x17\x0b"



def run_with_timeout(argv: Sequence[str], *, cwd: str | Path | None = None,
                     timeout: float = DEFAULT_TIMEOUT, what: str = "compile") -> process.Completed:
    """Run a compiler to the end, whatever its status; a timeout (the whole process group
    killed: clang spawns cc1) or a compiler that cannot be started is a ProcessError."""
    return process.run(argv, what=what, cwd=cwd, timeout=timeout, check=False)


def run_tool(argv: Sequence[str], *, tool: str, cwd: str | Path | None = None,
             timeout: float = DEFAULT_TIMEOUT) -> process.Completed:
    """`run_with_timeout` for one task: a timeout or a tool that cannot be started is the
    task's failure (TaskFailed), not the run's."""
    try:
        return run_with_timeout(argv, cwd=cwd, timeout=timeout, what=tool)
    except process.ProcessError as e:
        if e.timed_out:
            raise TaskFailed(f"{tool} timed out after {timeout:g} s") from e
        raise TaskFailed(f"cannot run the {tool}: {e.reason}") from e


# cc1 options (in an embedded .llvmcmd) that name the input, an output, or a side file.
_CC1_DROP_WITH_VALUE = frozenset({
    "-main-file-name", "-o", "-dependency-file", "-MT", "-MQ", "-x",
    "-split-dwarf-file", "-split-dwarf-output", "-coverage-notes-file", "-coverage-data-file",
    "-header-include-file", "-diagnostic-log-file", "-stats-file",
})
_CC1_DROP_ALONE = frozenset({"-sys-header-deps", "-MP", "-module-file-deps"})
_CC1_DROP_PREFIXES = ("-fembed-bitcode", "-stats-file=", "-fprofile-instrument-use-path=",
                      "-fprofile-instrument-path=")


def clean_cc1_args(args: Sequence[str]) -> list[str]:
    """Embedded cc1 args minus the re-embedding flag and anything naming an input/output."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in _CC1_DROP_WITH_VALUE:
            i += 2
            continue
        i += 1
        if a in _CC1_DROP_ALONE or a.startswith(_CC1_DROP_PREFIXES):
            continue
        out.append(a)
    if not out or out[0] != "-cc1":
        raise TaskFailed(f"embedded command does not start with -cc1: {' '.join(args[:3])!r}")
    return out


def _dump_embedded(obj: Path, tmp_dir: Path, timeout: float) -> tuple[Path, list[str]]:
    bc = tmp_dir / "embedded.bc"
    cmd = tmp_dir / "embedded.cmd"
    argv = [toolchain.objcopy().path, f"--dump-section=.llvmbc={bc}",
            f"--dump-section=.llvmcmd={cmd}", str(obj), str(tmp_dir / "scratch.o")]
    res = run_tool(argv, tool="llvm-objcopy", timeout=timeout)
    if res.returncode != 0:
        raise TaskFailed("llvm-objcopy could not dump .llvmbc/.llvmcmd (was the object built "
                          "with -Xclang -fembed-bitcode=all?)", res.stderr)
    raw = cmd.read_bytes()
    try:
        args = [a for a in raw.decode().split("\0") if a]
    except UnicodeDecodeError as e:
        raise TaskFailed(".llvmcmd section is not UTF-8 text") from e
    return bc, clean_cc1_args(args)


def _check_embedded_level(cc1_args: Sequence[str], wanted: str) -> None:
    levels = opt_levels_in(cc1_args)
    found = levels[-1] if levels else "-O0"
    if found != wanted:
        raise TaskFailed(
            f"built at {found}, not {wanted}: its embedded IR is that build's; rebuild the "
            f"object at {wanted} (with -Xclang -fembed-bitcode=all) or extract with "
            "--opt-level keep")


# ---------------------------------------------------------------------------------------------
# The shared pipeline


def _produce(task: ExtractTask, out_dir: Path, timeout: float) -> _Produced:
    """Make the bitcode of one task into a temp file inside `out_dir` (same filesystem, so
    the final step is a rename)."""
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".extract.", suffix=".bc.tmp")
    os.close(fd)
    tmp_bc = Path(tmp_name)
    try:
        if task.object_path:
            with tempfile.TemporaryDirectory(prefix="mlgo-objcopy-") as td:
                bc, cmd = _dump_embedded(Path(task.object_path), Path(td), timeout)
                if task.required_level:
                    _check_embedded_level(cmd, task.required_level)
                shutil.move(bc, tmp_bc)
        else:
            argv = [*task.compile_argv, "-o", str(tmp_bc)]
            res = run_tool(argv, tool="compiler", cwd=task.cwd or None, timeout=timeout)
            if res.returncode != 0:
                raise TaskFailed(f"compiler exited with status {res.returncode}", res.stderr)
            cmd = list(task.recompile_args)
        with open(tmp_bc, "rb") as f:
            head = f.read(4)
        if not _is_bitcode(head):
            raise TaskFailed("output is not LLVM bitcode (empty or truncated)")
        return _Produced(tmp_bc, tuple(cmd), file_sha256(tmp_bc))
    except OSError as e:
        tmp_bc.unlink(missing_ok=True)
        raise TaskFailed(f"{e.filename or task.source}: {e.strerror or e}") from e
    except BaseException:
        tmp_bc.unlink(missing_ok=True)
        raise


def read_existing_description(out_dir: Path) -> dict:
    path = out_dir / DESCRIPTION
    if not path.exists():
        return {}
    try:
        desc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: exists but is not valid JSON ({e}); "
                          "remove it or choose another output directory") from e
    if not isinstance(desc, dict) or not isinstance(desc.get("modules", []), list):
        raise CorpusError(f"{path}: exists but is not a corpus description")
    return desc


def _check_same_level(out_dir: Path, desc: dict, level: str) -> None:
    """One corpus, one level and one LLVM version: adding IR of another level or compiler
    would mix builds nobody makes."""
    if not desc.get("modules"):
        return
    check_adding_to(desc, out_dir / DESCRIPTION)
    recorded = desc.get("opt_level")
    if recorded is None:
        raise CorpusError(
            f"{out_dir / DESCRIPTION}: this corpus records no optimization level (extracted "
            f"before levels were recorded); extract at {level} into a new directory")
    if recorded != level:
        raise CorpusError(
            f"{out_dir / DESCRIPTION}: this corpus holds IR at {recorded}, not {level}; "
            "extract into another directory (one corpus, one level)")


def _read_failures(out_dir: Path) -> list[dict]:
    path = out_dir / FAILURES_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: not valid JSON ({e}); delete it to start a fresh list") from e
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a list of failures; delete it to start afresh")
    return [f for f in data if isinstance(f, dict)]


def _has_module(out_dir: Path, name: str) -> bool:
    return (out_dir / (name + ".bc")).is_file() and (out_dir / (name + ".cmd")).is_file()


def run_tasks(
    tasks: Sequence[ExtractTask], out_dir: Path, summary: ExtractSummary, *, jobs: int,
    timeout: float, progress: bool, opt_level: str | None = None,
    origins: dict[str, dict] | None = None,
) -> ExtractSummary:
    level = opt_level or KEEP_LEVEL
    summary.opt_level = level
    out_dir.mkdir(parents=True, exist_ok=True)
    desc = read_existing_description(out_dir)
    _check_same_level(out_dir, desc, level)
    all_origins: dict[str, dict] = {**(desc.get("origins") or {}), **(origins or {})}
    modules: list[str] = [m for m in desc.get("modules", []) if _has_module(out_dir, m)]
    projects: dict[str, str] = dict(desc.get("projects") or {})
    known_dups: dict[str, str] = dict(desc.get("duplicates") or {})
    # Hashes of the modules already in the corpus, so that dedup spans runs and projects.
    by_digest: dict[str, str] = {}
    for m in modules:
        by_digest.setdefault(file_sha256(out_dir / (m + ".bc")), m)

    listed = set(modules)
    todo: list[ExtractTask] = []
    for t in tasks:
        if _has_module(out_dir, t.module):
            summary.skipped_existing.append(t.module)
            if t.module not in listed:  # left by an interrupted run
                modules.append(t.module)
                listed.add(t.module)
                by_digest.setdefault(file_sha256(out_dir / (t.module + ".bc")), t.module)
            projects[t.module] = t.project
        elif t.module in known_dups and _has_module(out_dir, known_dups[t.module]):
            summary.duplicates[t.module] = known_dups[t.module]
        else:
            todo.append(t)

    def finish() -> None:
        write_description(out_dir, modules, projects, opt_level=level,
                          llvm_version=toolchain.llvm_major(), origins=all_origins,
                          **({"duplicates": known_dups} if known_dups else {}))
        # Failures of earlier runs into this corpus (e.g. other projects) stay listed unless
        # this run attempted the same module again.
        attempted = {t.module for t in tasks}
        kept = [f for f in _read_failures(out_dir) if f.get("module") not in attempted]
        atomic_write_text(out_dir / FAILURES_FILE, json.dumps(
            kept + [f.to_json() for f in summary.failed], indent=1) + "\n")

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="mod", file=sys.stderr, disable=not progress,
               desc="extract")
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures: list[Future] = []
            for t in todo:
                fut = pool.submit(_produce, t, out_dir, timeout)
                fut.add_done_callback(lambda _f: bar.update(1))
                futures.append(fut)
            try:
                # Results are taken in task order so that dedup keeps the same module
                # whatever the completion order.
                for t, fut in zip(todo, futures, strict=True):
                    _take_result(t, fut, out_dir, summary, modules, projects, by_digest,
                                 known_dups, bar)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.close()
        _remove_temp_files(out_dir)
        finish()
    return summary


def _take_result(t: ExtractTask, fut: Future, out_dir: Path, summary: ExtractSummary,
                 modules: list[str], projects: dict[str, str], by_digest: dict[str, str],
                 known_dups: dict[str, str], bar) -> None:
    try:
        produced: _Produced = fut.result()
    except TaskFailed as e:
        failure = Failure(t.module, t.source, e.reason, e.stderr)
        summary.failed.append(failure)
        first = e.stderr.strip().splitlines()[:1]
        bar.write(f"FAILED {t.source}: {e.reason}" + (f": {first[0]}" if first else ""),
                  file=sys.stderr)
        return
    kept = by_digest.get(produced.digest)
    if kept is not None:
        produced.tmp_bc.unlink(missing_ok=True)
        summary.duplicates[t.module] = kept
        known_dups[t.module] = kept
        return
    bc_path = out_dir / (t.module + ".bc")
    bc_path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(produced.tmp_bc, bc_path)
    atomic_write_bytes(out_dir / (t.module + ".cmd"), "\0".join(produced.cmd).encode())
    by_digest[produced.digest] = t.module
    if t.module not in modules:
        modules.append(t.module)
    projects[t.module] = t.project
    summary.extracted.append(t.module)


def _remove_temp_files(out_dir: Path) -> None:
    for p in out_dir.glob(".extract.*.bc.tmp"):
        p.unlink(missing_ok=True)
