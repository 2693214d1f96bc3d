"""The measured selection of `mlgo tune --problem regalloc` (mlgo/tune/regalloc_select.py) on
a tiny generated CMake program with two hot modules, built twice with real clang-19 and run
under callgrind: in the second build one module is compiled to execute fewer instructions and
the other more (optimization levels stand in for a policy that helps one and hurts the other,
whatever the reward forecast), and the selection keeps the first and drops the second. Then
the per-source compilers serve a policy only to the listed source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgo.problems.regalloc.profile import write_profile
from mlgo.tune import regalloc_program as rp
from mlgo.tune import regalloc_select as rsel
from mlgo.tune.regalloc_policy import Basis

pytestmark = pytest.mark.slow

LOOP = r"""
#include <stdint.h>
uint64_t NAME(const uint32_t *d, int n) {
  uint64_t a = 1, b = 2, c = 3;
  for (int i = 0; i < n; i++) { a += d[i & 255] ^ b; b ^= a << 3; c += (a >> 5) * b; }
  return a ^ b ^ c;
}
"""
MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
uint64_t helped(const uint32_t *d, int n);
uint64_t hurt(const uint32_t *d, int n);
int main(int argc, char **argv) {
  static uint32_t d[256];
  for (int i = 0; i < 256; i++) d[i] = i * 2654435761u;
  int n = argc > 1 ? atoi(argv[1]) : 1000;
  printf("%llu %llu\n", (unsigned long long)helped(d, n), (unsigned long long)hurt(d, n));
  return 0;
}
"""
# In the "tuned" build, helped.c gets -O2 where the plain build has -O0, hurt.c the reverse.
CMAKE = """cmake_minimum_required(VERSION 3.10)
project(two C)
add_executable(two main.c helped.c hurt.c)
if(VARIANT STREQUAL "tuned")
  set_source_files_properties(helped.c PROPERTIES COMPILE_OPTIONS -O2)
  set_source_files_properties(hurt.c PROPERTIES COMPILE_OPTIONS -O0)
else()
  set_source_files_properties(helped.c PROPERTIES COMPILE_OPTIONS -O0)
  set_source_files_properties(hurt.c PROPERTIES COMPILE_OPTIONS -O2)
endif()
"""


def _program(root: Path) -> Path:
    src = root / "two"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CMAKE)
    (src / "main.c").write_text(MAIN)
    (src / "helped.c").write_text(LOOP.replace("NAME", "helped"))
    (src / "hurt.c").write_text(LOOP.replace("NAME", "hurt"))
    return src


def _build_and_run(src: Path, out: Path, variant: str) -> dict:
    rp.cmake_build(src, out / f"build-{variant}", rp.Build(variant), [f"-DVARIANT={variant}"],
                   out / f"{variant}.log", jobs=2, timeout=300)
    exe = rp.program_in(out / f"build-{variant}", "two")
    run = rp.run_workload('"$PROGRAM" 20000', exe, out / "runs" / variant, variant,
                          timeout=300, callgrind=True)
    functions, _ = rp.function_instructions(exe, run.callgrind)
    return {"exe": exe, "run": run, "functions": functions}


