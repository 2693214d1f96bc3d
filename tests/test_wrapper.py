"""mlgo-clang: the one native per-compile program (and the Python entry point that executes
it), against the real clang of the chosen LLVM version (serving default-rule on each installed
version). How it fails when its compiler misbehaves or it is interrupted:
tests/test_wrapper_faults.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import (
    SOURCES,
    WRAPPERS,
    assert_channels_clean,
    generated_source,
    llvm_tool,
    make_small_corpus,
    on_each_llvm,
    without_mlgo_settings,
    wrapper_command,
)

from corpus_tools.corpus import Corpus
from mlgo import env as mlgo_env
from mlgo.compiler.interactive import InteractiveCompile
from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.policies import c_source
from mlgo.problems import get_problem
from mlgo.protocol import for_llvm
from mlgo.serving import launcher
from mlgo_base.toolchain import llvm_major, locate

BIN = Path(sys.executable).parent
# Many values live across a call: the greedy allocator evicts here on every LLVM version
# (pressure.c's functions need no eviction on LLVM 22).
EVICTING = generated_source("regalloc", 1)


def _write_sources(d: Path) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in SOURCES.items():
        (d / name).write_text(text)
        paths.append(d / name)
    return paths


def _program(tmp_path: Path, features, label: str = "renamed") -> str:
    """A program serving the eviction proxy generated for `features`."""
    return launcher.build_launcher(launcher.LauncherConfig(
        "clang", locate("clang", override=False), label,
        regalloc_source=c_source.heuristic_c_source("regalloc", "proxy", features),
        regalloc_label=label))


# -- classification: one matrix, run against the one implementation -----------------------------

CLASSIFICATION = [  # (arguments, whether it is a compile job the program serves)
    (["-O2", "-c", "a.c", "-o", "a.o"], True),
    (["-c", "-x", "ir", "m.bc", "-O2"], True),
    (["-c", "-I", "include.c", "a.cpp"], True),  # -I's value is not a source
    (["-c", "-xc", "noext"], True),
    (["-c", "-x", "c++", "header.h"], True),
    (["-c", "x.C", "-MD", "-MF", "x.d"], True),
    (["-c", "lib.cppm"], True),
    (["-c", "-"], True),
    (["-c", "-o", "-E", "a.c"], True),  # -E is -o's value
    (["-c", "a.c", "-mllvm", "b.c"], True),
    (["-c", "-Xclang", "-emit-llvm", "a.c"], True),
    (["@job.rsp"], True),
    (["@nested.rsp"], True),
    (["-c", "-x", "none", "..c"], False),
    (["-c", "dir.d/.hidden"], False),
    (["-E", "a.c"], False),
    (["-c", "-E", "a.c"], False),
    (["--version"], False),
    (["a.o", "b.o", "-o", "prog"], False),
    (["-c", "a.c", "b.c"], False),
    (["-c", "-x", "assembler", "a.s"], False),
    (["-c", "-xassembler-with-cpp", "a.S"], False),
    (["-c", "a.S"], False),
    (["-c", "a.c", "-M"], False),
    (["-c", "a.c", "-###"], False),
    (["-c", "a.c", "-emit-llvm"], False),
    (["-c", "a.c", "-fsyntax-only"], False),
    (["-c", "a.c", "-save-temps=obj"], False),
    (["-c", "a.c", "b.o"], False),
    (["-c", "@missing.rsp"], False),  # not a file: an argument like any other
    (["@two.rsp"], False),
    (["@hash.rsp"], False),  # no comments in response files: #not-a-comment is an input
]


def test_compile_jobs_are_told_apart(tmp_path: Path, default_program: str) -> None:
    """The program serves exactly the compile jobs: a fake compiler records its arguments,
    which carry the interactive channel flags for a compile job and are the caller's own for
    anything else (the fake never opens the channel, so a served compile just ends)."""
    (tmp_path / "job.rsp").write_text("""-c 'a b.c' "-o" out\\ file.o""")
    (tmp_path / "hash.rsp").write_text("-c a.c #not-a-comment")
    (tmp_path / "two.rsp").write_text('-c "a.c" b.c')
    (tmp_path / "nested.rsp").write_text("-O2 @job.rsp")
    fake = tmp_path / "fake-clang"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    fake.chmod(0o755)
    env = without_mlgo_settings()
    env.update(MLGO_CLANG=str(fake), MLGO_TMPDIR=str(tmp_path))
    served = []
    for args, _ in CLASSIFICATION:
        proc = subprocess.run([default_program, *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=30)
        assert proc.returncode == 0, (args, proc.stderr)
        argv = (tmp_path / "argv").read_text().splitlines()
        channel = "-regalloc-enable-advisor=release" in argv
        assert argv[-len(args):] == args, args  # the caller's arguments, unchanged, last
        served.append(channel)
    assert served == [job for _, job in CLASSIFICATION]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("mlgo-clang-")]


@pytest.mark.parametrize("kind", WRAPPERS)
def test_malformed_response_file_is_an_error_naming_it(tmp_path: Path, channel_tmp: Path,
                                                       kind: str) -> None:
    rsp = tmp_path / "bad.rsp"
    rsp.write_text("-c 'a.c")
    proc = subprocess.run([wrapper_command(kind), f"@{rsp}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"mlgo-clang: error: {rsp}: cannot parse the response "
                                   "file: no closing quotation")


# -- serving: the policy's inputs are bound by name, the header is compared whole ------------

def test_policy_needing_a_feature_the_compiler_lacks_is_refused(tmp_path: Path,
                                                                channel_tmp: Path) -> None:
    features = list(for_llvm(llvm_major()).REGALLOC_FEATURES)
    features[2] = ("nr_urgent_v2", "float", 33)
    features[4] = ("is_hint", "float", 33)
    program = _program(tmp_path, features)
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    cmd = [program, "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")]
    env = dict(os.environ, MLGO_REGALLOC_POLICY="renamed")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and not (tmp_path / "p.o").exists()
    assert "trained on other features than this compiler sends" in proc.stderr
    assert ("the policy needs 'nr_urgent_v2' (float x33), which the compiler does not send"
            in proc.stderr)
    assert "the policy needs 'is_hint' (float x33), the compiler sends int64_t x33" in proc.stderr
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(env, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and "MLGO_FALLBACK=1" in allowed.stderr
    assert_channels_clean(channel_tmp)


def test_policy_inputs_are_bound_by_name(tmp_path: Path, channel_tmp: Path) -> None:
    """A policy declaring its features in another order, or only those it reads, makes the
    same decisions as one declaring the compiler's order."""
    src = tmp_path / "evicting.c"
    src.write_text(EVICTING)
    features = for_llvm(llvm_major()).REGALLOC_FEATURES
    subset = [f for f in features if f[0] in ("use_def_density", "mask")]
    results = []
    for label, program in (("ordered", _program(tmp_path, features, "ordered")),
                           ("reversed", _program(tmp_path, features[::-1], "reversed")),
                           ("subset", _program(tmp_path, subset[::-1], "subset"))):
        log = tmp_path / f"{label}.log"
        out = tmp_path / f"{label}.o"
        subprocess.run([program, "-O2", "-c", str(src), "-o", str(out)], check=True,
                       timeout=120, env=dict(os.environ, MLGO_REGALLOC_POLICY=label,
                                             MLGO_HOST_DECISION_LOG=str(log)))
        results.append((log.read_text(), out.read_bytes()))
    assert results[0][0] and results[0] == results[1] == results[2]
    assert_channels_clean(channel_tmp)


