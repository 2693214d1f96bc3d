"""The profile-based regalloc rewards (mlgo/problems/regalloc/profile.py): callgrind's format as
read, the trace cost model's arithmetic, and the whole path on a real program run under
callgrind."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool

from mlgo.problems.regalloc.profile import (
    BlockProfile,
    block_instructions,
    block_priced_cost,
    block_profile,
    defined_functions,
    function_instructions,
    instruction_addresses,
    load_profile,
    read_block_map,
    read_callgrind,
    trace_cost,
    unpriced,
    weighted_cost,
    write_profile,
)
from mlgo_base.errors import MlgoError

# A callgrind file in the format valgrind 3.19 writes with --dump-instr=yes: compressed names,
# relative addresses, a call from the program, a call into it from a library (cob=), and a
# recursion level (work'2).
CALLGRIND = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
cmd: ./prog -e x=1
positions: instr line
events: Ir

ob=(1) /tmp/x/prog
fl=(1) ???
fn=(1) main
0x1000 0 1
+2 0 1
cfn=(2) work
calls=3 0x1100 0
* 0 30
+5 0 1

ob=(2) /usr/lib/libc.so.6
fn=(3) puts
0x500 0 7
cob=(1)
cfn=(2)
calls=2 0x1100 0
* 0 20

ob=(1)
fn=(4) work'2
0x1100 0 5
+3 0 5
-3 0 2

totals: 52
"""


def test_callgrind_counts_only_the_programs_own_instructions(tmp_path: Path) -> None:
    f = tmp_path / "callgrind.out"
    f.write_text(CALLGRIND)
    prof = read_callgrind(f, "/elsewhere/prog")
    # The call lines' inclusive costs (30, 20) and libc's instruction are not the program's.
    assert prof.instructions == {0x1000: 1, 0x1002: 1, 0x1007: 1, 0x1100: 7, 0x1103: 5}
    # work is called 3 times by main and twice from libc into the program.
    assert prof.calls == {"work": 5}


def test_callgrind_without_instruction_positions_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "callgrind.out"
    f.write_text(CALLGRIND.replace("positions: instr line", "positions: line"))
    with pytest.raises(MlgoError, match="recorded without --dump-instr=yes"):
        read_callgrind(f, "prog")
    f.write_text(CALLGRIND.replace("+3 0 5", "+x 0 5"))
    with pytest.raises(MlgoError, match=r"callgrind.out:\d+: not a cost line"):
        read_callgrind(f, "prog")
    f.write_text(CALLGRIND)
    with pytest.raises(MlgoError, match="no instruction of other in the profile"):
        read_callgrind(tmp_path / "callgrind.out", "other")


# Block 1 ends in a conditional branch and a jmp run only on fall-through: it executed 9
# instructions in 5 entries with 2 instructions. Block 2 never ran; block 3 is empty (its count
# cannot be read). The function executed 39 instructions in the profiled run.
PROFILED = {"f": {0: BlockProfile(10, 30, 3), 1: BlockProfile(5, 9, 2), 2: BlockProfile(0, 0, 6),
                  3: BlockProfile(0, 0, 0)}}


def test_trace_cost_adds_each_changed_instruction_at_its_blocks_count() -> None:
    # The plain build's own blocks cost what it executed.
    assert trace_cost({"f": {0: 3, 1: 2, 2: 6, 3: 0}}, PROFILED) == {"f": 39.0}
    # One reload added to block 0 (10 runs); block 2 did not run, its growth costs nothing.
    assert trace_cost({"f": {0: 4, 1: 2, 2: 7, 3: 0}}, PROFILED) == {"f": 49.0}
    # A kept block's lost copy is a gain: 10 runs of one instruction fewer.
    assert trace_cost({"f": {0: 2, 1: 2, 2: 6, 3: 0}}, PROFILED) == {"f": 29.0}
    # Blocks that never ran (or were empty) may go: nothing ran through them.
    assert trace_cost({"f": {0: 2, 1: 2}}, PROFILED) == {"f": 29.0}


@pytest.mark.parametrize(("blocks", "priced"), [
    ({0: 2, 2: 6, 3: 0}, 20),  # block 1 ran 5 times and is gone: where did its executions go?
    ({0: 2, 1: 2, 2: 6, 3: 0, 4: 3}, 29),  # block 4 is new: the profile has no count for it
    ({0: 2, 1: 2, 2: 6, 3: 1}, 29),  # block 3 was empty, its entry count unknown, now has code
])
def test_a_function_whose_blocks_changed_is_never_a_gain(blocks: dict[int, int], priced: int
                                                         ) -> None:
    # Priced block by block each of these is a gain over the 39 executed; that gain is not
    # known even in sign, and is charged as a loss of its size.
    assert trace_cost({"f": blocks}, PROFILED) == {"f": 39.0 + (39 - priced)}
    assert unpriced(blocks, PROFILED["f"])
    assert not unpriced({0: 2, 1: 2, 2: 6, 3: 0}, PROFILED["f"])


