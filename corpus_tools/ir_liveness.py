"""Plain-Python IR of one function, and its liveness: register pressure and live intervals.

The structures here are what the algorithms need and nothing more; corpus_tools.ir_analysis fills
them from llvmlite (`function_ir`, which also decides which values are tracked) and its module
docstring defines the call kinds. Nothing here imports llvmlite, so the algorithms can be tested
on hand-made inputs.

CFG and loops: a depth-first search from the entry block; an edge to a block that is still on the
DFS stack is a back-edge (see corpus_tools.ir_analysis for how loops are counted from them).

Liveness: classic SSA data flow over blocks, with phi operands treated as used at the end of the
incoming block (live-out of that block, not live-in of the phi's block) and phi results defined
at the top of their block, all phis of a block at once.
  max_pressure           the largest number of tracked values live at once at any point between two
                         instructions (a register-pressure estimate, no register classes).
  live_across_calls      values live across at least one call that is not an intrinsic or inline
                         asm: live after the call and not its result.
  live_across_back_edges values live on at least one back-edge t -> h, i.e. live-out of t and
                         live-in of h. A value handed to a phi of h is not counted: the phi starts
                         a new value.
Live intervals: blocks are laid out in reverse post-order, instructions numbered from 1 (arguments
are defined at 0). A value's interval is the hull [first, last) of the gaps between instructions
where it is live: from its definition (or the start of a block it is live into) to its last use (or
the end of a block it is live out of). `max_interval_overlap` is the largest number of intervals
covering one gap, what a linear-scan allocator without lifetime holes would see; it is never below
`max_pressure`. `longest_live_range` is the longest interval in instructions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Call kinds of a call site (defined in corpus_tools.ir_analysis's docstring).
DECISION = "decision"
EXTERNAL = "external"
INTRINSIC = "intrinsic"
INDIRECT = "indirect"
INLINE_ASM = "inline_asm"
# Calls that clobber registers like a real call does.
_REAL_CALL_KINDS = frozenset({DECISION, EXTERNAL, INDIRECT})


# --------------------------------------------------------------------------------------------
# Plain-Python IR: what the algorithms need, nothing more.


@dataclass
class Instruction:
    opcode: str
    defines: int | None = None  # id of the tracked value this instruction defines
    uses: tuple[int, ...] = ()  # ids of tracked values used (for a phi: empty, see incoming)
    incoming: tuple[tuple[int, int], ...] = ()  # phi only: (value id, incoming block index)
    call_kind: str | None = None
    callee: str | None = None  # name of a directly called function


@dataclass
class Block:
    instructions: list[Instruction]
    successors: list[int]  # block indices


@dataclass
class FunctionIR:
    name: str
    blocks: list[Block]  # blocks[0] is the entry
    arguments: tuple[int, ...] = ()  # tracked value ids


# --------------------------------------------------------------------------------------------
# CFG order.


def depth_first_order(successors: Sequence[Sequence[int]]
                      ) -> tuple[list[int], list[tuple[int, int]]]:
    """Iterative DFS from block 0: (reverse post-order of the reachable blocks, back-edges)."""
    if not successors:
        return [], []
    postorder: list[int] = []
    back_edges: list[tuple[int, int]] = []
    state = [0] * len(successors)  # 0 unvisited, 1 on the DFS stack, 2 finished
    state[0] = 1
    work = [(0, iter(successors[0]))]
    while work:
        node, edges = work[-1]
        for succ in edges:
            if state[succ] == 0:
                state[succ] = 1
                work.append((succ, iter(successors[succ])))
                break
            if state[succ] == 1:
                back_edges.append((node, succ))
        else:
            work.pop()
            state[node] = 2
            postorder.append(node)
    postorder.reverse()
    return postorder, back_edges


# --------------------------------------------------------------------------------------------
# Liveness.


@dataclass
class Liveness:
    order: list[int]  # layout: reachable blocks in RPO, then unreachable ones
    back_edges: list[tuple[int, int]]
    unreachable: int
    live_in: list[set[int]]
    live_out: list[set[int]]
    max_pressure: int
    live_across_calls: set[int]
    live_across_back_edges: set[int]
    intervals: dict[int, tuple[int, int]]  # value id -> gaps [first, last + 1) where it is live

    @property
    def max_interval_overlap(self) -> int:
        events: dict[int, int] = {}
        for start, end in self.intervals.values():
            events[start] = events.get(start, 0) + 1
            events[end] = events.get(end, 0) - 1
        best = current = 0
        for position in sorted(events):
            current += events[position]
            best = max(best, current)
        return best

    @property
    def longest_live_range(self) -> int:
        return max((end - start for start, end in self.intervals.values()), default=0)


def liveness(function: FunctionIR) -> Liveness:
    blocks = function.blocks
    n = len(blocks)
    rpo, back_edges = depth_first_order([b.successors for b in blocks])
    reachable = set(rpo)
    order = rpo + [b for b in range(n) if b not in reachable]

    defs: list[set[int]] = []
    upward_exposed: list[set[int]] = []
    phi_uses_out: list[set[int]] = [set() for _ in range(n)]
    for block in blocks:
        defined: set[int] = set()
        exposed: set[int] = set()
        for inst in block.instructions:
            if inst.opcode == "phi":
                for value, pred in inst.incoming:
                    phi_uses_out[pred].add(value)
            else:
                exposed.update(u for u in inst.uses if u not in defined)
            if inst.defines is not None:
                defined.add(inst.defines)
        defs.append(defined)
        upward_exposed.append(exposed)

    live_in: list[set[int]] = [set(e) for e in upward_exposed]
    live_out: list[set[int]] = [set() for _ in range(n)]
    changed = True
    while changed:  # backward problem: visit in post-order so most facts settle in one sweep
        changed = False
        for b in reversed(order):
            out = set(phi_uses_out[b])
            for s in blocks[b].successors:
                out |= live_in[s]
            live_out[b] = out
            new_in = upward_exposed[b] | (out - defs[b])
            if new_in != live_in[b]:
                live_in[b] = new_in
                changed = True

    # Layout positions: instruction k of the layout is at k + 1; gap g lies between positions g
    # and g + 1, so gap 0 is before the first instruction (where arguments are live).
    first_gap: dict[int, int] = {a: 0 for a in function.arguments}
    last_gap: dict[int, int] = {}

    def extend(value: int, gap: int) -> None:
        if value not in first_gap or gap < first_gap[value]:
            first_gap[value] = gap
        if gap > last_gap.get(value, -1):
            last_gap[value] = gap

    max_pressure = 0
    across_calls: set[int] = set()
    position = 0
    for b in order:
        block = blocks[b]
        start = position  # gap before the block's first instruction
        position += len(block.instructions)
        end = position  # gap after its terminator
        for value in live_in[b]:
            extend(value, start)
        for value in live_out[b]:
            extend(value, end)
        live = set(live_out[b])
        max_pressure = max(max_pressure, len(live))
        gap = end
        for inst in reversed(block.instructions):
            gap -= 1
            if inst.opcode == "phi":
                continue
            if inst.defines is not None:
                live.discard(inst.defines)
                if inst.defines not in first_gap or gap + 1 < first_gap[inst.defines]:
                    first_gap[inst.defines] = gap + 1
            if inst.call_kind in _REAL_CALL_KINDS:
                across_calls |= live
            for u in inst.uses:
                live.add(u)
                extend(u, gap)
            max_pressure = max(max_pressure, len(live))
        for inst in block.instructions:
            if inst.opcode == "phi" and inst.defines is not None:
                # Phi results exist from the block's top; a used one is in `live` here already.
                first_gap[inst.defines] = min(first_gap.get(inst.defines, start), start)

    across_back_edges: set[int] = set()
    for tail, header in back_edges:
        across_back_edges |= live_out[tail] & live_in[header]

    # Half-open [first gap, last gap + 1); a value never used has no interval.
    intervals = {v: (first_gap[v], last + 1) for v, last in last_gap.items()
                 if v in first_gap and last >= first_gap[v]}
    return Liveness(order, back_edges, n - len(rpo), live_in, live_out, max_pressure,
                    across_calls, across_back_edges, intervals)
