"""Static statistics of LLVM IR modules, read with llvmlite: call graph, live ranges, size.

llvmlite 0.50 bundles LLVM 22 and reads LLVM 19 bitcode (auto-upgrading intrinsics). Each module is
first copied into plain Python structures (`FunctionIR`, in corpus_tools.ir_liveness with the
liveness analysis), so the graph and liveness algorithms do not depend on llvmlite and can be
tested on hand-made inputs.

Definitions
-----------
Call sites (calls, invokes and callbrs), classified by their called operand:
  decision point   the callee is a function with a body in this module. These are the calls the
                   inliner asks its advisor about (LLVM's MLInlineAdvisor `getInlinableCS`: called
                   function known and not a declaration). Self-recursive calls are included and
                   also counted on their own (`self_recursive_calls`): LLVM answers those without
                   asking the model.
  external call    the callee is a declaration that is not an intrinsic.
  intrinsic call   the callee's name starts with "llvm." (always a declaration). Counted apart and
                   in neither of the two above: most lower to inline code, not to a call.
  indirect call    the called operand is not a function (pointer, alias, ...).
  inline asm       the called operand is inline assembly; not a call at all, counted apart.

Call graph: nodes are the defined functions, with an edge f -> g for each decision point in f
calling g. SCCs come from an iterative Tarjan (no recursion, so deep call chains are fine), listed
callees first. Height follows MLInlineAdvisor's `FunctionLevels`: an SCC's height is 0 if none of its
decision points calls into another SCC, otherwise 1 + the largest height among the SCCs it calls.
A function has its SCC's height; the `callsite_height` feature of a call site is its caller's height.

CFG and loops: a depth-first search from the entry block; an edge to a block that is still on the
DFS stack is a back-edge and its target a loop header. `loops` counts distinct headers, which for
reducible control flow equals the number of natural loops (LLVM's LoopInfo). Blocks not reachable
from the entry are counted in `unreachable_blocks` and placed after the reachable ones.

Tracked values: function arguments and instructions whose type is not void/label/metadata/token,
except static allocas (allocas in the entry block): those become frame slots, not registers.

Liveness (max_pressure, live_across_calls, live_across_back_edges) and live intervals
(max_interval_overlap, longest_live_range): defined in corpus_tools.ir_liveness.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corpus_tools.ir_liveness import (
    DECISION,
    EXTERNAL,
    INDIRECT,
    INLINE_ASM,
    INTRINSIC,
    Block,
    FunctionIR,
    Instruction,
    liveness,
)
from mlgo_base.errors import CorpusError

CALL_OPCODES = frozenset({"call", "invoke", "callbr"})


@dataclass
class FunctionStats:
    name: str
    linkage: str
    blocks: int
    instructions: int
    unreachable_blocks: int
    loops: int
    back_edges: int
    decision_points: int
    self_recursive_calls: int
    external_calls: int
    intrinsic_calls: int
    indirect_calls: int
    inline_asm_calls: int
    callees: list[str]  # defined functions called directly, sorted, without repeats
    height: int
    scc_size: int  # number of functions in this function's SCC
    live_values: int
    max_pressure: int
    max_interval_overlap: int
    longest_live_range: int
    live_across_calls: int
    live_across_back_edges: int


@dataclass
class ModuleStats:
    name: str
    path: str
    functions: list[FunctionStats]
    declarations: int
    sccs: int
    recursive_sccs: int  # SCCs with more than one function or a self-call
    max_height: int
    decision_points_by_height: dict[int, int] = field(default_factory=dict)

    @property
    def decision_points(self) -> int:
        return sum(f.decision_points for f in self.functions)

    @property
    def external_calls(self) -> int:
        return sum(f.external_calls for f in self.functions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decision_points"] = self.decision_points
        d["external_calls"] = self.external_calls
        # JSON object keys are strings; keep the order by height.
        d["decision_points_by_height"] = {
            str(h): n for h, n in sorted(self.decision_points_by_height.items())
        }
        return d


# --------------------------------------------------------------------------------------------
# Reading IR with llvmlite.


def parse_module(path: Path | str):
    """Parse a bitcode (`.bc`) or textual (`.ll`) module and verify it.

    Raises CorpusError naming the file and carrying LLVM's message for unreadable, truncated,
    corrupt or invalid modules."""
    import llvmlite.binding as llvm

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read module ({e.strerror or e})") from e
    try:
        if path.suffix == ".ll":
            module = llvm.parse_assembly(data.decode(errors="replace"))
        else:
            module = llvm.parse_bitcode(data)
        module.verify()
    except RuntimeError as e:
        message = " ".join(str(e).split())
        raise CorpusError(f"{path}: llvmlite cannot use this module: {message}") from e
    return module


def _address(value) -> int:
    # llvmlite makes a new wrapper per access; the LLVM object's address is the identity.
    return ctypes.cast(value._ptr, ctypes.c_void_p).value


def _is_tracked_type(type_ref) -> bool:
    from llvmlite.binding.typeref import TypeKind

    return type_ref.type_kind not in (
        TypeKind.void, TypeKind.label, TypeKind.metadata, TypeKind.token)


def _call_kind(callee_operand, defined: set[str]) -> tuple[str, str | None]:
    from llvmlite.binding.value import ValueKind

    kind = callee_operand.value_kind
    if kind == ValueKind.function:
        name = callee_operand.name
        if name.startswith("llvm."):
            return INTRINSIC, name
        return (DECISION if name in defined else EXTERNAL), name
    if kind == ValueKind.inline_asm:
        return INLINE_ASM, None
    return INDIRECT, None


def function_ir(function, defined: set[str]) -> FunctionIR:
    """Copy one defined llvmlite function into a FunctionIR."""
    blocks = list(function.blocks)
    block_index = {_address(b): i for i, b in enumerate(blocks)}
    value_ids: dict[int, int] = {}
    arguments = []
    for arg in function.arguments:
        if _is_tracked_type(arg.type):
            value_ids[_address(arg)] = len(value_ids)
            arguments.append(value_ids[_address(arg)])

    # First pass: ids for every value; operands are resolved afterwards because phis (and
    # unreachable code) may refer to instructions that come later.
    raw: list[list[tuple[Instruction, list[int], list[int]]]] = []
    for bi, block in enumerate(blocks):
        rows = []
        for inst in block.instructions:
            opcode = inst.opcode
            operands = list(inst.operands)
            ir_inst = Instruction(opcode)
            tracked = _is_tracked_type(inst.type) and not (opcode == "alloca" and bi == 0)
            if tracked:
                ir_inst.defines = len(value_ids)
                value_ids[_address(inst)] = ir_inst.defines
            if opcode in CALL_OPCODES and operands:
                ir_inst.call_kind, ir_inst.callee = _call_kind(operands[-1], defined)
            incoming = [_address(b) for b in inst.incoming_blocks] if opcode == "phi" else []
            rows.append((ir_inst, [_address(o) for o in operands], incoming))
        raw.append(rows)

    ir_blocks = []
    for rows in raw:
        instructions = []
        successors: list[int] = []
        for ir_inst, operand_addresses, incoming in rows:
            if ir_inst.opcode == "phi":
                ir_inst.incoming = tuple(
                    (value_ids[v], block_index[b])
                    for v, b in zip(operand_addresses, incoming, strict=True)
                    if v in value_ids and b in block_index)
            else:
                ir_inst.uses = tuple(value_ids[a] for a in operand_addresses if a in value_ids)
            instructions.append(ir_inst)
        if rows:
            # Block operands of the terminator are the successors (br, switch, invoke, ...).
            targets = [block_index[a] for a in rows[-1][1] if a in block_index]
            if rows[-1][0].opcode == "br":
                # A conditional br stores (cond, false, true); LLVM's successor order, which
                # decides the DFS and so the layout, is true first.
                targets.reverse()
            for t in targets:
                if t not in successors:
                    successors.append(t)
        ir_blocks.append(Block(instructions, successors))
    return FunctionIR(function.name, ir_blocks, tuple(arguments))


# --------------------------------------------------------------------------------------------
# Graph algorithms.


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion. Returns the SCCs callees-first (reverse topological
    order of the condensation); edges to nodes not in `graph` are ignored."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    successors = {n: [s for s in graph[n] if s in graph] for n in graph}
    for root in graph:
        if root in index:
            continue
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(successors[root]))]
        while work:
            node, edges = work[-1]
            for succ in edges:
                if succ not in index:
                    index[succ] = lowlink[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(successors[succ])))
                    break
                if succ in on_stack:
                    lowlink[node] = min(lowlink[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    sccs.append(component)
    return sccs


def scc_heights(graph: Mapping[str, Iterable[str]],
                sccs: Sequence[Sequence[str]] | None = None) -> dict[str, int]:
    """Height of every node (see the module docstring). `sccs` must be callees-first, as
    strongly_connected_components returns them."""
    if sccs is None:
        sccs = strongly_connected_components(graph)
    height: dict[str, int] = {}
    for component in sccs:
        members = set(component)
        level = 0
        for node in component:
            for callee in graph[node]:
                if callee in height and callee not in members:
                    level = max(level, height[callee] + 1)
        for node in component:
            height[node] = level
    return height


# --------------------------------------------------------------------------------------------
# Whole functions and modules.


def function_stats(function: FunctionIR, linkage: str = "") -> FunctionStats:
    """Everything but the call-graph fields (height, scc_size), which need the whole module."""
    live = liveness(function)
    counts = dict.fromkeys((DECISION, EXTERNAL, INTRINSIC, INDIRECT, INLINE_ASM), 0)
    self_calls = 0
    callees: set[str] = set()
    for block in function.blocks:
        for inst in block.instructions:
            if inst.call_kind is None:
                continue
            counts[inst.call_kind] += 1
            if inst.call_kind == DECISION:
                callees.add(inst.callee)
                self_calls += inst.callee == function.name
    return FunctionStats(
        name=function.name,
        linkage=linkage,
        blocks=len(function.blocks),
        instructions=sum(len(b.instructions) for b in function.blocks),
        unreachable_blocks=live.unreachable,
        loops=len({header for _, header in live.back_edges}),
        back_edges=len(live.back_edges),
        decision_points=counts[DECISION],
        self_recursive_calls=self_calls,
        external_calls=counts[EXTERNAL],
        intrinsic_calls=counts[INTRINSIC],
        indirect_calls=counts[INDIRECT],
        inline_asm_calls=counts[INLINE_ASM],
        callees=sorted(callees),
        height=0,
        scc_size=1,
        live_values=len(live.intervals),
        max_pressure=live.max_pressure,
        max_interval_overlap=live.max_interval_overlap,
        longest_live_range=live.longest_live_range,
        live_across_calls=len(live.live_across_calls),
        live_across_back_edges=len(live.live_across_back_edges),
    )


def module_stats_from_functions(name: str, path: str, functions: list[FunctionStats],
                                declarations: int = 0) -> ModuleStats:
    """Fill in the call-graph fields of `functions` and sum them up into a ModuleStats."""
    graph = {f.name: f.callees for f in functions}
    sccs = strongly_connected_components(graph)
    heights = scc_heights(graph, sccs)
    scc_size = {member: len(component) for component in sccs for member in component}
    by_height: dict[int, int] = {}
    for f in functions:
        f.height = heights[f.name]
        f.scc_size = scc_size[f.name]
        if f.decision_points:
            by_height[f.height] = by_height.get(f.height, 0) + f.decision_points
    recursive = sum(1 for c in sccs if len(c) > 1 or c[0] in graph[c[0]])
    return ModuleStats(
        name=name,
        path=path,
        functions=functions,
        declarations=declarations,
        sccs=len(sccs),
        recursive_sccs=recursive,
        max_height=max(heights.values(), default=0),
        decision_points_by_height=by_height,
    )


def analyze_module(path: Path | str, name: str | None = None) -> ModuleStats:
    """Statistics of one module file (`.bc` or `.ll`). Raises CorpusError if it cannot be read."""
    path = Path(path)
    module = parse_module(path)
    defined: set[str] = set()
    declarations = 0
    for fn in module.functions:
        if fn.is_declaration:
            declarations += not fn.name.startswith("llvm.")
        else:
            defined.add(fn.name)
    functions = [
        function_stats(function_ir(fn, defined), fn.linkage.name)
        for fn in module.functions if not fn.is_declaration
    ]
    return module_stats_from_functions(name or path.stem, str(path), functions, declarations)


# --------------------------------------------------------------------------------------------
# The frontend level a module was emitted at.


@dataclass(frozen=True)
class SizeAttributes:
    """How many of a module's defined functions carry the frontend's size attributes. At
    -Oz clang marks every function it defines `minsize optsize`, at -Os `optsize`, at -O1..3
    neither. Not counted: `optnone` functions (none at any level) and `alwaysinline` ones, e.g.
    _FORTIFY_SOURCE's `memcpy.inline` wrappers, which clang emits without size attributes and
    which are inlined whatever the policy says."""

    defined: int
    minsize: int
    optsize: int

    def level(self) -> str:
        """'-Oz', '-Os', '-O1/-O2/-O3', 'mixed' or 'no functions' (no defined function)."""
        if self.defined == 0:
            return "no functions"
        if self.minsize == self.defined:
            return "-Oz"
        if self.optsize == self.defined and self.minsize == 0:
            return "-Os"
        if self.optsize == 0 and self.minsize == 0:
            return "-O1/-O2/-O3"
        return "mixed"

    def describe(self) -> str:
        return (f"{self.minsize} of {self.defined} defined functions minsize, "
                f"{self.optsize} optsize")


_QUOTED = re.compile(r'"[^"]*"')


def size_attributes(path: Path | str) -> SizeAttributes:
    """Count the size attributes of the defined functions of a module (see SizeAttributes)."""
    module = parse_module(path)
    defined = minsize = optsize = 0
    for f in module.functions:
        if f.is_declaration:
            continue
        words: set[str] = set()
        for group in f.attributes:
            text = group.decode(errors="replace") if isinstance(group, bytes) else str(group)
            words.update(_QUOTED.sub(" ", text).split())
        if "optnone" in words or "alwaysinline" in words:
            continue
        defined += 1
        minsize += "minsize" in words
        optsize += "optsize" in words
    return SizeAttributes(defined, minsize, optsize)
