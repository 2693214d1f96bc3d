"""Real builds: CMake projects made here, built with real clang-19 and lld-19, with
the inliner plugin (every build type, ThinLTO) and the native launcher (CMake's LTO check), and
the build summary that says what was served."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool, without_mlgo_settings

from mlgo.serving import launcher, plugin
from mlgo.serving.summary import format_summary, read_summary
from mlgo_base.errors import MlgoError

BIN = Path(sys.executable).parent
MLGO = str(BIN / "mlgo")

# Several modules calling small functions across files: link-time inlining has work to do, and
# lld's ThinLTO backends run several modules at once (the plugin once crashed there).
_UTIL = """
static int sq(int x) {{ return x * x; }}
int util{i}(int y) {{ int s = 0; for (int i = 0; i < y; i++) s += sq(i) ^ (s >> {i}); return s; }}
int tiny{i}(int y) {{ return y * {i} + 1; }}
"""
_MAIN = """
#include <stdio.h>
{decls}
static int twice(int x) {{ return 2 * x; }}
int main(int argc, char **argv) {{
  (void)argv;
  long s = 0;
{calls}
  printf("%ld\\n", s);
  return 0;
}}
"""
N_UTIL = 6


def _make_project(d: Path) -> Path:
    d.mkdir(parents=True)
    for i in range(N_UTIL):
        (d / f"util{i}.c").write_text(_UTIL.format(i=i + 1))
    decls = "\n".join(f"int util{i}(int); int tiny{i}(int);" for i in range(1, N_UTIL + 1))
    calls = "\n".join(f"  s += twice(util{i}(argc + 20)) + tiny{i}(argc);"
                      for i in range(1, N_UTIL + 1))
    (d / "main.c").write_text(_MAIN.format(decls=decls, calls=calls))
    utils = " ".join(f"util{i}.c" for i in range(N_UTIL))
    (d / "CMakeLists.txt").write_text(f"""cmake_minimum_required(VERSION 3.16)
