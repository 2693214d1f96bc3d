"""Regalloc rewards weighted by a real run of the program the module belongs to.

The allocator's remarks give, per function, the spill+reload+copy cost weighted by each block's
frequency *relative to the function's entry* (LLVM's static estimate): summed over a module,
a cold error path weighs as much as an interpreter loop, and it does not predict executed
instructions (benchmarks/RESULTS.md, "Regalloc"). Two rewards from a profiled run instead:

- `weighted_cost`: each function's remark cost times its call count in the run;
- `trace_cost`, the basic-block trace cost model: with -fbasic-block-address-map every machine
  block keeps an ID from instruction selection on; the plain build's run under callgrind gives
  each block's entry count, and a candidate compile costs what its blocks would execute on that
  run. This is the one that tracks callgrind's count (benchmarks/RESULTS.md, "Regalloc").

A profile file holds, per corpus module, every block of each function that ran in the plain
build (a block that did not run with entries 0):
`{"every_block": true, "modules": {module: {function: {block ID: [entries, executed,
instructions]}}}}`, made by `program_profile` (`mlgo profile make`), merged by `mlgo profile
merge`, and read by `RegallocEviction(profile=...)`. A file without `every_block` lists the
blocks that ran only, which cannot tell a block the candidate added from one that did not run,
and is refused.

What the trace cost can price, and what it refuses to credit: a candidate block keeping the
plain block's ID is charged that block's profiled executions plus its entry count per
instruction gained or lost (spills, reloads, copies). That is exact while the function's blocks
are the plain build's: on xz, flac and libjpeg-turbo, every hot module whose tuned code kept each
profiled function's blocks was forecast to within 3 instructions of callgrind's count (17
module-policy pairs, docs/tune.md). When allocation rebuilds blocks (tail duplication and branch
folding act on the registers chosen), the profile has no count for the result: a dropped block
that ran is charged nothing, an added block is charged nothing, and a kept block keeps its old
count when added blocks took its executions over; the search, maximizing the reward, finds such
code (forecast -25.7 million instructions, measured +1.15 million, in one xz module). So a
function is *unpriced* when a block that ran in the profile is gone, when it has a block the
plain build did not have, or when a block that was empty in the plain build (its entry count
cannot be read: its address is the next block's) now has instructions. A dropped block that
never ran is allowed: nothing ran through it. Priced block by block, an unpriced function's
change is not known even in sign (the forecast gains above were measured losses), so it costs
what the profiled build executed in it plus the size of that change, charged as a loss: never a
gain, and the further allocation strays from the profiled blocks the more it costs, so the
search prefers decisions that keep them. This also charges a real gain in a rebuilt function as
a loss (xz's `lzma_decoder.c`: forecast -1.18 million, measured -1.19 million, with its blocks
changed); conservative, as the profile cannot tell the two apart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgo_base.errors import MlgoError, writing
from mlgo_base.files import atomic_write_text
from mlgo_base.process import run


def defined_functions(obj: Path | str) -> set[str]:
    """Names of the functions an object file defines (its text symbols), from llvm-nm-19."""
    from mlgo_base.toolchain import companion_tool

    r = run([companion_tool("llvm-nm"), "--defined-only", "-P", str(obj)],
            what=f"{obj}: listing its functions", timeout=120)
    names = set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("T", "t", "W", "w"):
            names.add(parts[0])
    return names


def weighted_cost(per_function: dict[str, float], calls: dict[str, int]) -> float:
    """Estimated executed spill, reload and copy instructions: each function's remark cost
    (per call) times its call count; functions that did not run weigh nothing."""
    return sum(cost * calls.get(fn, 0) for fn, cost in per_function.items())


Profile = dict[str, dict[str, dict[int, "BlockProfile"]]]  # module -> function -> block ID -> ...


def load_profile(path: Path | str) -> Profile:
    """The per-module block profile of a profile file (module docstring)."""
    try:
        data = json.loads(Path(path).read_text())
        modules = data["modules"]
        if data.get("every_block") is not True:
            raise MlgoError(f"{path}: lists only the blocks that ran, so the trace reward cannot "
                            "tell an added block from one that did not run; make it again "
                            "(mlgo profile make)")
        if not isinstance(modules, dict):
            raise TypeError("'modules' is not an object")
        return {m: {fn: {int(bid): BlockProfile(*map(int, v)) for bid, v in blocks.items()}
                    for fn, blocks in fns.items()} for m, fns in modules.items()}
    except FileNotFoundError as e:
        raise MlgoError(f"{path}: no such profile file") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MlgoError(f"{path}: not a regalloc block profile ({{\"modules\": {{module: "
                        f"{{function: {{block: [entries, executed, size]}}}}}}}}): {e}") from e


def write_profile(path: Path | str, modules: Profile, source: str) -> None:
    """Write a profile file (module docstring); `source` says what run it came from."""
    data = {m: {fn: {str(bid): [b.entries, b.executed, b.size] for bid, b in blocks.items()}
                for fn, blocks in fns.items()} for m, fns in modules.items()}
    with writing(path):
        atomic_write_text(path, json.dumps({"source": source, "every_block": True,
                                            "modules": data},
                                           sort_keys=True) + "\n")


def merge_profiles(paths: list[Path]) -> Profile:
    """The modules of several profile files in one. A module in two files must have the same
    profile in both (the same run profiled twice): two different runs of one module cannot be
    added without knowing how often each runs, so that is an error naming both files."""
    merged: Profile = {}
    origin: dict[str, Path] = {}
    for path in paths:
        for module, fns in load_profile(path).items():
            if module in merged and merged[module] != fns:
                raise MlgoError(f"{path}: module {module} is also in {origin[module]}, with "
                                "another profile; profile each module in one run only")
            merged.setdefault(module, fns)
            origin.setdefault(module, Path(path))
    return merged


# The basic-block trace cost model: a program built with -fbasic-block-address-map records, per
# function, each machine block's ID (stable from instruction selection on, so the same in a
# build that differs only in eviction choices), offset and size. The plain build's run under
# callgrind (--dump-instr=yes) gives each block's execution count; a candidate build's cost is
# then the sum over its blocks of (instructions in the block) x (the plain block's count): the
# instructions the candidate would execute on the same run, spills, reloads and copies included.

BlockMap = dict[str, list[tuple[int, int, int]]]  # function -> [(block ID, start, end)]


@dataclass
class CallgrindProfile:
    """What one run under callgrind (--dump-instr=yes) measured in the program's own code."""

    instructions: dict[int, int] = field(default_factory=dict)  # address -> executions
    calls: dict[str, int] = field(default_factory=dict)  # function -> times it was called

    def add(self, other: CallgrindProfile) -> None:
        """Adds another run's counts (a workload's steps)."""
        for a, n in other.instructions.items():
            self.instructions[a] = self.instructions.get(a, 0) + n
        for fn, n in other.calls.items():
            self.calls[fn] = self.calls.get(fn, 0) + n


