"""Serving on clang-22 (MLGO_LLVM_VERSION=22): the inliner plugin built against llvm-22-dev
loads into clang-22 and decides exactly as interactive mode does with the same rule, and into
ld.lld-22 at a ThinLTO link, and serves `--env plugin`; mlgo-clang serves its regalloc policy
to clang-22. The same checks
on LLVM 19 live in tests/test_plugin.py, tests/test_builds.py and tests/test_wrapper.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import SOURCES, generated_source

from corpus_tools import extract
from corpus_tools.corpus import Corpus
from mlgo import env as mlgo_env
from mlgo.compiler.interactive import InteractiveCompile
from mlgo.compiler.measure import text_size
from mlgo.problems import get_problem
from mlgo.problems.inlining.problem import LLVM_DEFAULT, llvm_default
from mlgo.serving import launcher, plugin
from mlgo_base import toolchain

pytestmark = pytest.mark.skipif(
    not toolchain.is_installed(22),
    reason="clang-22 is not installed (apt-get install clang-22 llvm-22 llvm-22-dev lld-22)")

MODULES = ("calls.c", "strings.c", "pressure.c")


@pytest.fixture(autouse=True)
def llvm22(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, "22")
    for name in ("MLGO_INLINE_POLICY", "MLGO_REGALLOC_POLICY", "MLGO_FALLBACK",
                 "MLGO_PLUGIN_CHANNEL", "MLGO_PLUGIN_DECISION_LOG", "MLGO_DECISION_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def corpus22(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    src = tmp_path_factory.mktemp("src") / "small"
    src.mkdir()
    for name in MODULES:
        (src / name).write_text(SOURCES[name])
    # Many values live across a call: LLVM 22's allocator evicts there (not in pressure.c).
    (src / "evicting.c").write_text(generated_source("regalloc", 1))
    out = tmp_path_factory.mktemp("llvm22") / "corpus"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(toolchain.VERSION_VARIABLE, "22")
        summary = extract.extract_sources(src, out, project="small", opt_level="-Oz",
                                          progress=False)
    assert not summary.failed, summary.failed
    return Corpus.load(out)


@pytest.fixture(scope="module")
def cost_threshold22() -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(toolchain.VERSION_VARIABLE, "22")
        return plugin.plugin_for("cost-threshold")


def _plugin_compile(module, so: Path, work: Path) -> tuple[Path, list[int]]:
    """A plain clang-22 -Oz compile with the plugin: the object and the logged decisions."""
    log, out = work / "plugin-decisions.txt", work / "plugin.o"
    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={so}"])
    proc = subprocess.run([toolchain.clang().path, *args, "-o", str(out)], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log)))
    assert proc.returncode == 0, proc.stderr
    decisions = [int(line.split("->")[1]) for line in log.read_text().splitlines()] \
        if log.exists() else []
    return out, decisions


def test_plugin_on_22_decides_as_interactive_cost_threshold(corpus22: Corpus,
                                                            cost_threshold22: Path,
                                                            tmp_path: Path) -> None:
    assert toolchain.clang().path.endswith("clang-22")
    problem = get_problem("inlining")
    heuristic = problem.heuristic("cost-threshold")
    total = 0
    for module in corpus22.modules:
        work = tmp_path / module.name.replace("/", "_")
        work.mkdir()
        obj, decisions = _plugin_compile(module, cost_threshold22, work)
        with mlgo_env.make(problem, module, corpus=corpus22) as e:
            result = mlgo_env.run_episode(e, heuristic)
        assert text_size(obj) == result.measurement.total, module.name
        assert decisions == [int(a) for a in result.actions], module.name
        total += len(decisions)
    assert total >= 3  # calls.c alone has several call sites


@pytest.mark.parametrize("policy", ["cost-threshold", LLVM_DEFAULT])
def test_plugin_env_on_22_decides_as_interactive_mode(corpus22: Corpus, policy: str) -> None:
    """`--env plugin` on clang-22: the same decisions and .text as LLVM's interactive mode, with
    llvm-default reading LLVM's decision from the plugin's own slot."""
    total = 0
    for module in corpus22.modules:
        results = {}
        for environment in ("interactive", "plugin"):
            problem = get_problem("inlining").for_policy(policy)
            rule = llvm_default if policy == LLVM_DEFAULT else problem.heuristic(policy)
            with mlgo_env.make(problem, module, corpus=corpus22, environment=environment) as e:
                r = mlgo_env.run_episode(e, rule)
            results[environment] = (r.measurement.total, [int(a) for a in r.actions])
        assert results["plugin"] == results["interactive"], module.name
        total += len(results["plugin"][1])
    assert total >= 3


def test_plugins_for_19_and_22_are_kept_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache keys name the LLVM version: a plugin built for 19 is never found for 22."""
    keys = {}
    for major in (19, 22):
        monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(major))
        keys[major] = plugin._llvm_label()
    assert keys[19] != keys[22] and keys[22].startswith("llvm-22\0")


