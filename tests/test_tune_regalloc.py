"""`mlgo tune --problem regalloc` on a tiny generated CMake program with a hot loop under
register pressure: end to end (plain build, callgrind runs of both workloads, profile, search,
imitation, the tuned and PGO builds measured, a second policy searched and trained on the PGO
build's code (its IR carrying the profile) for the PGO + tuned build, the measured selection
of each policy and the build serving it in the kept modules only, outputs checked, the report,
a resume that redoes nothing, and one cut short after the selection), split-off function parts counted with their function in
the hot spots, and the one-line stops: a workload that fails, one whose output differs between
two runs of one build, a build whose output differs from the plain build's, and settings that
cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgo.cli.main import main
from mlgo.tune import regalloc_program as rp
from mlgo.tune import regalloc_report
from mlgo_base import process, toolchain

pytestmark = pytest.mark.slow

KERNEL = r"""
#include <stdint.h>
/* More live values in the loop than x86-64 has registers: the allocator must evict. */
uint64_t mix(const uint32_t *data, int n, uint64_t seed) {
  uint64_t a = seed, b = seed ^ 0x9e3779b97f4a7c15ull, c = seed * 3, d = seed + 7;
  uint64_t e = a ^ 11, f = b + 13, g = c ^ 17, h = d + 19, i2 = a + b, j = c + d;
  uint64_t k = e ^ f, l = g ^ h, m = i2 * 5, o = j * 9, p = k + l, q = m ^ o;
  for (int r = 0; r < n; r++) {
    uint32_t x = data[r & 1023];
    a += x ^ q; b ^= a << 7; c += b >> 3; d ^= c * 31; e += d ^ x; f ^= e << 5;
    g += f >> 11; h ^= g * 17; i2 += h ^ a; j ^= i2 << 3; k += j >> 5; l ^= k * 13;
    m += l ^ b; o ^= m << 9; p += o >> 7; q ^= p * 7;
    if ((x & 15) == 3) { a ^= q; d += p; g ^= m; }
  }
  return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ i2 ^ j ^ k ^ l ^ m ^ o ^ p ^ q;
}
"""
MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
uint64_t mix(const uint32_t *data, int n, uint64_t seed);
int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: pressure SEED N\n"); return 2; }
  uint64_t seed = strtoull(argv[1], 0, 10);
  int n = atoi(argv[2]);
  static uint32_t data[1024];
  uint32_t s = (uint32_t)seed * 2654435761u + 1;
  for (int i = 0; i < 1024; i++) { s ^= s << 13; s ^= s >> 17; s ^= s << 5; data[i] = s; }
  printf("%llu\n", (unsigned long long)mix(data, n, seed));
  return 0;
}
"""
TRAIN = '"$PROGRAM" 1 3000'
CHECK = '"$PROGRAM" 7 2000'


def make_program(root: Path) -> Path:
    src = root / "pressure"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.10)\n"
                                        "project(pressure C)\n"
                                        "add_executable(pressure main.c kernel.c)\n")
    (src / "kernel.c").write_text(KERNEL)
    (src / "main.c").write_text(MAIN)
    return src


def _argv(src: Path, out: Path, train: str = TRAIN, check: str = CHECK) -> list[str]:
    return ["tune", "--problem", "regalloc", str(src), "-o", str(out), "--program", "pressure",
            "--workload", train, "--check-workload", check, "--module-budget", "4",
            "--time-budget", "10m", "--workers", "2",
            "--gin_bindings", "imitation.ImitationConfig.epochs = 5"]


def _code(obj: Path) -> str:
    """The disassembled code of an object (not its file name)."""
    text = process.run([toolchain.companion_tool("llvm-objdump"), "-d", "--no-show-raw-insn",
                        str(obj)], what="llvm-objdump", timeout=60).stdout
    return text.split("Disassembly of section", 1)[1]


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlgo: error: ") and "\n" not in err, err
    return err