def test_a_changed_function_keeps_its_forecast_loss() -> None:
    # Block 1 duplicated into its predecessor block 0 (2 instructions more there, 10 runs) and
    # dropped: forecast 50, a loss of 11 over the 39 executed, charged as it is.
    assert trace_cost({"f": {0: 5, 2: 6, 3: 0}}, PROFILED) == {"f": 50.0}
    # The same function with its blocks kept and no instruction changed costs what it ran.
    assert trace_cost({"f": {0: 3, 1: 2, 2: 6}}, PROFILED) == {"f": 39.0}


def test_the_profile_lists_every_block_of_a_function_that_ran() -> None:
    # f: blocks 0 [0, 8) ran 4 times, 1 empty at 8, 2 [8, 12) never ran; g never ran.
    blocks = {"f": [(0, 0, 8), (1, 8, 8), (2, 8, 12)], "g": [(0, 12, 16)]}
    addrs = [0, 4, 8, 10, 12]
    counts = {0: 4, 4: 4}
    assert block_profile(blocks, addrs, counts) == {
        "f": {0: BlockProfile(4, 8, 2), 1: BlockProfile(0, 0, 0), 2: BlockProfile(0, 0, 2)}}


def test_weighted_cost_counts_functions_by_their_calls() -> None:
    assert weighted_cost({"hot": 2.5, "cold": 100.0, "unseen": 7.0}, {"hot": 40, "cold": 0}) == 100.0


def test_profile_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "profile.json"
    blocks = {"lua/lvm.c": {"luaV_execute": {0: BlockProfile(3, 12, 4)}}, "lua/lgc.c": {}}
    write_profile(p, blocks, "test")
    assert load_profile(p) == blocks
    p.write_text(json.dumps({"every_block": True, "modules": {"lua/lvm.c": {"f": {"0": [1, 2]}}}}))
    with pytest.raises(MlgoError, match="profile.json: not a regalloc block profile"):
        load_profile(p)
    # A file listing the blocks that ran only cannot tell an added block from a cold one.
    p.write_text(json.dumps({"modules": {"lua/lvm.c": {"f": {"0": [1, 2, 2]}}}}))
    with pytest.raises(MlgoError, match="profile.json: lists only the blocks that ran"):
        load_profile(p)
    with pytest.raises(MlgoError, match="missing.json: no such profile file"):
        load_profile(tmp_path / "missing.json")


PROGRAM = r"""
__attribute__((noinline)) int work(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * x; return s; }
int main(void) { int t = 0; for (int i = 0; i < 50; i++) t ^= work(i); return t == 12345; }
"""


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_real_run_gives_block_counts_and_calls(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text(PROGRAM)
    obj, exe = tmp_path / "p.o", tmp_path / "prog"
    subprocess.run([llvm_tool("clang"), "-O2", "-fbasic-block-address-map", "-c", str(src), "-o",
                    str(obj)], check=True)
    subprocess.run([llvm_tool("clang"), str(obj), "-o", str(exe)], check=True)
    out = tmp_path / "cg.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes",
                    f"--callgrind-out-file={out}", str(exe)], check=True, capture_output=True)
    prof = read_callgrind(out, exe)
    assert prof.calls["work"] == 50
    assert {"work", "main"} <= defined_functions(obj)
    blocks = read_block_map(exe)
    addrs = instruction_addresses(exe)
    measured = function_instructions(blocks, addrs, prof.instructions)
    plain = block_profile(blocks, addrs, prof.instructions)
    ninstr = block_instructions(blocks, addrs)
    # The build against its own profile: every executed instruction of work, no more.
    assert trace_cost(ninstr, plain)["work"] == measured["work"] > 50
    # One more instruction in work's entry block runs once per call.
    entry = min(ninstr["work"])
    bigger = {**ninstr, "work": {**ninstr["work"], entry: ninstr["work"][entry] + 1}}
    assert trace_cost(bigger, plain)["work"] == measured["work"] + 50


# A loop whose latch block tail duplication copies into its three predecessors when allowed
# a larger tail (-tail-dup-size): the blocks change as they do when the registers chosen let
# branch folding and tail duplication rebuild them.
BRANCHY = r"""
__attribute__((noinline)) int work(const int *a, int n) {
  int s = 0;
  for (int i = 0; i < n; i++) {
    int v = a[i];
    if (v & 1) s += v * 3; else if (v & 2) s -= v; else s ^= v;
  }
  return s;
}
int main(void) {
  int a[64]; for (int i = 0; i < 64; i++) a[i] = i * 7;
  int t = 0; for (int k = 0; k < 40; k++) t += work(a, 64 - k);
  return t == 12345;
}
"""