# -- served compiles --------------------------------------------------------------------------------

def _interactive(argv: list[str], workdir: Path, heuristic=None) -> list[int]:
    """Compile with the Python default-rule (mlgo-clang's default policy) or `heuristic` over
    mlgo's own interactive channel."""
    base = workdir / "channel"
    argv = [argv[0], "-mllvm", "-regalloc-enable-advisor=release",
            "-mllvm", f"-regalloc-evict-interactive-channel-base={base}", *argv[1:]]
    heuristic = heuristic or get_problem("regalloc").heuristic(launcher.DEFAULT_REGALLOC_POLICY)
    actions = []
    with InteractiveCompile(argv, "ref", workdir, channel_base=base, timeout=120) as c:
        while (obs := c.next_observation()) is not None:
            actions.append(heuristic({k: np.asarray(v) for k, v in obs.features.items()}))
            c.answer(actions[-1])
        c.finish()
    return actions


@on_each_llvm
@pytest.mark.parametrize("kind", WRAPPERS)
def test_wrapper_matches_interactive_mode(tmp_path: Path, channel_tmp: Path,
                                          default_program: str, kind: str) -> None:
    """Unset, MLGO_REGALLOC_POLICY serves default-rule: the same objects and decisions as
    serving it from Python, and the same spill cost as mlgo.env measures for the module."""
    corpus = Corpus.load(make_small_corpus(tmp_path / "c", sources={
        **SOURCES, "evicting.c": EVICTING}))
    problem = get_problem("regalloc")
    heuristic = problem.heuristic("default-rule")
    cc = wrapper_command(kind)
    total_decisions = 0
    for module in corpus.modules:
        work = tmp_path / module.name.replace("/", "_")
        work.mkdir()
        args = module.compile_args(extra=problem.measurement_flags(work, cc1=False))
        log = work / "host-decisions.txt"
        proc = subprocess.run([cc, *args, "-o", str(work / "wrapped.o")],
                              env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        wrapped_cost = parse_regalloc_remarks(work / "remarks.yaml").total
        decisions = [int(line.split("\t")[2]) for line in log.read_text().splitlines()] \
            if log.exists() else []
        ref_dir = work / "ref"
        ref_dir.mkdir()
        ref_actions = _interactive([llvm_tool("clang"), *args, "-o", str(ref_dir / "out.o")],
                                         ref_dir)
        assert decisions == ref_actions, module.name
        assert (work / "wrapped.o").read_bytes() == (ref_dir / "out.o").read_bytes()
        with mlgo_env.make(problem, module) as e:
            assert mlgo_env.run_episode(e, heuristic).measurement.total == wrapped_cost
        total_decisions += len(decisions)
    assert total_decisions > 0
    assert_channels_clean(channel_tmp)


def test_residual_regalloc_policy_directory_is_served_and_exported(
        tmp_path: Path, channel_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A residual regalloc network (default-rule plus learned scores) in a policy directory:
    mlgo-clang serves it, fresh as default-rule itself, trained as the Python policy decides;
    `mlgo export` writes a SavedModel that decides the same."""
    from test_search import PRESSURE

    from mlgo.cli.main import main
    from mlgo.policies.policy import NumpyPolicy, SavedModelPolicy
    from mlgo.policies.policy_dir import save_policy
    from mlgo.problems.regalloc.network import RegallocNetworkConfig, build_network

    net = build_network(get_problem("regalloc").header(), None, RegallocNetworkConfig(residual=True))
    fresh = net.init_params(1)
    trained = (np.random.default_rng(3).standard_normal(net.num_params) * 0.3).astype(np.float32)
    trained[-2:] = [0.5, 0.0]  # a weak anchor: the scores overturn the rule in places
    save_policy(tmp_path / "fresh", net, fresh)
    save_policy(tmp_path / "trained", net, trained)
    src = tmp_path / "spin.c"
    src.write_text(PRESSURE)

    def served(policy: str) -> tuple[list[int], bytes]:
        monkeypatch.setenv("MLGO_REGALLOC_POLICY", policy)
        log, out = tmp_path / "decisions.log", tmp_path / "served.o"
        log.unlink(missing_ok=True)
        subprocess.run([launcher.launcher_for("clang"), "-O2", "-c", str(src), "-o", str(out)],
                       check=True, timeout=120, env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)))
        return [int(line.split("\t")[2]) for line in log.read_text().splitlines()], out.read_bytes()

    rule = served("default-rule")
    assert len(rule[0]) > 20 and served(str(tmp_path / "fresh")) == rule
    decisions, obj = served(str(tmp_path / "trained"))
    ref = tmp_path / "ref"
    ref.mkdir()
    seen = []

    def trained_policy(obs):
        seen.append(obs)
        return NumpyPolicy(net, trained).act(obs)

    assert _interactive([llvm_tool("clang"), "-O2", "-c", str(src), "-o", str(ref / "out.o")], ref,
                              trained_policy) == decisions
    assert (ref / "out.o").read_bytes() == obj and decisions != rule[0]
    assert main(["export", "--policy", str(tmp_path / "trained"), "-o", str(tmp_path / "export"),
                 "--no-aot"]) == 0
    saved = SavedModelPolicy(tmp_path / "export" / "saved_model")
    assert [saved.act(o) for o in seen] == decisions
    assert_channels_clean(channel_tmp)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_make_parallel_equals_serial(tmp_path: Path, channel_tmp: Path, default_program: str,
                                     kind: str) -> None:
    project = tmp_path / "proj"
    _write_sources(project)
    (project / "evicting.c").write_text(EVICTING)
    (project / "main.c").write_text(
        "int twice(int); int leaf(int); long hash(const char *);\n"
        "long ext(long x) { return x; }\n"
        "int main(void) { return (int)(twice(3) + leaf(1) + hash(\"x\")) & 1; }\n")
    (project / "Makefile").write_text(
        "OBJS = calls.o pressure.o evicting.o leaf.o main.o\n"
        "prog: $(OBJS)\n\t$(CC) $(OBJS) -o prog\n"
        "%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n"
        "clean:\n\trm -f prog $(OBJS)\n")
    make = ["make", "-s", "-C", str(project), f"CC={wrapper_command(kind)}"]
    subprocess.run([*make, "-j2"], check=True, timeout=300)
    parallel = {p.name: p.read_bytes() for p in project.glob("*.o")}
    subprocess.run([*make, "clean"], check=True)
    subprocess.run([*make, "-j1"], check=True, timeout=300)
    serial = {p.name: p.read_bytes() for p in project.glob("*.o")}
    assert len(parallel) == 5 and parallel == serial
    assert subprocess.run([str(project / "prog")]).returncode in (0, 1)
    # The policy was really served: the same build under plain clang differs somewhere.
    plain = subprocess.run([llvm_tool("clang"), "-O2", "-c", str(project / "evicting.c"), "-o", "-"],
                           capture_output=True, check=True).stdout
    assert plain != serial["evicting.o"]
    assert_channels_clean(channel_tmp)


def test_unoptimized_compile_is_served_without_decisions(tmp_path: Path, channel_tmp: Path,
                                                         default_program: str) -> None:
    """At -O0 the greedy allocator never runs and the compiler never opens the channel: the
    compile ends normally, with no decision served."""
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    log = tmp_path / "decisions.txt"
    subprocess.run([default_program, "-c", str(src), "-o", str(tmp_path / "p.o")], check=True,
                   timeout=120, env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)))
    assert (tmp_path / "p.o").read_bytes() == subprocess.run(
        [llvm_tool("clang"), "-c", str(src), "-o", "-"], capture_output=True, check=True).stdout
    assert not log.exists() or log.read_text() == ""
    assert_channels_clean(channel_tmp)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_pass_through_invocations_run_plain_clang(tmp_path: Path, channel_tmp: Path,
                                                  kind: str) -> None:
    cc = wrapper_command(kind)
    # A policy name that does not exist: any attempt to serve it would fail loudly.
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    srcs = _write_sources(tmp_path / "src")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([cc, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    assert f"clang version {llvm_major()}." in run("--version").stdout
    assert "sum_squares" in run("-E", str(srcs[0])).stdout
    two = run("-O2", "-c", str(srcs[0]), str(srcs[2]))
    assert two.returncode == 0 and (tmp_path / "calls.o").exists()
    (tmp_path / "main.c").write_text("int leaf(int); int main(void) { return leaf(-1); }\n")
    subprocess.run([llvm_tool("clang"), "-c", str(tmp_path / "main.c"), str(srcs[2])], cwd=tmp_path,
                   check=True)
    link = run("main.o", "leaf.o", "-o", "prog")
    assert link.returncode == 0, link.stderr
    assert subprocess.run([str(tmp_path / "prog")]).returncode == 0
    # ... while a compile job does try to serve it, and says why it cannot.
    job = run("-O2", "-c", str(srcs[2]), "-o", "x.o")
    assert job.returncode == 1 and "no-such-policy" in job.stderr
    assert list(channel_tmp.iterdir()) == []


@pytest.mark.parametrize("kind", WRAPPERS)
def test_fallback_only_when_asked(tmp_path: Path, channel_tmp: Path, kind: str) -> None:
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    cmd = [wrapper_command(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 1 and not (tmp_path / "leaf.o").exists()
    assert "error" in refused.stderr
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(env, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and (tmp_path / "leaf.o").exists()
    assert "warning" in allowed.stderr and "MLGO_FALLBACK=1" in allowed.stderr


@pytest.mark.parametrize("kind", WRAPPERS)
def test_inline_policy_adds_the_plugin(tmp_path: Path, channel_tmp: Path, kind: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mlgo.serving.plugin import plugin_for

    plugin_for("cost-threshold")  # built (or found) outside the timed compile
    monkeypatch.setenv("MLGO_INLINE_POLICY", "cost-threshold")
    cc = wrapper_command(kind)
    src = tmp_path / "calls.c"
    src.write_text(SOURCES["calls.c"])
    log = tmp_path / "inline-decisions.txt"
    proc = subprocess.run([cc, "-Oz", "-c", str(src), "-o", str(tmp_path / "c.o")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log)))
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().strip()


def test_print_launcher_names_the_launcher_for_the_environment(channel_tmp: Path) -> None:
    for driver in launcher.DRIVERS:
        proc = subprocess.run([str(BIN / f"mlgo-{driver}"), "--print-launcher"],
                              capture_output=True, text=True, check=True, timeout=300)
        assert proc.stdout.strip() == launcher.launcher_for(driver)
        assert Path(proc.stdout.strip()).name == f"mlgo-{driver}"
    bad = subprocess.run([str(BIN / "mlgo-clang"), "--print-launcher"], capture_output=True,
                         text=True, env=dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy"),
                         timeout=300)
    assert bad.returncode == 1 and bad.stdout == "" and "no-such-policy" in bad.stderr


def test_unset_policy_is_default_rule_and_explicit_names_still_win(channel_tmp: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MLGO_REGALLOC_POLICY the launcher serves `default-rule` (closer to LLVM's own
    eviction than the proxy on every training program: benchmarks/RESULTS.md, "Regalloc"); naming a
    policy still serves that one."""
    unset = launcher.resolve_config("clang")
    assert unset.regalloc_policy == unset.regalloc_label == "default-rule"
    assert unset.regalloc_source == c_source.heuristic_c_source("regalloc", "default-rule")
    monkeypatch.setenv("MLGO_REGALLOC_POLICY", "proxy")
    named = launcher.resolve_config("clang")
    assert named.regalloc_label == "proxy" and named.regalloc_source != unset.regalloc_source


def test_cxx_program_matches_interactive_mode(tmp_path: Path, channel_tmp: Path) -> None:
    src = tmp_path / "evicting.cpp"
    src.write_text(EVICTING)
    args = ["-O2", "-c", str(src)]
    log = tmp_path / "decisions.txt"
    subprocess.run([wrapper_command("native", "clang++"), *args, "-o", str(tmp_path / "served.o")],
                   check=True, timeout=300, env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)))
    ref = tmp_path / "ref"
    ref.mkdir()
    actions = _interactive([llvm_tool("clang++"), *args, "-o", str(ref / "out.o")], ref)
    assert actions and [int(line.split("\t")[2]) for line in log.read_text().splitlines()] \
        == actions
    assert (tmp_path / "served.o").read_bytes() == (ref / "out.o").read_bytes()
    assert_channels_clean(channel_tmp)