project(mlgotest C)
include(CheckIPOSupported)
check_ipo_supported(RESULT ipo OUTPUT why)
message(STATUS "mlgo-test IPO supported: ${{ipo}} ${{why}}")
add_library(util STATIC {utils})
add_executable(prog main.c)
target_link_libraries(prog util)
""")
    return d


def _configure_and_build(src: Path, build: Path, *args: str, cc: str | None = "clang",
                         summary: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in without_mlgo_settings().items() if k != "CC"}
    env.update(MLGO_TMPDIR=str(build.parent))
    if cc:
        env["CC"] = llvm_tool("clang") if cc == "clang" else cc
    configure = subprocess.run(["cmake", "-S", str(src), "-B", str(build),
                                "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *args],
                               capture_output=True, text=True, env=env, timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    if summary is not None:
        env["MLGO_DECISION_SUMMARY"] = str(summary)
    built = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True,
                           text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    run = subprocess.run([str(build / "prog")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    built.stdout = configure.stdout + built.stdout
    return built


def _summary_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cost_threshold() -> Path:
    return plugin.plugin_for("cost-threshold")


def test_plugin_warns_once_when_not_compiling_for_size(tmp_path: Path,
                                                      cost_threshold: Path) -> None:
    src = tmp_path / "a.c"
    src.write_text(_UTIL.format(i=1) + _UTIL.format(i=2).replace("sq", "cube"))
    for level, warned in (("-Oz", False), ("-Os", False), ("-O3", True), ("-Oz -O2", True)):
        proc = subprocess.run([llvm_tool("clang"), *level.split(), f"-fpass-plugin={cost_threshold}",
                               "-c", str(src), "-o", str(tmp_path / "a.o")],
                              capture_output=True, text=True, check=True, timeout=120)
        lines = [x for x in proc.stderr.splitlines() if "not compiled for size" in x]
        assert len(lines) == (1 if warned else 0), (level, proc.stderr)


def test_cmake_release_with_the_documented_line_compiles_at_oz(tmp_path: Path,
                                                               cost_threshold: Path) -> None:
    """README's line: `mlgo cmake-flags POLICY > mlgo.cmake; cmake -C mlgo.cmake
    -DCMAKE_BUILD_TYPE=Release`. Release's -O3 would come after CMAKE_C_FLAGS; with the file,
    every compile is at -Oz and the plugin serves it (the summary counts the decisions)."""
    src = _make_project(tmp_path / "src")
    cache = tmp_path / "mlgo.cmake"
    cache.write_text(subprocess.run([MLGO, "cmake-flags", "cost-threshold"], check=True,
                                    capture_output=True, text=True, timeout=300).stdout)
    summary = tmp_path / "decisions.tsv"
    built = _configure_and_build(src, tmp_path / "build", "-C", str(cache),
                                 "-DCMAKE_BUILD_TYPE=Release", cc=None, summary=summary)
    assert "not compiled for size" not in built.stderr
    commands = json.loads((tmp_path / "build" / "compile_commands.json").read_text())
    assert len(commands) == N_UTIL + 1
    for c in commands:
        words = c["command"].split()
        assert [w for w in words if w.startswith("-O")][-1] == "-Oz", c["command"]
        assert f"-fpass-plugin={cost_threshold}" in words
    lines = _summary_lines(summary)
    assert {tuple(x[:2]) for x in lines} == {("inlining", "cost-threshold")}
    assert len(lines) == N_UTIL + 1 and all(x[5] == "-" for x in lines)
    assert sum(int(x[3]) for x in lines) > 0
    table = subprocess.run([MLGO, "summary", str(summary)], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert table.splitlines()[1].split()[:4] == ["inlining", "cost-threshold", "compile",
                                                 str(N_UTIL + 1)]

    # The line the README used to give compiles Release at -O3: the plugin says so.
    naive = tmp_path / "naive.tsv"
    built = _configure_and_build(src, tmp_path / "naive",
                                 f"-DCMAKE_C_FLAGS=-Oz -fpass-plugin={cost_threshold}",
                                 "-DCMAKE_BUILD_TYPE=Release", summary=naive)
    warnings = [x for x in built.stderr.splitlines() if "not compiled for size" in x]
    assert len(warnings) == N_UTIL + 1  # one per compile
    assert all(x[5] == "not-size" for x in _summary_lines(naive))
    assert "a later -O2/-O3 overrode -Oz" in format_summary(read_summary(naive))


def test_thinlto_cmake_build_serves_the_policy_at_the_lld_link(tmp_path: Path) -> None:
    """CMAKE_INTERPROCEDURAL_OPTIMIZATION=ON (ThinLTO with clang): with the cmake-flags file,
    lld loads the plugin and the link's inlining is the policy's (`never` here, so the program
    differs from one whose link uses LLVM's inliner); without lld, each compile warns."""
    never = plugin.plugin_for("never")
    src = _make_project(tmp_path / "src")
    cache = tmp_path / "mlgo.cmake"
    cache.write_text(subprocess.run([MLGO, "cmake-flags", "never"], check=True,
                                    capture_output=True, text=True, timeout=300).stdout)
    summary = tmp_path / "lto.tsv"
    built = _configure_and_build(src, tmp_path / "lto", "-C", str(cache),
                                 "-DCMAKE_BUILD_TYPE=Release",
                                 "-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=ON", summary=summary)
    assert "mlgo-test IPO supported: YES" in built.stdout
    lines = _summary_lines(summary)
    link = [x for x in lines if x[5] == "lto-postlink"]
    compile_steps = [x for x in lines if x[5] == "lto-prelink"]
    assert len(compile_steps) == N_UTIL + 1
    assert len(link) == N_UTIL + 1  # one per ThinLTO backend module
    assert sum(int(x[3]) for x in link) > 0 and sum(int(x[4]) for x in link) == 0
    lto_warnings = [x for x in built.stderr.splitlines() if "-flto: the policy serves" in x]
    assert len(lto_warnings) == N_UTIL + 1
    assert f"-Wl,--load-pass-plugin={never}" in lto_warnings[0]

    # The same build whose link does not load the plugin: LLVM's inliner at the link.
    plain_link = tmp_path / "plain-link"
    _configure_and_build(src, plain_link, "-C", str(cache), "-DCMAKE_BUILD_TYPE=Release",
                         "-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=ON",
                         "-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld")
    assert (tmp_path / "lto" / "prog").read_bytes() != (plain_link / "prog").read_bytes()


def test_launcher_passes_cmakes_lto_check_and_says_lto_is_not_served(tmp_path: Path) -> None:
    """CMake finds llvm-ar beside the launcher (CMAKE_C_COMPILER_AR), so IPO really happens;
    each -flto compile and the link warn that the regalloc policy is not applied there, and the
    summary records it."""
    env = without_mlgo_settings()
    native = subprocess.run([str(BIN / "mlgo-clang"), "--print-launcher"], capture_output=True,
                            text=True, check=True, timeout=300, env=env).stdout.strip()
    assert native == launcher.launcher_for("clang")
    src = _make_project(tmp_path / "src")
    summary = tmp_path / "decisions.tsv"
    built = _configure_and_build(src, tmp_path / "b", "-DCMAKE_BUILD_TYPE=Release",
                                 "-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=ON", cc=native,
                                 summary=summary)
    assert "mlgo-test IPO supported: YES" in built.stdout
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    assert f"CMAKE_C_COMPILER_AR:FILEPATH={Path(native).parent}/mlgo-llvm-ar" in cache
    objects = [o for d in ("prog.dir", "util.dir")
               for o in (tmp_path / "b" / "CMakeFiles" / d).glob("*.c.o")]
    assert len(objects) == N_UTIL + 1
    assert all(o.read_bytes()[:4] == b"BC\xc0\xde" for o in objects)  # LLVM bitcode: LTO
    compile_warnings = [x for x in built.stderr.splitlines()
                        if "-flto=thin: this compile makes bitcode" in x]
    link_warnings = [x for x in built.stderr.splitlines() if "-flto=thin link:" in x]
    assert len(compile_warnings) == N_UTIL + 1 and len(link_warnings) == 1
    notes = sorted(x[5] for x in _summary_lines(summary))
    assert notes == ["lto-link-not-served"] + ["lto-not-served"] * (N_UTIL + 1)
    assert "register allocation" in format_summary(read_summary(summary))

    # Without LTO the launcher serves every compile: the summary counts them.
    served = tmp_path / "served.tsv"
    _configure_and_build(src, tmp_path / "plain", "-DCMAKE_BUILD_TYPE=Release", cc=native,
                         summary=served)
    lines = _summary_lines(served)
    assert [(x[0], x[1], x[5]) for x in lines] == [("regalloc", "default-rule", "-")] * (N_UTIL + 1)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_launcher_warning_is_one_write(tmp_path: Path) -> None:
    """A parallel build's compiles share make's stderr pipe: a line written piecewise gets
    spliced with another compile's (seen in a -j2 LTO build). Each diagnostic is one write."""
    env = without_mlgo_settings()
    native = launcher.launcher_for("clang")
    (tmp_path / "x.c").write_text("int f(int x) { return x + 1; }\n")
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-s", "4096", "-e", "trace=write", "-o", str(trace),
                    native, "-O2", "-flto=thin", "-c", "x.c", "-o", "x.o"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    writes = [x for x in trace.read_text().splitlines() if "write(2," in x]
    ours = [x for x in writes if "mlgo-clang" in x]
    assert len(ours) == 1, writes
    assert '"mlgo-clang: warning: -flto=thin: this compile makes bitcode' in ours[0]
    assert ours[0].split('"')[-2].endswith("\\n")  # the line's newline in the same write


def test_summary_refuses_a_malformed_line(tmp_path: Path) -> None:
    f = tmp_path / "s.tsv"
    f.write_text("inlining\tp\tm.c\t3\t1\t-\nregalloc\tproxy\t-\tx\t-\t-\n")
    with pytest.raises(MlgoError, match=r"s.tsv:2: not a decision summary line"):
        read_summary(f)
    proc = subprocess.run([MLGO, "summary", str(f)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["python", "native"])
def test_wrapper_lto_link_loads_the_inline_policy_with_lld(tmp_path: Path, kind: str) -> None:
    """MLGO_INLINE_POLICY with -flto: the compile steps keep the plugin (they used to bypass it
    silently), an lld link loads it too, another linker gets a warning."""
    plugin.plugin_for("never")
    env = without_mlgo_settings()
    env.update(MLGO_INLINE_POLICY="never", MLGO_TMPDIR=str(tmp_path))
    cc = str(BIN / "mlgo-clang")
    if kind == "native":
        cc = subprocess.run([cc, "--print-launcher"], capture_output=True, text=True,
                            check=True, timeout=300, env=env).stdout.strip()
    src = _make_project(tmp_path / "src")
    summary = tmp_path / "s.tsv"
    env["MLGO_DECISION_SUMMARY"] = str(summary)
    objects = []
    for c in sorted(src.glob("*.c")):
        objects.append(str(tmp_path / (c.stem + ".o")))
        subprocess.run([cc, "-Oz", "-flto=thin", "-c", str(c), "-o", objects[-1]], check=True,
                       env=env, capture_output=True, timeout=120)
    linked = subprocess.run([cc, "-Oz", "-flto=thin", "-fuse-ld=lld", *objects, "-o",
                             str(tmp_path / "prog")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert linked.returncode == 0, linked.stderr
    assert subprocess.run([str(tmp_path / "prog")], capture_output=True, timeout=30).returncode == 0
    notes = [x[5] for x in _summary_lines(summary) if x[0] == "inlining"]
    assert notes.count("lto-prelink") == N_UTIL + 1
    assert notes.count("lto-postlink") == N_UTIL + 1
    other = subprocess.run([cc, "-Oz", "-flto=thin", *objects, "-o", str(tmp_path / "prog2")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert "without -fuse-ld=lld: the inline policy 'never' is not applied" in other.stderr
