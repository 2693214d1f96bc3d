"""corpus_tools.ir_analysis and corpus_tools.ir_liveness: hand-written IR with known answers,
and call-graph and loop counts checked against LLVM 19's own printers on bitcode from clang-19."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool, needs_llvm

from corpus_tools.ir_analysis import (
    analyze_module,
    function_ir,
    parse_module,
    scc_heights,
    strongly_connected_components,
)
from corpus_tools.ir_liveness import depth_first_order, liveness
from mlgo_base.errors import CorpusError

DATA = Path(__file__).parent / "data" / "ir"

needs_llvm19 = needs_llvm("clang", "opt", "llvm-dis")


def _functions(path: Path) -> dict:
    return {f.name: f for f in analyze_module(path).functions}


# --------------------------------------------------------------------------------------------
# Hand-written IR with known answers.


def test_call_classes_sccs_and_heights():
    stats = analyze_module(DATA / "callgraph.ll")
    fns = {f.name: f for f in stats.functions}
    assert {n: f.height for n, f in fns.items()} == {
        "leaf": 0, "a": 1, "b": 1, "self": 1, "with_invoke": 1, "top": 2, "top2": 3}
    assert {n: f.decision_points for n, f in fns.items()} == {
        "leaf": 0, "a": 2, "b": 1, "self": 2, "with_invoke": 1, "top": 2, "top2": 2}
    assert fns["a"].scc_size == fns["b"].scc_size == 2
    assert fns["self"].self_recursive_calls == 1 and fns["self"].scc_size == 1
    top = fns["top"]
    assert (top.external_calls, top.intrinsic_calls, top.indirect_calls,
            top.inline_asm_calls) == (1, 1, 1, 1)
    assert top.callees == ["a", "self"]
    assert stats.sccs == 6 and stats.recursive_sccs == 2 and stats.max_height == 3
    assert stats.decision_points == 10
    assert stats.decision_points_by_height == {1: 6, 2: 2, 3: 2}
    assert stats.declarations == 2  # @ext and the personality; the intrinsic is not counted
    # `fn` (used by the indirect call), x and y are live across real calls; the inline asm after
    # the indirect call does not count as a call.
    assert top.live_across_calls == 3


def test_liveness_known_answers():
    fns = _functions(DATA / "liveness.ll")
    straight = fns["straight"]
    assert (straight.max_pressure, straight.max_interval_overlap,
            straight.longest_live_range, straight.live_values) == (3, 3, 3, 5)
    assert fns["crossing"].live_across_calls == 2  # x and y; z dies at @use, w only spans an intrinsic
    assert fns["crossing"].max_pressure == 2
    loop = fns["loop"]
    assert (loop.loops, loop.back_edges, loop.max_pressure,
            loop.live_across_back_edges) == (1, 1, 5, 2)
    diamond = fns["diamond"]
    # Exact pressure ignores %p in %right; the interval hull does not.
    assert (diamond.max_pressure, diamond.max_interval_overlap,
            diamond.longest_live_range) == (3, 4, 8)
    frame = fns["frame"]
    assert (frame.live_values, frame.max_pressure) == (2, 1)


def test_layout_is_llvm_reverse_post_order():
    module = parse_module(DATA / "liveness.ll")
    fn = function_ir(module.get_function("diamond"), set())
    # blocks: entry 0, left 1, right 2, join 3; LLVM's RPO puts the false successor first.
    assert fn.blocks[0].successors == [1, 2]
    live = liveness(fn)
    assert live.order == [0, 2, 1, 3]
    assert live.intervals and all(s < e for s, e in live.intervals.values())


def test_loops_and_unreachable_blocks():
    fns = _functions(DATA / "loops.ll")
    assert (fns["nested"].loops, fns["nested"].back_edges) == (2, 2)
    assert fns["nested"].live_across_back_edges == 2  # n (both loops) and i (inner loop)
    assert (fns["two_latches"].loops, fns["two_latches"].back_edges) == (1, 2)
    assert fns["two_latches"].live_across_back_edges == 1
    dead = fns["dead_block"]
    assert (dead.blocks, dead.unreachable_blocks, dead.loops) == (3, 2, 0)


# --------------------------------------------------------------------------------------------
# Graph algorithms against brute force.


def _reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for s in graph[todo.pop()]:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_sccs_and_heights_match_brute_force(seed):
    rng = random.Random(seed)
    nodes = [f"f{i}" for i in range(rng.randint(1, 25))]
    graph = {n: [rng.choice(nodes) for _ in range(rng.randint(0, 3))] for n in nodes}
    sccs = strongly_connected_components(graph)
    reach = {n: _reachable(graph, n) for n in nodes}
    expected = {frozenset(m for m in nodes if m in reach[n] and n in reach[m]) for n in nodes}
    assert {frozenset(c) for c in sccs} == expected
    assert sorted(n for c in sccs for n in c) == sorted(nodes)
    # Callees first: every edge leaving an SCC goes to an SCC listed earlier.
    position = {n: i for i, c in enumerate(sccs) for n in c}
    assert all(position[s] <= position[n] for n in nodes for s in graph[n])

    # Height by fixpoint over edges between different SCCs (longest path in the condensation).
    component = {n: frozenset(m for m in nodes if m in reach[n] and n in reach[m]) for n in nodes}
    height = dict.fromkeys(nodes, 0)
    changed = True
    while changed:
        changed = False
        for n in nodes:
            best = max([height[s] + 1 for m in component[n] for s in graph[m]
                        if component[s] != component[n]], default=0)
            for m in component[n]:
                if height[m] != best:
                    height[m] = best
                    changed = True
    assert scc_heights(graph, sccs) == height


def test_deep_graphs_do_not_recurse():
    n = 100_000
    chain = {f"f{i}": [f"f{i + 1}"] if i + 1 < n else [] for i in range(n)}
    sccs = strongly_connected_components(chain)
    assert len(sccs) == n
    heights = scc_heights(chain, sccs)
    assert heights["f0"] == n - 1 and heights[f"f{n - 1}"] == 0
    chain[f"f{n - 1}"] = ["f0"]
    assert len(strongly_connected_components(chain)) == 1
    order, back_edges = depth_first_order([[i + 1] for i in range(n - 1)] + [[0]])
    assert order == list(range(n)) and back_edges == [(n - 1, 0)]


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.fixture(scope="module")
def good_bitcode(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bc") / "calls.bc"
    subprocess.run([llvm_tool("clang"), "-O1", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(DATA / "calls.c"), "-o", str(out)], check=True)
    return out


@needs_llvm("clang")
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "flipped"])
def test_corrupt_bitcode_raises_corpus_error(tmp_path, good_bitcode, damage):
    data = good_bitcode.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 3]
    elif damage == "empty":
        data = b""
    elif damage == "garbage":
        data = b"this is not bitcode at all"
    else:
        buf = bytearray(data)
        for i in range(200, len(buf), 37):
            buf[i] ^= 0x5A
        data = bytes(buf)
    bad = tmp_path / f"{damage}.bc"
    bad.write_bytes(data)
    with pytest.raises(CorpusError) as info:
        analyze_module(bad)
    message = str(info.value)
    assert str(bad) in message
    assert "bitcode" in message.lower()  # LLVM's own words, e.g. "LLVM bitcode parsing error"


def test_missing_and_invalid_text_modules(tmp_path):
    with pytest.raises(CorpusError, match="cannot read"):
        analyze_module(tmp_path / "nope.bc")
    bad = tmp_path / "bad.ll"
    bad.write_text("define i32 @f() {\n  %x = add i32 %y, 1\n  ret i32 %x\n}\n")
    with pytest.raises(CorpusError, match=re.escape(str(bad))):
        analyze_module(bad)


# --------------------------------------------------------------------------------------------
# Independent counts from LLVM 19's printers on clang-19 bitcode.


def _compile(src: Path, out_dir: Path) -> Path:
    out = out_dir / (src.name + ".bc")
    subprocess.run([llvm_tool("clang"), "-O1", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(src), "-o", str(out)], check=True)
    return out


def _opt(bc: Path, passes: str) -> str:
    res = subprocess.run([llvm_tool("opt"), f"-passes={passes}", "-disable-output", str(bc)],
                         capture_output=True, text=True, check=True)
    return res.stdout + res.stderr


_DEFINE = re.compile(r'^define [^@]*@("(?:[^"\\]|\\.)*"|[-\w$.]+)\(', re.M)


def _defined_functions(bc: Path) -> set[str]:
    text = subprocess.run([llvm_tool("llvm-dis"), str(bc), "-o", "-"], capture_output=True, text=True,
                          check=True).stdout
    return {m.group(1).strip('"') for m in _DEFINE.finditer(text)}


def _llvm_direct_calls(bc: Path, defined: set[str]) -> dict[str, int]:
    """Per defined function, LLVM's count of call sites to defined functions (callback edges,
    printed as CS<None>, are not call sites)."""
    counts: dict[str, int] = {}
    current = None
    for line in _opt(bc, "print-callgraph").splitlines():
        node = re.match(r"Call graph node for function: '(.*)'<<", line)
        if node:
            current = node.group(1)
            if current in defined:
                counts[current] = 0
            continue
        if line.startswith("Call graph node"):
            current = None
            continue
        call = re.match(r"\s+CS<0x[0-9a-f]+> calls function '(.*)'$", line)
        if call and current in defined and call.group(1) in defined:
            counts[current] += 1
    return counts


def _llvm_sccs(bc: Path, defined: set[str]) -> set[frozenset[str]]:
    sccs = set()
    for line in _opt(bc, "print-callgraph-sccs").splitlines():
        m = re.match(r"SCC #\d+: (.*?)( \(Has self-loop\))?\.?$", line)
        if m:
            members = frozenset(n for n in m.group(1).split(", ") if n in defined)
            if members:
                sccs.add(members)
    return sccs


def _llvm_loop_counts(bc: Path, defined: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    current = None
    for line in _opt(bc, "print<loops>").splitlines():
        m = re.match(r"Loop info for function '(.*)':", line)
        if m:
            current = m.group(1)
            counts[current] = 0
        elif "Loop at depth" in line and current is not None:
            counts[current] += 1
    return {n: c for n, c in counts.items() if n in defined}


@pytest.fixture(scope="module")
def compiled_sources(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("independent")
    return {name: _compile(DATA / name, out) for name in ("calls.c", "calls.cpp")}


@needs_llvm19
def test_decision_points_match_llvm_callgraph(compiled_sources):
    total = 0
    for bc in compiled_sources.values():
        defined = _defined_functions(bc)
        expected = _llvm_direct_calls(bc, defined)
        stats = analyze_module(bc)
        ours = {f.name: f.decision_points for f in stats.functions}
        assert set(ours) == defined
        assert ours == expected, bc.name
        print(f"{bc.name}: {sum(expected.values())} calls to defined functions in "
              f"{len(expected)} functions, same per function as opt-19 print-callgraph")
        total += sum(expected.values())
    # The sources have enough calls that agreement is not trivial.
    assert total >= 20


@needs_llvm19
def test_sccs_match_llvm(compiled_sources):
    for name, bc in compiled_sources.items():
        defined = _defined_functions(bc)
        graph = {f.name: f.callees for f in analyze_module(bc).functions}
        ours = {frozenset(c) for c in strongly_connected_components(graph)}
        assert ours == _llvm_sccs(bc, defined), name
        if name == "calls.c":
            assert frozenset({"is_odd", "is_even"}) in ours


@needs_llvm19
def test_loops_match_llvm_loopinfo(compiled_sources):
    loops = 0
    for name, bc in compiled_sources.items():
        defined = _defined_functions(bc)
        ours = {f.name: f.loops for f in analyze_module(bc).functions}
        expected = _llvm_loop_counts(bc, defined)
        assert ours == expected, name
        loops += sum(expected.values())
    assert loops >= 4


# --------------------------------------------------------------------------------------------
# Liveness against its path definition on random control flow.


def _random_function(rng: random.Random):
    from corpus_tools.ir_liveness import Block, FunctionIR, Instruction

    n_blocks = rng.randint(1, 7)
    succs = [rng.sample(range(n_blocks), rng.randint(0, min(2, n_blocks)))
             for _ in range(n_blocks)]
    preds = [[p for p in range(n_blocks) if b in succs[p]] for b in range(n_blocks)]
    arguments = tuple(range(rng.randint(0, 2)))
    next_id = len(arguments)
    blocks_phis, blocks_body = [], []
    for b in range(n_blocks):
        phis = []
        for _ in range(rng.randint(0, 2) if preds[b] else 0):
            phis.append(next_id)
            next_id += 1
        blocks_phis.append(phis)
        body = []
        for _ in range(rng.randint(1, 4)):
            defines = None
            if rng.random() < 0.8:
                defines = next_id
                next_id += 1
            body.append(defines)
        blocks_body.append(body)
    all_values = list(range(next_id))
    blocks = []
    for b in range(n_blocks):
        insts = [Instruction("phi", defines=v,
                             incoming=tuple((rng.choice(all_values), p) for p in preds[b]))
                 for v in blocks_phis[b]]
        for defines in blocks_body[b]:
            uses = tuple(rng.sample(all_values, min(len(all_values), rng.randint(0, 3))))
            kind = rng.choice([None, None, "external", "intrinsic"])
            insts.append(Instruction("call" if kind else "add", defines=defines, uses=uses,
                                     call_kind=kind))
        blocks.append(Block(insts, succs[b]))
    return FunctionIR("random", blocks, arguments), all_values


def _live_at(fn, value: int, block: int, index: int) -> bool:
    """Is `value` live before non-phi instruction `index` of `block` (index == len: at the
    block's end)? True if some path from there reaches a use before a definition."""
    todo, seen = [(block, index)], set()
    while todo:
        b, k = todo.pop()
        body = [i for i in fn.blocks[b].instructions if i.opcode != "phi"]
        killed = False
        for inst in body[k:]:
            if value in inst.uses:
                return True
            if inst.defines == value:
                killed = True
                break
        if killed:
            continue
        for s in fn.blocks[b].successors:
            phis = [i for i in fn.blocks[s].instructions if i.opcode == "phi"]
            if any(v == value and p == b for i in phis for v, p in i.incoming):
                return True
            if any(i.defines == value for i in phis) or s in seen:
                continue
            seen.add(s)
            todo.append((s, 0))
    return False


@pytest.mark.parametrize("seed", range(40))
def test_liveness_matches_path_definition(seed):
    fn, values = _random_function(random.Random(seed))
    live = liveness(fn)
    best = 0
    across_calls: set[int] = set()
    for b, block in enumerate(fn.blocks):
        body = [i for i in block.instructions if i.opcode != "phi"]
        for k in range(len(body) + 1):
            live_here = {v for v in values if _live_at(fn, v, b, k)}
            best = max(best, len(live_here))
            if k > 0 and body[k - 1].call_kind == "external":
                across_calls |= live_here - {body[k - 1].defines}
        assert live.live_out[b] == {v for v in values if _live_at(fn, v, b, len(body))}
    assert live.max_pressure == best
    assert live.live_across_calls == across_calls
    across_back_edges = set()
    for tail, header in live.back_edges:
        phi_defs = {i.defines for i in fn.blocks[header].instructions if i.opcode == "phi"}
        tail_end = sum(i.opcode != "phi" for i in fn.blocks[tail].instructions)
        across_back_edges |= {v for v in values if v not in phi_defs
                              and _live_at(fn, v, tail, tail_end) and _live_at(fn, v, header, 0)}
    assert live.live_across_back_edges == across_back_edges
    assert live.max_interval_overlap >= live.max_pressure
