"""The two objectives' measurements against independent readings of the same compiler output:
`text_size` against llvm-size-19, and the regalloc remark parser against a YAML loader on a
remarks file clang-19 wrote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from corpus_fixtures import SOURCES, llvm_tool

from mlgo.compiler.measure import SPILL_COST_KEYS, parse_regalloc_remarks, text_size

REMARKS = Path(__file__).parent / "data" / "remarks"

# tests/data/remarks/spills.yaml was written by Debian's clang 19.1.7 from spills.cpp (in the
# same folder), in that folder:
#   clang++-19 -O2 -c spills.cpp -o /dev/null -fsave-optimization-record=yaml \
#     -foptimization-record-file=spills.yaml -foptimization-record-passes=regalloc
# It holds two loop-level remarks (LoopSpillReloadCopies, which repeat their function's spills)
# and three function-level ones, one with a folded reload. The costs per function, added up by
# hand from the function-level remarks (spills + reloads + folded + copies):
EXPECTED_SPILL_COSTS = {
    "mix": 48.5 + 48.0 + 0.5 + 355.5,
    "_Z3usePKli": 7.0,
    "_ZN2ns5churnIlEET_PKS1_i": 184.5,
}


def _llvm_remarks(path: Path) -> list[dict]:
    """The remarks as YAML documents; LLVM tags each with its kind (!Missed, !Passed, ...)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, _suffix, node: loader.construct_mapping(
        node, deep=True))
    return list(yaml.load_all(path.read_text(), Loader=Loader))


def test_remark_parser_sums_each_functions_costs_once() -> None:
    costs = parse_regalloc_remarks(REMARKS / "spills.yaml")
    assert costs.per_function == pytest.approx(EXPECTED_SPILL_COSTS)
    assert costs.total == pytest.approx(644.0)


def test_remark_parser_agrees_with_a_yaml_loader() -> None:
    by_yaml: dict[str, float] = {}
    for r in _llvm_remarks(REMARKS / "spills.yaml"):
        if r["Pass"] == "regalloc" and r["Name"] == "SpillReloadCopies":
            cost = sum(float(v) for arg in r["Args"] for k, v in arg.items() if k in SPILL_COST_KEYS)
            by_yaml[r["Function"]] = by_yaml.get(r["Function"], 0.0) + cost
    assert by_yaml == pytest.approx(EXPECTED_SPILL_COSTS)
    assert parse_regalloc_remarks(REMARKS / "spills.yaml").per_function == pytest.approx(by_yaml)


def _llvm_size_text(obj: Path) -> int:
    """Sum of the .text and .text.* sections in `llvm-size-19 -A` (System V format)."""
    out = subprocess.run([llvm_tool("llvm-size"), "-A", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and (parts[0] == ".text" or parts[0].startswith(".text.")):
            total += int(parts[1])
    return total


@pytest.mark.parametrize("source, flags", [
    ("calls.c", ["-Oz"]),
    ("tree.c", ["-O2", "-ffunction-sections"]),  # one .text.<function> section each
    ("spills.cpp", ["-O2"]),  # a template instance in its own COMDAT .text.<name> section
    ("leaf.c", ["-O0", "-g"]),
])
def test_text_size_matches_llvm_size(tmp_path: Path, source: str, flags: list[str]) -> None:
    src = tmp_path / source
    if source in SOURCES:
        src.write_text(SOURCES[source])
    else:
        src.write_bytes((REMARKS / source).read_bytes())
    obj = tmp_path / "out.o"
    compiler = llvm_tool("clang++") if source.endswith(".cpp") else llvm_tool("clang")
    subprocess.run([compiler, *flags, "-c", str(src), "-o", str(obj)], check=True)
    expected = _llvm_size_text(obj)
    assert expected > 0
    assert text_size(obj) == expected
