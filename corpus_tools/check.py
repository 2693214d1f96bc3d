"""Checking a corpus: every module recompiles with its recorded command
(`clang-19 <.cmd> -x ir M.bc -o M.o`) to an ELF object."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import Corpus, Module, check_llvm_version
from corpus_tools.extract_pipeline import DEFAULT_TIMEOUT, Failure, TaskFailed, run_tool
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError


@dataclass
class CheckSummary:
    corpus_dir: Path
    ok: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{self.corpus_dir}: {len(self.ok)} modules recompile, "
                 f"{len(self.failed)} fail"]
        for f in self.failed:
            first = f.stderr.strip().splitlines()[:1]
            lines.append(f"  FAILED {f.module}: {f.reason}" + (f": {first[0]}" if first else ""))
        return "\n".join(lines)


def _recompile(module: Module, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mlgo-check-") as td:
        obj = Path(td) / "module.o"
        argv = [toolchain.clang().path, *module.compile_args(), "-o", str(obj)]
        res = run_tool(argv, tool="compiler", timeout=timeout)
        if res.returncode != 0:
            raise TaskFailed(f"compiler exited with status {res.returncode}", res.stderr)
        with open(obj, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise TaskFailed("compiler output is not an ELF object")


def check_corpus(corpus_dir: Path | str, *, modules: Iterable[str] | None = None, jobs: int = 1,
                 timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> CheckSummary:
    """Recompile every module (`clang-19 <.cmd> -x ir M.bc -o M.o`), or only `modules`, and
    collect failures."""
    corpus = Corpus.load(corpus_dir)
    check_llvm_version(corpus)  # recompiled by another clang, it is not the corpus's build
    if modules is not None:
        wanted = set(modules)
        unknown = wanted - {m.name for m in corpus.modules}
        if unknown:
            raise CorpusError(f"{corpus_dir}: not in the corpus: {sorted(unknown)[:5]}")
        corpus = corpus.subset(wanted)
    summary = CheckSummary(Path(corpus_dir))
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(corpus), unit="mod", file=sys.stderr, disable=not progress,
                 desc="check") as bar:
        futures = {}
        for m in corpus.modules:
            fut = pool.submit(_recompile, m, timeout)
            fut.add_done_callback(lambda _f: bar.update(1))
            futures[m.name] = fut
        for name, fut in futures.items():
            try:
                fut.result()
                summary.ok.append(name)
            except TaskFailed as e:
                summary.failed.append(Failure(name, name, e.reason, e.stderr))
            except CorpusError as e:
                summary.failed.append(Failure(name, name, str(e)))
    return summary