def test_tune_regalloc_end_to_end_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src = make_program(tmp_path)
    out = tmp_path / "out"
    assert main(_argv(src, out)) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "report.json").read_text())
    assert doc["workloads"] == {"train": TRAIN, "check": CHECK}
    assert set(doc["policies"]) == {"plain", "pgo"}
    for basis, base in (("plain", out), ("pgo", out / "pgo-policy")):
        made = doc["policies"][basis]
        hot = list(made["hot_modules"])  # most executed first
        assert hot[0] == "pressure/kernel.c"
        assert set(hot) <= {"pressure/kernel.c", "pressure/main.c"}
        assert made["search"]["modules"] == len(hot) and made["search"]["compiles"] >= 3
        assert made["evaluation"]["default"] > 0 and (base / "eval.json").is_file()
        assert made["policy"] == str(base / "train" / "policy")
        assert (base / "train" / "policy").is_dir() and (base / "profile.json").is_file()
    # The PGO build's policy was searched on the PGO build's code: its modules' IR carries the
    # profile the PGO build read (entry counts, a profile summary); the plain build's does not.
    dis = toolchain.companion_tool("llvm-dis")
    ir = {basis: process.run([dis, "-o", "-", str(base / "corpus" / "pressure" / "kernel.c.bc")],
                             what="llvm-dis", timeout=60).stdout
          for basis, base in (("plain", out), ("pgo", out / "pgo-policy"))}
    assert "function_entry_count" in ir["pgo"] and "ProfileSummary" in ir["pgo"]
    assert "function_entry_count" not in ir["plain"]
    # Compiled as the corpus records, each module is the code its build compiled: the search
    # scored the decisions of the code the build with the policy serves.
    code = {}
    for basis, base in (("plain", out), ("pgo", out / "pgo-policy")):
        module = base / "corpus" / "pressure" / "kernel.c"
        cmd = Path(f"{module}.cmd").read_text().split("\0")
        obj = tmp_path / f"{basis}-kernel.o"
        process.run([toolchain.clang().path, *[a for a in cmd if a], f"{module}.bc", "-o",
                     str(obj)], what="compile", timeout=120)
        built = next((out / f"build-{basis}").rglob("kernel.c.o"))
        code[basis] = _code(obj)
        assert code[basis] == _code(built), basis
    assert code["plain"] != code["pgo"]
    # ... and its block profile is the PGO build's training run, not the plain build's.
    assert json.loads((out / "pgo-policy" / "profile.json").read_text()) != json.loads(
        (out / "profile.json").read_text())
    assert set(doc["instructions"]) == {"plain", "tuned", "selected", "pgo", "pgo-tuned",
                                        "pgo-selected"}
    # The measured selection: each hot module's effect from the training runs, kept where it
    # is negative; the selected build serves the policy to the kept modules' sources only.
    for basis, tuned, base in (("plain", "tuned", "plain"), ("pgo", "pgo-tuned", "pgo")):
        sel = doc["policies"][basis]["selection"]
        assert set(sel["effects"]) == set(doc["policies"][basis]["hot_modules"])
        assert sorted(sel["selected"]) == sorted(m for m, e in sel["effects"].items()
                                                 if e["measured"] < 0)
        e = sel["effects"]["pressure/kernel.c"]
        assert e["plain"] > 0 and e["forecast"] is not None
        # A profiled block gone means the function's blocks changed: dropped is part of it.
        assert 0 <= e["dropped"] <= e["reshaped"]
        selected = "selected" if basis == "plain" else "pgo-selected"
        if not sel["selected"]:
            assert doc["instructions"][selected] == doc["instructions"][base]
            continue
        kernel = {v: _code(next((out / f"build-{v}").rglob("kernel.c.o")))
                  for v in (base, tuned, selected)}
        main_o = {v: _code(next((out / f"build-{v}").rglob("main.c.o")))
                  for v in (base, selected)}
        assert kernel[selected] == kernel[tuned if "pressure/kernel.c" in sel["selected"]
                                          else base]
        if "pressure/main.c" not in sel["selected"]:
            assert main_o[selected] == main_o[base]
    plain = doc["instructions"]["plain"]
    # The check workload runs fewer loop iterations: fewer instructions, measured apart.
    assert plain["train"]["instructions"] > plain["check"]["instructions"] > 0
    for variant, row in doc["instructions"].items():
        for w in ("train", "check"):
            assert row[w]["change"] == pytest.approx(
                row[w]["instructions"] / plain[w]["instructions"] - 1)
            assert 0 < row[w]["own"] < row[w]["instructions"]
            if json.loads((out / "steps" / f"{variant}.json").read_text()).get("same_as"):
                continue  # a selection keeping no module: the build it names, not built again
            # Every build ran its workloads and printed what the plain build printed.
            got = (out / "runs" / f"{variant}-{w}-callgrind" / "stdout").read_text()
            assert got == (out / "runs" / f"plain-{w}-callgrind" / "stdout").read_text()
            assert got.strip().isdigit()
    spots = {r["function"]: r for r in doc["hot_spots"]["train"]}
    assert spots["mix"]["plain"] > spots["main"]["plain"] > 0
    assert (out / "pgo" / "default.profdata").is_file()
    # Each step's time is its own (extracting, compiling and evaluating take seconds).
    assert min(doc["steps_seconds"][s] for s in ("corpus", "eval", "pgo-corpus", "pgo-eval")) > 0.1
    # The tuned builds were compiled by an mlgo-clang serving the tuned policy, not the plain one.
    caches = {v: (out / f"build-{v}" / "CMakeCache.txt").read_text() for v in
              ("plain", "tuned", "pgo", "pgo-tuned")}
    compiler = {v: next(x for x in c.splitlines() if x.startswith("CMAKE_C_COMPILER:"))
                for v, c in caches.items()}
    # plain and PGO alone: no policy; tuned and PGO + tuned: each its own policy.
    assert compiler["plain"] == compiler["pgo"]
    assert len({compiler["plain"], compiler["tuned"], compiler["pgo-tuned"]}) == 3
    assert "-fprofile-instr-use=" in caches["pgo-tuned"]
    use = doc["instructions"]["selected"]["train"]["change"] < 0 and \
        doc["instructions"]["selected"]["check"]["change"] <= 0.001
    assert doc["verdict"] == ("use the selected policy" if use else "keep the plain build")
    md = (out / "report.md").read_text()
    assert TRAIN in md and CHECK in md and "`mix`" in md
    assert "tuned: training workload" in printed

    # A re-run resumes: every step is done already, the report is the same figures.
    assert main(_argv(src, out)) == 0
    again = capsys.readouterr().out
    assert again.count("(done earlier)") == 16
    assert json.loads((out / "report.json").read_text())["instructions"] == doc["instructions"]

    # Cut short after the selection: the resume keeps it and builds the selection again.
    (out / "steps" / "selected.json").unlink()
    assert main(_argv(src, out)) == 0
    again = capsys.readouterr().out
    assert again.count("(done earlier)") == 15
    assert "[7/17] measure the policy's effect per hot module" in again
    assert ("[8/17] build selected" if doc["policies"]["plain"]["selection"]["selected"]
            else "[8/17] no module kept") in again
    assert json.loads((out / "report.json").read_text())["policies"]["plain"]["selection"] == \
        doc["policies"]["plain"]["selection"]