def read_callgrind(path: Path | str, program: Path | str) -> CallgrindProfile:
    """Executions per instruction address and calls per function of `program`'s own code (not
    its shared libraries'), from a callgrind output file recorded with --dump-instr=yes
    (addresses as in the linked file, PIE or not). Follows callgrind's format: name
    compression `(id) name`, relative positions (`+n`, `-n`, `*`), one field per position
    before the costs, and the cost line after `calls=` (the callee's inclusive cost, not
    counted here). Recursion levels (`f'2`) count as their function."""
    name = os.path.basename(str(program))
    objects: dict[str, str] = {}
    functions: dict[str, str] = {}
    prof = CallgrindProfile()
    in_program = callee_in_program = False
    skip_next, last, callee = False, 0, ""
    positions = ["line"]
    try:
        f = open(path)
    except OSError as e:
        raise MlgoError(f"{path}: cannot read the callgrind output: {e.strerror}") from e
    with f:
        for lineno, line in enumerate(f, 1):
            if line[:1].isdigit() or line[:1] in "+-*":
                if "instr" not in positions:
                    raise MlgoError(f"{path}: recorded without --dump-instr=yes "
                                    f"(positions: {' '.join(positions)})")
                fields = line.split()
                pos = fields[positions.index("instr")]
                try:
                    addr = last if pos == "*" else last + int(pos) if pos[0] in "+-" else int(pos, 0)
                    cost = int(fields[len(positions)]) if len(fields) > len(positions) else 0
                except ValueError:
                    raise MlgoError(f"{path}:{lineno}: not a cost line: {line.strip()!r}") from None
                last = addr
                if skip_next:
                    skip_next = False
                elif in_program:
                    prof.instructions[addr] = prof.instructions.get(addr, 0) + cost
                continue
            if line.startswith("positions:"):
                positions = line.split(":", 1)[1].split()
                continue
            key, eq, value = line.rstrip("\n").partition("=")
            if not eq:
                continue
            if key == "ob":
                in_program = _compressed(objects, value, path, lineno).endswith("/" + name)
                callee_in_program = in_program
            elif key == "cob":
                callee_in_program = _compressed(objects, value, path, lineno).endswith("/" + name)
            elif key == "fn":
                _compressed(functions, value, path, lineno)
                callee_in_program = in_program
            elif key == "cfn":
                callee = re.sub(r"'\d+$", "", _compressed(functions, value, path, lineno))
            elif key == "calls":
                skip_next = True
                if callee_in_program:
                    try:
                        n = int(value.split()[0])
                    except (ValueError, IndexError):
                        raise MlgoError(f"{path}:{lineno}: bad calls line: {line.strip()!r}") from None
                    prof.calls[callee] = prof.calls.get(callee, 0) + n
                callee_in_program = in_program
    if not prof.instructions:
        raise MlgoError(f"{path}: no instruction of {name} in the profile")
    return prof