def _profiled_build(tmp_path: Path, name: str, flags: list[str]
                    ) -> tuple[dict[int, BlockProfile], dict[int, int], int]:
    """(work's block profile, its instructions per block, what it executed) of BRANCHY built
    with `flags` and run under callgrind."""
    src, exe, out = tmp_path / "b.c", tmp_path / name, tmp_path / f"{name}.cg"
    src.write_text(BRANCHY)
    subprocess.run([llvm_tool("clang"), "-O2", "-fbasic-block-address-map", *flags, str(src),
                    "-o", str(exe)], check=True)
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes",
                    f"--callgrind-out-file={out}", str(exe)], check=True, capture_output=True)
    prof = read_callgrind(out, exe)
    blocks, addrs = read_block_map(exe), instruction_addresses(exe)
    return (block_profile(blocks, addrs, prof.instructions)["work"],
            block_instructions(blocks, addrs)["work"],
            function_instructions(blocks, addrs, prof.instructions)["work"])


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_real_code_whose_blocks_were_rebuilt_is_never_credited_a_gain(tmp_path: Path) -> None:
    plain_prof, plain_blocks, plain_ran = _profiled_build(tmp_path, "plain", [])
    dup_prof, dup_blocks, dup_ran = _profiled_build(
        tmp_path, "dup", ["-mllvm", "-tail-dup-size=10"])
    # The duplicated build dropped a block that ran in the plain one.
    assert any(b.entries and bid not in dup_blocks for bid, b in plain_prof.items())
    assert unpriced(dup_blocks, plain_prof) and unpriced(plain_blocks, dup_prof)
    # Priced block by block against the duplicated build's profile, the plain code's re-added
    # latch costs nothing: a forecast gain far below what the plain build really executed.
    assert block_priced_cost(plain_blocks, dup_prof) < plain_ran < dup_ran
    # The trace cost charges that change as a loss; either way round no gain is credited.
    assert trace_cost({"work": plain_blocks}, {"work": dup_prof})["work"] > dup_ran
    assert trace_cost({"work": dup_blocks}, {"work": plain_prof})["work"] >= plain_ran
    # Each build against its own profile: what it executed.
    assert trace_cost({"work": plain_blocks}, {"work": plain_prof})["work"] == plain_ran
    assert trace_cost({"work": dup_blocks}, {"work": dup_prof})["work"] == dup_ran


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.parametrize("flags", [[], ["-ffunction-sections"]])
def test_the_problem_measures_a_module_by_its_profiled_run(tmp_path: Path, flags: list[str]) -> None:
    """RegallocEviction(profile=...) compiles a corpus module and costs it at the block counts
    of a run of the program built from it: the default compile costs what that run executed.
    With a code section per function (as C++ inline functions have), each starting at 0 in the
    object, every function is still counted in its own section."""
    from corpus_tools.corpus import Module
    from mlgo.compiler.cache import BaselineCache
    from mlgo.problems.regalloc.problem import RegallocEviction

    root = tmp_path / "corpus"
    (root / "p").mkdir(parents=True)
    src = tmp_path / "p.c"
    src.write_text(PROGRAM)
    bc = root / "p" / "p.c.bc"
    subprocess.run([llvm_tool("clang"), "-O2", "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                    str(src), "-o", str(bc)], check=True)
    (root / "p" / "p.c.cmd").write_bytes(b"\0".join(x.encode() for x in ["-c", "-O2", *flags]))
    obj, exe = tmp_path / "p.o", tmp_path / "prog"
    subprocess.run([llvm_tool("clang"), "-c", "-O2", *flags, "-fbasic-block-address-map", "-x", "ir",
                    str(bc), "-o", str(obj)], check=True)
    subprocess.run([llvm_tool("clang"), str(obj), "-o", str(exe)], check=True)
    out = tmp_path / "cg.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes",
                    f"--callgrind-out-file={out}", str(exe)], check=True, capture_output=True)
    prof = read_callgrind(out, exe)
    blocks, addrs = read_block_map(exe), instruction_addresses(exe)
    measured = function_instructions(blocks, addrs, prof.instructions)
    plain = block_profile(blocks, addrs, prof.instructions)
    profile = tmp_path / "profile.json"
    write_profile(profile, {"p/p.c": {fn: plain[fn] for fn in ("work", "main")}}, "test")

    problem = RegallocEviction(profile=str(profile))
    m = problem.baseline(Module("p/p.c", root), BaselineCache(tmp_path / "cache"))
    assert m.per_function["work"] == measured["work"] > 50
    assert m.total == sum(m.per_function.values())
    # The remark objective's cached baseline is not this one's.
    assert RegallocEviction().baseline(Module("p/p.c", root), BaselineCache(tmp_path / "cache")
                                       ).total != m.total
    other = root / "q"
    other.mkdir()
    shutil.copy(bc, other / "p.c.bc")
    shutil.copy(root / "p" / "p.c.cmd", other / "p.c.cmd")
    with pytest.raises(MlgoError, match="q/p.c: not in the profile"):
        problem.compile_default(Module("q/p.c", root))