def test_program_with_its_plugin_gone(tmp_path: Path, channel_tmp: Path) -> None:
    """A program outlives the cache entry of its plugin: an error naming the file, or with
    MLGO_FALLBACK=1 a warning and a compile with clang's own inliner."""
    gone = tmp_path / "removed.so"
    program = launcher.build_launcher(launcher.LauncherConfig(
        "clang", locate("clang", override=False), "default", inline_policy="cost-threshold",
        plugin=str(gone)))
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    cmd = [program, "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    env = dict(os.environ, MLGO_INLINE_POLICY="cost-threshold", MLGO_REGALLOC_POLICY="default")
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 1 and f"{gone}: it is gone" in refused.stderr
    assert not (tmp_path / "leaf.o").exists()
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(env, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and (tmp_path / "leaf.o").exists()
    assert "warning" in allowed.stderr and "MLGO_FALLBACK=1" in allowed.stderr
    assert list(channel_tmp.iterdir()) == []


def test_launcher_policy_mismatch_says_to_set_the_variable_when_printing(
        tmp_path: Path, channel_tmp: Path) -> None:
    """A program printed without MLGO_REGALLOC_POLICY serves `default-rule`; a compile asking for
    another policy is refused with the command that makes the right one."""
    for driver in launcher.DRIVERS:
        native = launcher.launcher_for(driver)
        src = tmp_path / "leaf.c"
        src.write_text(SOURCES["leaf.c"])
        proc = subprocess.run([native, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MLGO_REGALLOC_POLICY="regalloc"))
        assert proc.returncode == 1
        assert (f"`MLGO_REGALLOC_POLICY=regalloc mlgo-{driver} --print-launcher`"
                in proc.stderr), proc.stderr