def _compressed(table: dict[str, str], value: str, path: Path | str, lineno: int) -> str:
    """Callgrind's name compression: `(id) name` defines id, `(id)` refers to it."""
    value = value.strip()
    if not value.startswith("("):
        return value
    ident, _, rest = value.partition(")")
    if rest.strip():
        table[ident] = rest.strip()
    elif ident not in table:
        raise MlgoError(f"{path}:{lineno}: name {ident}) used before it is defined")
    return table[ident]


def _llvm_tool(tool: str) -> str:
    from mlgo_base.toolchain import companion_tool

    return companion_tool(tool)


def read_block_map(elf: Path | str) -> BlockMap:
    """Each function's blocks (ID, start address, end address) from the SHT_LLVM_BB_ADDR_MAP
    section of a program linked from objects compiled with -fbasic-block-address-map."""
    r = run([_llvm_tool("llvm-readobj"), "--bb-addr-map", "--elf-output-style=JSON", str(elf)],
            what=f"{elf}: reading its basic-block address map", timeout=300)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        # One "BBAddrMap" key per address-map section: a relocatable object has one for each
        # code section, and json would keep only the last.
        merged: dict[str, Any] = {}
        for key, value in items:
            if key == "BBAddrMap" and key in merged:
                value = merged[key] + value
            merged[key] = value
        return merged

    out: BlockMap = {}
    for entry in json.loads(r.stdout, object_pairs_hook=pairs)[0].get("BBAddrMap", []):
        fn = entry["Function"]
        blocks = out.setdefault(fn["Name"], [])
        for rng in fn["BB Ranges"]:
            base = rng["Base Address"]
            for bb in rng["BB Entries"]:
                start = base + bb["Offset"]
                blocks.append((bb["ID"], start, start + bb["Size"]))
    if not out:
        raise MlgoError(f"{elf}: no basic-block address map (compile with "
                        "-fbasic-block-address-map)")
    return out