# Calls across modules, which only the link's inliner (after ThinLTO imports) can inline.
CROSS_MODULE = {
    "api.c": "int scale(int x);\nint offset(int x);\n"
             "int api(int y) { return scale(y) + offset(y) + scale(y + 1); }\n",
    "util.c": "int scale(int x) { return 3 * x + 1; }\nint offset(int x) { return x - 7; }\n",
}


def test_thinlto_link_with_lld22_serves_the_policy(tmp_path: Path) -> None:
    """ld.lld-22 --load-pass-plugin: the ThinLTO backends' inlining is the policy's (`never`
    here, so the link differs from one with LLVM's own inliner), each module noted as
    lto-postlink in the decision summary."""
    never = plugin.plugin_for("never")
    clang = toolchain.clang().path
    objects = []
    for name, text in CROSS_MODULE.items():
        (tmp_path / name).write_text(text)
        objects.append(str(tmp_path / (name + ".o")))
        subprocess.run([clang, "-Oz", "-fPIC", "-flto=thin", "-c", str(tmp_path / name), "-o",
                        objects[-1]], check=True, capture_output=True, timeout=120)
    lld = toolchain.companion_tool("ld.lld")
    assert lld.endswith("ld.lld-22")
    summary = tmp_path / "summary.tsv"

    def link(out: str, *extra: str) -> Path:
        proc = subprocess.run([lld, "-shared", *objects, "-o", str(tmp_path / out), *extra],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, MLGO_DECISION_SUMMARY=str(summary)))
        assert proc.returncode == 0, proc.stderr
        return tmp_path / out

    served = link("served.so", f"--load-pass-plugin={never}")
    lines = [line.split("\t") for line in summary.read_text().splitlines()]
    assert [x[5] for x in lines] == ["lto-postlink"] * len(objects)
    assert sum(int(x[3]) for x in lines) > 0 and sum(int(x[4]) for x in lines) == 0
    plain = link("plain.so")
    assert served.read_bytes() != plain.read_bytes()


def _interactive_regalloc(argv: list[str], work: Path) -> list[int]:
    base = work / "channel"
    argv = [argv[0], "-mllvm", "-regalloc-enable-advisor=release",
            "-mllvm", f"-regalloc-evict-interactive-channel-base={base}", *argv[1:]]
    heuristic = get_problem("regalloc").heuristic(launcher.DEFAULT_REGALLOC_POLICY)
    actions = []
    with InteractiveCompile(argv, "ref", work, channel_base=base, timeout=120) as c:
        while (obs := c.next_observation()) is not None:
            actions.append(heuristic({k: np.asarray(v) for k, v in obs.features.items()}))
            c.answer(actions[-1])
        c.finish()
    return actions


def test_mlgo_clang_on_22_serves_default_rule(corpus22: Corpus, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The native program built for clang-22 serves default-rule: the same decisions and
    object as serving it from Python over LLVM 22's interactive channel."""
    monkeypatch.setenv("MLGO_TMPDIR", str(tmp_path))
    program = launcher.launcher_for("clang")
    total = 0
    for module in corpus22.modules:
        work = tmp_path / module.name.replace("/", "_")
        (work / "ref").mkdir(parents=True)
        args = module.compile_args()
        log = work / "host-decisions.txt"
        proc = subprocess.run([program, *args, "-o", str(work / "wrapped.o")],
                              env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        decisions = [int(line.split("\t")[2]) for line in log.read_text().splitlines()] \
            if log.exists() else []
        ref = _interactive_regalloc(
            [toolchain.clang().path, *args, "-o", str(work / "ref" / "out.o")], work / "ref")
        assert decisions == ref, module.name
        assert (work / "wrapped.o").read_bytes() == (work / "ref" / "out.o").read_bytes()
        total += len(decisions)
    assert total > 0  # evicting.c makes the allocator evict


def test_cmake_flags_on_22_name_clang22_and_its_plugin(capsys: pytest.CaptureFixture) -> None:
    from mlgo.cli.main import main as mlgo_main

    assert mlgo_main(["cmake-flags", "never"]) == 0
    text = capsys.readouterr().out
    never = plugin.plugin_for("never")
    assert f'set(CMAKE_C_COMPILER "{toolchain.locate("clang")}"' in text
    assert toolchain.locate("clang").endswith("clang-22")
    assert f"-fpass-plugin={never}" in text and f"-Wl,--load-pass-plugin={never}" in text
