"""Measuring compiler output: .text size of an ELF object, and the register allocator's
spill/reload/copy costs from its optimization remarks."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from mlgo_base.errors import MlgoError


def text_size(obj: Path | str) -> int:
    """Sum of the sizes of all `.text*` sections of an ELF file (what `llvm-size -A` lists);
    this is the code-size objective MLGO optimizes."""
    return sum(s.size for s in text_sections(obj))


@dataclass(frozen=True)
class TextSection:
    name: str
    size: int
    comdat: str | None  # the COMDAT group's signature when the section is in one


GRP_COMDAT = 1  # ELF's GRP_COMDAT flag: the linker keeps one group per signature


def elf_sections(obj: Path | str) -> list[tuple[str, int]]:
    """(name, size) of every section of an ELF file."""
    with _open_elf(obj) as elf:
        return [(s.name, int(s["sh_size"])) for s in elf.iter_sections()]


def text_sections(obj: Path | str) -> list[TextSection]:
    """The `.text*` sections of an ELF file, each with the signature of the COMDAT group it
    belongs to (C++ inline functions and template instances: the linker keeps one copy of
    each signature for the whole program)."""
    with _open_elf(obj) as elf:
        try:
            sections = list(elf.iter_sections())
            comdat: dict[int, str] = {}
            fmt = "<I" if elf.little_endian else ">I"
            for s in sections:
                if s["sh_type"] != "SHT_GROUP":
                    continue
                words = [w for (w,) in struct.iter_unpack(fmt, s.data())]
                if not words or not words[0] & GRP_COMDAT:
                    continue
                sig = elf.get_section(s["sh_link"]).get_symbol(s["sh_info"]).name
                for i in words[1:]:
                    comdat[i] = sig
            return [TextSection(s.name, int(s["sh_size"]), comdat.get(i))
                    for i, s in enumerate(sections)
                    if s.name == ".text" or s.name.startswith(".text.")]
        except ELFError as e:
            raise MlgoError(f"{obj}: corrupt ELF file ({e})") from e
        except (struct.error, AttributeError, IndexError) as e:
            raise MlgoError(f"{obj}: corrupt ELF section group ({e})") from e


def function_sizes(obj: Path | str) -> dict[str, int]:
    """Bytes of each function an ELF object defines (its symbol's size), by symbol name: where
    in a module a change of code happened, for a search that tries several changes in one
    compile."""
    with _open_elf(obj) as elf:
        try:
            table = elf.get_section_by_name(".symtab")
            if table is None:
                return {}
            return {s.name: int(s["st_size"]) for s in table.iter_symbols()
                    if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF"}
        except ELFError as e:
            raise MlgoError(f"{obj}: corrupt ELF symbol table ({e})") from e


@contextmanager
def _open_elf(obj: Path | str) -> Iterator[ELFFile]:
    try:
        fh = open(obj, "rb")
    except OSError as e:
        raise MlgoError(f"{obj}: cannot read ({e.strerror})") from e
    with fh:
        if fh.read(4) != b"\x7fELF":
            raise MlgoError(f"{obj}: not an ELF file")
        fh.seek(0)
        try:
            yield ELFFile(fh)
        except ELFError as e:
            raise MlgoError(f"{obj}: truncated or corrupt ELF file ({e})") from e


# Measurement.per_function keys of COMDAT text sections (problems/inlining): the rest of the
# module's .text is its total minus these.
COMDAT_PREFIX = "comdat:"
# Keys of a function's own bytes (function_sizes), when a problem is asked to measure them.
FUNCTION_PREFIX = "function:"


def comdat_breakdown(sections: list[TextSection]) -> dict[str, float]:
    """Bytes of COMDAT text per group signature, keyed COMDAT_PREFIX + signature."""
    out: dict[str, float] = {}
    for s in sections:
        if s.comdat is not None:
            key = COMDAT_PREFIX + s.comdat
            out[key] = out.get(key, 0.0) + s.size
    return out


def comdat_pairs(best: dict[str, float], default: dict[str, float]) -> dict[str, list[float]]:
    """[best, default] bytes per COMDAT text group of two per-function size maps (keys with
    COMDAT_PREFIX), keyed by group name: what sizes as linking keeps them are computed from."""
    return {k.removeprefix(COMDAT_PREFIX): [best.get(k, 0.0), default.get(k, 0.0)]
            for k in set(best) | set(default) if k.startswith(COMDAT_PREFIX)}


def comdat_objective(weights: dict[str, float]):
    """A size objective over a Measurement whose per_function holds comdat_breakdown: plain
    .text counts fully, each COMDAT group's bytes times its weight (1/n when n of the corpus's
    modules define it under the default compile, so removing one copy of code the linker keeps
    once anyway earns about nothing); a group no default compile defines counts fully."""

    def objective(m) -> float:
        comdat = {k: v for k, v in m.per_function.items() if k.startswith(COMDAT_PREFIX)}
        plain = m.total - sum(comdat.values())
        return plain + sum(v * weights.get(k, 1.0) for k, v in comdat.items())

    return objective


def comdat_weights(breakdowns: Iterable[dict[str, float]]) -> dict[str, float]:
    """1/n per COMDAT group, n = how many of the given (default-compile) modules define it."""
    counts: dict[str, int] = {}
    for b in breakdowns:
        for k in b:
            if k.startswith(COMDAT_PREFIX):
                counts[k] = counts.get(k, 0) + 1
    return {k: 1.0 / n for k, n in counts.items()}


# Cost arguments of the greedy allocator's per-function `SpillReloadCopies` remark.
SPILL_COST_KEYS = (
    "TotalSpillsCost",
    "TotalReloadsCost",
    "TotalFoldedSpillsCost",
    "TotalFoldedReloadsCost",
    "TotalCopiesCost",
)


@dataclass
class SpillCosts:
    """Block-frequency weighted spill+reload+copy cost, per function and in total."""

    per_function: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.per_function.values()))


_DOC_START = re.compile(r"^--- !(\w+)")
_KV = re.compile(r"^\s*(?:- )?(\w+):\s*(.*?)\s*$")


def parse_regalloc_remarks(path: Path | str) -> SpillCosts:
    """Parse the YAML remarks file of `-fsave-optimization-record=yaml
    -foptimization-record-passes=regalloc`. Only `SpillReloadCopies` remarks count: the greedy
    allocator emits one per function (loop-level remarks repeat the same spills, so summing
    them would double count)."""
    costs = SpillCosts()
    try:
        text = Path(path).read_text()
    except FileNotFoundError as e:
        raise MlgoError(f"{path}: the compiler wrote no remarks file") from e
    doc: dict[str, str] = {}
    args_cost = 0.0

    def flush() -> None:
        if doc.get("Pass") == "regalloc" and doc.get("Name") == "SpillReloadCopies":
            fn = _unquote(doc.get("Function", "?"))
            costs.per_function[fn] = costs.per_function.get(fn, 0.0) + args_cost

    for line in text.splitlines():
        if _DOC_START.match(line):
            flush()
            doc, args_cost = {}, 0.0
            continue
        m = _KV.match(line)
        if not m:
            continue
        key, value = m.groups()
        if key in SPILL_COST_KEYS:
            try:
                args_cost += float(_unquote(value))
            except ValueError as e:
                raise MlgoError(f"{path}: bad value for {key}: {value!r}") from e
        elif key not in doc:
            doc[key] = value
    flush()
    return costs


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v