def _disassembly(elf: Path | str) -> dict[str, list[int]]:
    """Instruction addresses per code section, from llvm-objdump (a relocatable object's
    sections each start at 0)."""
    r = run([_llvm_tool("llvm-objdump"), "-d", "--no-show-raw-insn", str(elf)],
            what=f"{elf}: disassembling it", timeout=300)
    out: dict[str, list[int]] = {}
    addrs: list[int] = []
    for line in r.stdout.splitlines():
        if line.startswith("Disassembly of section "):
            addrs = out.setdefault(line.removeprefix("Disassembly of section ").rstrip(":"), [])
            continue
        head, sep, _ = line.partition(":")
        if sep and line.startswith(" ") and head.strip():
            try:
                addrs.append(int(head.strip(), 16))
            except ValueError:
                continue
    return {name: sorted(a) for name, a in out.items()}


def instruction_addresses(elf: Path | str) -> list[int]:
    """Sorted addresses of every instruction in the program's code, from llvm-objdump."""
    return sorted(a for addrs in _disassembly(elf).values() for a in addrs)


def block_instructions(blocks: BlockMap, addrs: list[int]) -> dict[str, dict[int, int]]:
    """Instructions per block: {function: {block ID: count}}."""
    import bisect

    return {fn: {bid: bisect.bisect_left(addrs, end) - bisect.bisect_left(addrs, start)
                 for bid, start, end in bbs} for fn, bbs in blocks.items()}


@dataclass(frozen=True)
class BlockProfile:
    """One machine block of the profiled (plain) build."""

    entries: int  # executions of its first instruction
    executed: int  # instructions it executed (a trailing jmp after a conditional branch runs
    # only when that branch falls through, so this is not always entries x size)
    size: int  # its instructions


def block_profile(blocks: BlockMap, addrs: list[int], instr_counts: dict[int, int]
                  ) -> dict[str, dict[int, BlockProfile]]:
    """{function: {block ID: BlockProfile}} of the profiled build, for the functions that ran:
    each of their blocks, one that did not run (or is empty: its address is the next block's,
    so its count cannot be read) with entries 0."""
    import bisect

    out: dict[str, dict[int, BlockProfile]] = {}
    for fn, bbs in blocks.items():
        prof = {}
        for bid, start, end in bbs:
            inside = addrs[bisect.bisect_left(addrs, start):bisect.bisect_left(addrs, end)]
            entries = instr_counts.get(start, 0) if end > start else 0
            prof[bid] = BlockProfile(entries, sum(instr_counts.get(a, 0) for a in inside)
                                     if entries else 0, len(inside))
        if any(b.entries for b in prof.values()):
            out[fn] = prof
    return out


def program_profile(program: Path | str, callgrind_files: list[Path],
                    module_objects: Mapping[str, Path | str]) -> Profile:
    """The profile of each corpus module of a program from its run(s): `program` linked from
    objects compiled with -fbasic-block-address-map, `callgrind_files` the run's outputs
    (callgrind --dump-instr=yes; a workload of several steps adds up), `module_objects` {corpus
    module name: the object file the program's build made of it}. A function name two modules
    define (a static function) cannot be told apart in the run and counts for neither. Every
    module is listed, those that never ran with no functions, so that a training run can tell
    "not executed" from "not profiled"."""
    if not callgrind_files:
        raise MlgoError(f"{program}: no callgrind output given")
    run_counts = CallgrindProfile()
    for f in callgrind_files:
        run_counts.add(read_callgrind(f, program))
    executed = block_profile(read_block_map(program), instruction_addresses(program),
                             run_counts.instructions)
    owners: dict[str, list[str]] = {}
    for module, obj in module_objects.items():
        for fn in defined_functions(obj):
            owners.setdefault(fn, []).append(module)
    return {module: {fn: executed[fn] for fn, mods in owners.items()
                     if mods == [module] and fn in executed}
            for module in module_objects}