def test_the_selection_keeps_the_module_the_policy_helped_and_drops_the_one_it_hurt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src = _program(tmp_path)
    out = tmp_path / "out"
    plain = _build_and_run(src, out, "plain")
    tuned = _build_and_run(src, out, "tuned")
    assert plain["run"].stdout == tuned["run"].stdout
    objects = rsel.module_objects(out / "build-plain", "two", src)
    assert set(objects) == {"two/main.c", "two/helped.c", "two/hurt.c"}
    profile = rp.module_profile(plain["exe"], plain["run"].callgrind,
                                {m: o for m, (_, o) in objects.items()})
    write_profile(out / "profile.json", profile, "test")
    # The reward forecast the opposite of what happens: the selection must not follow it.
    (out / "eval.json").write_text(json.dumps({"modules": [
        {"module": "two/helped.c", "default": 1000.0, "policy": 1100.0, "relative_change": 0.1},
        {"module": "two/hurt.c", "default": 1000.0, "policy": 900.0, "relative_change": -0.1}]}))
    basis = Basis("plain", out / "build-plain", plain["exe"], out / "runs" / "plain", out)
    hot = {"modules": {"two/helped.c": 0.45, "two/hurt.c": 0.45, "two/main.c": 0.1}}
    sel = rsel.measure_selection(basis, out / "build-tuned", hot, "two", src,
                                 {"functions": plain["functions"]},
                                 {"functions": tuned["functions"]})
    eff = sel["effects"]
    assert eff["two/helped.c"]["measured"] < 0 < eff["two/hurt.c"]["measured"]
    assert eff["two/helped.c"]["functions"] == 1 and eff["two/helped.c"]["forecast"] == 100.0
    assert sel["selected"] == ["two/helped.c"]
    assert sel["sources"] == [str(src / "helped.c")]
    # Exactly additive: the program's own change is the sum of its modules' changes (main.c
    # is compiled alike in both builds).
    total = sum(tuned["functions"].values()) - sum(plain["functions"].values())
    assert total == sum(e["measured"] for e in eff.values())
    assert sel["selected"] == ["two/helped.c"]
    assert sel["kept_measured"] == eff["two/helped.c"]["measured"]
    # Code moved into other blocks: the unoptimized build has blocks the optimized one lacks,
    # which the reward cannot price; main.c is compiled alike: nothing changed, nothing kept.
    assert eff["two/helped.c"]["dropped"] > 0
    assert eff["two/helped.c"]["reshaped"] == sum(
        b.executed for b in profile["two/helped.c"]["helped"].values())
    assert eff["two/main.c"] == {**eff["two/main.c"], "measured": 0, "dropped": 0,
                                 "reshaped": 0}
    assert eff["two/main.c"]["plain"] > 0


def test_per_source_compilers_serve_the_policy_to_the_listed_sources_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "served.log"
    cc, _ = rp.per_source_compilers("default-rule", ["/src/a b.c"], tmp_path / "compilers")
    script = Path(cc).read_text()
    # Each compile runs one of two launchers: listed source -> the policy's, else plain's.
    fake = tmp_path / "fake"
    text = script
    for line in script.splitlines():
        if "exec " in line:
            launcher = line.split("exec ", 1)[1].split(" ", 1)[0].strip("'")
            text = text.replace(launcher, str(fake))
    fake.write_text(f'#!/bin/sh\necho "$MLGO_REGALLOC_POLICY $*" >> {log}\n')
    fake.chmod(0o755)
    Path(cc).write_text(text)
    from mlgo_base import process

    for args in (["-c", "/src/a b.c"], ["-c", "/src/a.c"], ["-c", "/src/a b.cc"]):
        process.run([cc, *args], what="compiler script", timeout=30)
    assert log.read_text().splitlines() == ["default-rule -c /src/a b.c", "default -c /src/a.c",
                                            "default -c /src/a b.cc"]


def test_a_build_with_per_source_compilers_serves_the_policy_in_the_listed_source_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGO_CACHE_DIR", str(tmp_path / "cache"))
    src = _program(tmp_path)
    # Without -DVARIANT, hurt.c is the -O2 compile (the greedy allocator runs, the policy is asked).
    spec = rp.Build("selected", "default-rule", "", (str(src / "hurt.c"),))
    rp.cmake_build(src, tmp_path / "build-selected", spec, [], tmp_path / "logs" / "build.log",
                   jobs=2, timeout=300)
    # mlgo-clang wrote one line per compile it served a regalloc policy in: hurt.c alone
    # (main.c and helped.c went to the program serving clang's own eviction).
    summary = tmp_path / "logs" / "served-selected.tsv"
    served = [line.split("\t")[:2] for line in summary.read_text().splitlines()]
    assert served == [["regalloc", "default-rule"]]
    assert rp.program_in(tmp_path / "build-selected", "two").is_file()
    # A source no compile names as listed is never served: one line, not a plain build.
    spec = rp.Build("selected", "default-rule", "", (str(src / "hurt.c"), "hurt.c"))
    with pytest.raises(rp.MlgoError) as e:
        rp.cmake_build(src, tmp_path / "build-selected", spec, [], tmp_path / "logs" / "b.log",
                       jobs=2, timeout=300)
    assert "served the policy in 1 compile(s), fewer than the 2 source(s)" in str(e.value)
    assert "\n" not in str(e.value)