def test_split_off_parts_count_with_their_function_in_the_hot_spots(tmp_path: Path) -> None:
    def run(functions: dict[str, int]) -> dict:
        return {"instructions": 1000, "own": 900, "seconds": 1.0, "functions": functions}

    plain = {"mix": 600, "main": 200, "helper": 100}
    # The PGO build split `mix` (a cold part) and `helper` (two outlined parts).
    pgo = {"mix": 500, "mix.cold": 20, "main": 190, "helper.cold.1": 30, "helper.cold.2": 5,
           "helper": 40, "mixer.part.0": 7}
    measured = {"plain": {w: run(plain) for w in ("train", "check")},
                "tuned": {w: run(plain) for w in ("train", "check")},
                "pgo": {w: run(pgo) for w in ("train", "check")}}
    made = {"plain": {"hot": {"modules": {"p/kernel.c": 0.9}}, "policy": "P",
                      "search": {"modules": 1, "compiles": 3, "change": -0.01,
                                 "stopped_by_budget": False, "unfinished": []},
                      "evaluation": {"change": -0.005}}}

    class Options:
        source, program, workload, check_workload = tmp_path, "p", "a", "b"
        cmake_args: tuple = ()
        time_budget = 60.0

    doc = regalloc_report.write_report(tmp_path, Options(), "p", made, measured, {"plain": 1.0},
                                       1.0)
    spots = {r["function"]: r for r in doc["hot_spots"]["train"]}
    assert set(spots) == {"mix", "main", "helper"}
    assert spots["mix"]["pgo"] == 520 and spots["helper"]["pgo"] == 75
    assert spots["main"]["pgo"] == 190 and spots["mix"]["plain"] == 600
    assert regalloc_report.fold_split_parts(pgo)["mixer"] == 7
    md = (tmp_path / "report.md").read_text()
    assert "| `mix` | 600 | 600 (+0.00%) | 520 (-13.33%) |" in md and "mix.cold" not in md