def unpriced(ninstr: dict[int, int], profile: dict[int, BlockProfile]) -> bool:
    """Whether a candidate function's blocks ({block ID: instructions}) are not the profiled
    function's (`profile`) in a way the trace cost cannot price (module docstring): a block that
    ran is gone, a block is new, or a block empty in the profile has instructions."""
    return (any(b.entries and bid not in ninstr for bid, b in profile.items())
            or any(bid not in profile for bid in ninstr)
            or any(b.size == 0 and ninstr[bid] > 0 for bid, b in profile.items() if bid in ninstr))


def block_priced_cost(ninstr: dict[int, int], profile: dict[int, BlockProfile]) -> float:
    """A candidate function's blocks ({block ID: instructions}) priced block by block: each
    profiled block it kept costs what it executed plus its entry count per instruction gained or
    lost; others cost nothing. Exact while the blocks are the profiled ones (module docstring)."""
    return float(sum(b.executed + b.entries * (ninstr[bid] - b.size)
                     for bid, b in profile.items() if bid in ninstr))


def trace_cost(ninstr: dict[str, dict[int, int]], profile: dict[str, dict[int, BlockProfile]]
               ) -> dict[str, float]:
    """Per function: instructions the candidate build would execute on the profiled run.

    Each of the candidate's blocks costs what the block with its ID executed in the profile plus,
    per instruction it gained or lost (spills, reloads, copies), that block's entry count. An
    unpriced function (`unpriced`: allocation rebuilt its blocks) costs what the profiled build
    executed in it plus the size of the change priced that way, gain or loss: its sign is not
    known (module docstring)."""
    out = {}
    for fn, prof in profile.items():
        bbs = ninstr.get(fn)
        if bbs is None:
            continue
        cost = block_priced_cost(bbs, prof)
        if unpriced(bbs, prof):
            executed = float(sum(b.executed for b in prof.values()))
            cost = executed + abs(cost - executed)
        out[fn] = cost
    return out


def function_instructions(blocks: BlockMap, addrs: list[int], instr_counts: dict[int, int]
                          ) -> dict[str, int]:
    """Instructions executed per function: every executed address from its first block's start
    to its last block's end (padding between blocks included), as measured."""
    import bisect

    out = {}
    for fn, bbs in blocks.items():
        lo, hi = min(b[1] for b in bbs), max(b[2] for b in bbs)
        out[fn] = sum(instr_counts.get(a, 0)
                      for a in addrs[bisect.bisect_left(addrs, lo):bisect.bisect_left(addrs, hi)])
    return out


def object_trace_cost(obj: Path | str, profile: dict[str, dict[int, BlockProfile]]) -> dict[str, float]:
    """trace_cost of a compiled object (built with -fbasic-block-address-map) against its
    module's profile."""
    return trace_cost(object_block_instructions(obj), profile)


def object_block_instructions(obj: Path | str) -> dict[str, dict[int, int]]:
    """Instructions per block of a compiled object (built with -fbasic-block-address-map):
    {function: {block ID: count}}. In a relocatable object every code section starts at address
    0 (C++ inline functions each have their own COMDAT section, as do all functions with
    -ffunction-sections), so each function's blocks are counted in its own section's
    instructions, found through the symbol table."""
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile

    with open(obj, "rb") as f:
        elf = ELFFile(f)
        text = [s.name for s in elf.iter_sections()
                if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_size"] > 0]
        if not text:
            return {}
        if len(set(text)) != len(text):
            raise MlgoError(f"{obj}: two code sections share a name; the trace reward cannot "
                            "tell their instructions apart")
        symtab = elf.get_section_by_name(".symtab")
        section_of = {sym.name: elf.get_section(sym["st_shndx"]).name
                      for sym in (symtab.iter_symbols() if symtab else ())
                      if sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int)}
    blocks = read_block_map(obj)
    by_section = _disassembly(obj)
    ninstr = {}
    for fn, bbs in blocks.items():
        section = text[0] if len(text) == 1 else section_of.get(fn)
        if section is None:
            raise MlgoError(f"{obj}: function {fn} of the basic-block address map has no symbol "
                            "in a code section")
        ninstr.update(block_instructions({fn: bbs}, by_section.get(section, [])))
    return ninstr
