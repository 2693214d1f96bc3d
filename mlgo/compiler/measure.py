"""Measuring compiler output: .text size of an ELF object, and the register allocator's
spill/reload/copy costs from its optimization remarks."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from mlgo.errors import MlgoError


def text_size(obj: Path | str) -> int:
    """Sum of the sizes of all `.text*` sections of an ELF64 little-endian object (what
    `llvm-size -A` lists); this is the code-size objective MLGO optimizes."""
    return sum(size for name, size in elf_sections(obj) if name == ".text" or name.startswith(".text."))


def elf_sections(obj: Path | str) -> list[tuple[str, int]]:
    data = Path(obj).read_bytes()
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise MlgoError(f"{obj}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise MlgoError(f"{obj}: only ELF64 little-endian objects are supported")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise MlgoError(f"{obj}: truncated or corrupt ELF section table")

    def header(i: int) -> tuple[int, int, int]:
        off = shoff + i * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, off)
        return name, offset, size

    _, stroff, strsize = header(shstrndx)
    strtab = data[stroff : stroff + strsize]
    out = []
    for i in range(shnum):
        name_off, _, size = header(i)
        end = strtab.find(b"\0", name_off)
        out.append((strtab[name_off:end].decode(errors="replace"), size))
    return out


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