def test_a_failing_workload_stops_the_tune_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src = make_program(tmp_path)
    err = _one_line_error(capsys, _argv(src, tmp_path / "out", train='"$PROGRAM" 1'))
    assert "the training workload on the plain build failed (exited with status 2)" in err
    assert "usage: pressure SEED N" in err
    assert not (tmp_path / "out" / "corpus").exists()


def test_a_workload_whose_output_changes_between_runs_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src = make_program(tmp_path)
    err = _one_line_error(capsys, _argv(src, tmp_path / "out",
                                        train=TRAIN + "; date +%s%N"))
    assert "differs between two runs of the same build" in err
    assert not (tmp_path / "out" / "corpus").exists()


def test_an_output_that_differs_from_the_plain_builds_is_one_line(tmp_path: Path) -> None:
    plain = rp.Run(0, "12\n34\n", 1.0)
    assert rp.check_output(rp.Run(0, "12\n34\n", 2.0), plain, "w", "cmd") is None
    with pytest.raises(rp.MlgoError) as e:
        rp.check_output(rp.Run(0, "12\n35\n", 1.0), plain, "the check workload on the tuned "
                        "build", '"$PROGRAM" x')
    msg = str(e.value)
    assert "\n" not in msg and "at line 2 ('35' instead of '34')" in msg
    assert msg.startswith("the check workload on the tuned build")
    with pytest.raises(rp.MlgoError, match="at line 3 .'<end of output>' instead of '5'"):
        rp.check_output(rp.Run(0, "12\n34\n", 1.0), rp.Run(0, "12\n34\n5\n", 1.0), "w", "c")


@pytest.mark.parametrize("extra, message", [
    (["--program", ""], "needs --program"),
    (["--check-workload", TRAIN], "is the training workload itself"),
    (["--compile-db", "x.json"], "give its CMake source directory"),
    (["--cmake-arg=-DCMAKE_EXE_LINKER_FLAGS=-static"],
     "mlgo sets CMAKE_EXE_LINKER_FLAGS in its builds itself"),
])
def test_settings_that_cannot_work_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               extra: list[str], message: str) -> None:
    src = make_program(tmp_path)
    argv = _argv(src, tmp_path / "out") + extra
    if "--compile-db" in extra:
        argv.remove(str(src))
    assert message in _one_line_error(capsys, argv)
