"""The inliner plugin as the environment (`--env plugin`): the same decisions and byte-identical
objects as interactive mode under the same policy; the channel's failure modes, each one clear
error; old policies binding by name; and MLGO_PLUGIN_DECISION_LOG failing with one line."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import llvm_tool, make_small_corpus, on_each_llvm, on_llvm

from corpus_tools.corpus import Corpus
from mlgo import env as mlgo_env
from mlgo.compiler import plugin_env
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.policies import c_source
from mlgo.problems import get_problem
from mlgo.protocol import for_llvm
from mlgo.serving import plugin
from mlgo.serving.build import BuildError
from mlgo_base import toolchain
from mlgo_base.errors import CompileError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llvm_major: int) -> Corpus:
    with on_llvm(llvm_major):
        return Corpus.load(make_small_corpus(
            tmp_path_factory.mktemp(f"plugin-env-corpus{llvm_major}-")))


@pytest.fixture(scope="module")
def channel_plugin(llvm_major: int) -> Path:
    with on_llvm(llvm_major):
        return plugin.channel_plugin()


def _compile(problem, module, policy: str) -> tuple[bytes, list[int], list[dict]]:
    """Object bytes, decisions and observations of one compile through `problem`'s channel."""
    problem = problem.for_policy(policy)
    decide = problem.heuristic(policy)
    workdir = make_workdir()
    try:
        base = workdir / "channel"
        argv = problem.compile_argv(module, workdir, base)
        actions, observations = [], []
        with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=120) as c:
            while (obs := c.next_observation()) is not None:
                actions.append(int(decide(obs.features)))
                observations.append({n: int(np.asarray(v).reshape(-1)[0])
                                     for n, v in obs.features.items()})
                c.answer(actions[-1])
            c.finish()
        return (workdir / "out.o").read_bytes(), actions, observations
    finally:
        remove_workdir(workdir)


@on_each_llvm
@pytest.mark.parametrize("policy", ["cost-threshold", "llvm-default", "always"])
def test_plugin_and_interactive_decide_alike(corpus: Corpus, channel_plugin: Path,
                                            policy: str) -> None:
    interactive = get_problem("inlining")
    over_plugin = get_problem("inlining")
    over_plugin.plugin = str(channel_plugin)
    decided = 0
    for module in corpus.modules:
        obj_i, act_i, obs_i = _compile(interactive, module, policy)
        obj_p, act_p, obs_p = _compile(over_plugin, module, policy)
        assert act_i == act_p, module.name
        assert obj_i == obj_p, module.name
        # LLVM's features are the same, but for the slot LLVM 19 overwrites with its default
        # decision in include-default mode (the plugin sends that as inlining_default).
        same = [n for n in for_llvm(toolchain.llvm_major()).INLINE_FEATURES
                if n not in interactive.for_policy(policy).overwritten_features]
        assert [[o[n] for n in same] for o in obs_i] == [[o[n] for n in same] for o in obs_p]
        decided += len(act_p)
    assert decided > 5


@on_each_llvm
def test_env_make_plugin_names_each_call_site(corpus: Corpus, channel_plugin: Path) -> None:
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    env = mlgo_env.make("inlining", module, corpus=corpus, environment="plugin")
    obs, info = env.reset()
    sites = []
    while obs is not None:
        assert set(plugin_env.PLUGIN_FEATURES) <= set(obs)
        sites.append(info["call_site"])
        obs, _, _, _, info = env.step(0)
    assert {(s.caller, s.callee) for s in sites} >= {("cube", "sq"), ("sum_squares", "sq")}
    assert env.result is not None and env.result.num_decisions == len(sites)


def _first_observation(channel_plugin: Path, workdir: Path, *extra: str) -> InteractiveCompile:
    src = workdir / "m.c"
    src.write_text("static int sq(int x) { return x * x; }\nint f(int y) { return sq(y) + sq(y + 1); }\n")
    base = workdir / "channel"
    argv = [llvm_tool("clang"), "-Oz", "-c", str(src), "-o", str(workdir / "out.o"),
            *plugin_env.channel_flags(channel_plugin, base), *extra]
    c = InteractiveCompile(argv, "m.c", workdir, channel_base=base, timeout=60)
    assert c.next_observation() is not None
    return c


def _one_plugin_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 or (len(lines) == 2 and "Inlining Advisor" not in lines[0]), stderr
    assert "Stack dump" not in stderr and "PLEASE submit" not in stderr
    return lines[0]


def test_the_compiler_dying_is_one_error(channel_plugin: Path, tmp_path: Path) -> None:
    c = _first_observation(channel_plugin, tmp_path)
    with c:
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait()
        with pytest.raises(CompileError, match="signal SIGKILL"):
            c.answer(0)
            while c.next_observation() is not None:
                c.answer(0)
            c.finish()


def test_a_garbage_answer_is_one_error(channel_plugin: Path, tmp_path: Path) -> None:
    c = _first_observation(channel_plugin, tmp_path)
    with c:
        c.answer(7)
        with pytest.raises(CompileError) as e:
            while c.next_observation() is not None:
                c.answer(0)
            c.finish()
    line = _one_plugin_error(e.value.stderr if hasattr(e.value, "stderr") else str(e.value))
    assert "the host answered 7 to decision 0" in line and "expected 0 or 1" in line


def test_a_host_that_closes_mid_answer_is_one_error(channel_plugin: Path, tmp_path: Path) -> None:
    c = _first_observation(channel_plugin, tmp_path)
    with c:
        c.channel.send(b"\x01\x00\x00")
        os.close(c.channel._wfd)  # the host's only write end
        c.channel._wfd = None
        with pytest.raises(CompileError) as e:
            c.finish()
    line = _one_plugin_error(str(e.value))
    assert "the host closed" in line and "in the middle of an answer" in line


def test_a_host_that_never_answers_times_out_in_the_plugin(channel_plugin: Path,
                                                           tmp_path: Path) -> None:
    c = _first_observation(channel_plugin, tmp_path, "-mllvm", "-mlgo-plugin-channel-timeout=1")
    with c, pytest.raises(CompileError) as e:
        c.finish()
    line = _one_plugin_error(str(e.value))
    assert "no answer from the host" in line and "within 1s" in line


def test_a_stuck_compiler_times_out_in_mlgo(corpus: Corpus, channel_plugin: Path) -> None:
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    env = mlgo_env.make("inlining", module, corpus=corpus, environment="plugin", timeout=2)
    env.reset()
    assert env._compile is not None
    os.kill(env._compile.proc.pid, signal.SIGSTOP)
    with pytest.raises(CompileError, match="timed out after 2s"):
        env.step(0)


def _policy_plugin(features: list[tuple[str, str, int]]) -> Path:
    source = c_source.heuristic_c_source("inlining", "cost-threshold", features)
    return plugin.build_plugin(source, policy_label="cost-threshold-" + features[0][0])


def _decision_log(so: Path, module, workdir: Path, log: str | None) -> subprocess.CompletedProcess:
    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={so}"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGO_PLUGIN")}
    if log is not None:
        env["MLGO_PLUGIN_DECISION_LOG"] = log
    return subprocess.run([llvm_tool("clang"), *args, "-o", str(workdir / "p.o")], env=env,
                          capture_output=True, text=True, timeout=120)


def test_policies_bind_llvms_and_the_plugins_features_by_name(corpus: Corpus,
                                                              tmp_path: Path) -> None:
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    int64 = [("callsite_loop_depth", "int64_t", 1), ("threshold", "int64_t", 1),
             ("callee_linkage", "int64_t", 1), ("cost_estimate", "int64_t", 1)]
    old = plugin.plugin_for("cost-threshold")  # LLVM's 38 features, in LLVM's order
    mixed = _policy_plugin(int64)  # plugin features first, LLVM's two in other places
    logs = []
    for so in (old, mixed):
        log = tmp_path / f"{so.parent.name}.log"
        assert _decision_log(so, module, tmp_path, str(log)).returncode == 0
        logs.append(log.read_text())
    assert logs[0] == logs[1] and logs[0].count("->") > 3
    with pytest.raises(BuildError, match="the policy needs 'no_such_feature'"):
        _policy_plugin([("no_such_feature", "int64_t", 1), *int64])


@pytest.fixture(scope="module")
def served() -> Path:
    return plugin.plugin_for("cost-threshold")


def test_decision_log_empty_means_off(served: Path, corpus: Corpus, tmp_path: Path) -> None:
    proc = _decision_log(served, corpus.modules[0], tmp_path, "")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize("kind", ["device", "fifo", "fifo-with-reader"])
def test_decision_log_refuses_what_is_not_a_file(served: Path, corpus: Corpus, tmp_path: Path,
                                                 kind: str) -> None:
    path = "/dev/full" if kind == "device" else str(tmp_path / "log.fifo")
    reader = None
    if kind != "device":
        os.mkfifo(path)
    if kind == "fifo-with-reader":
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        proc = _decision_log(served, corpus.modules[0], tmp_path, path)
    finally:
        if reader is not None:
            os.close(reader)
    assert proc.returncode == 1
    line = _one_plugin_error(proc.stderr)
    assert f"cannot open MLGO_PLUGIN_DECISION_LOG {path}: not a regular file" in line


def test_decision_log_write_error_is_one_line(served: Path, corpus: Corpus, tmp_path: Path) -> None:
    module = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    log = tmp_path / "full.log"
    limit = 1 << 16  # room for the object file, none for the log
    log.write_bytes(b"x" * limit)

    def limit_file_size() -> None:
        # Blocked, not ignored (LLVM replaces handlers, not the mask): a write past the limit
        # then fails with EFBIG, as on a full disk.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXFSZ})
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={served}"])
    env = dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log))
    proc = subprocess.run([llvm_tool("clang"), *args, "-o", str(tmp_path / "p.o")], env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size)
    assert proc.returncode == 1
    line = _one_plugin_error(proc.stderr)
    assert f"cannot write MLGO_PLUGIN_DECISION_LOG {log}: File too large" in line


def test_the_env_flag_reaches_every_compile_through_gin(channel_plugin: Path) -> None:
    import argparse

    import gin

    from mlgo.cli.common import setup_gin
    from mlgo_base.errors import MlgoError

    def args(env: str, problem: str = "inlining") -> argparse.Namespace:
        return argparse.Namespace(gin_file=[], gin_bindings=[], env=env, problem=problem)

    try:
        config = setup_gin(args("plugin"))
        assert get_problem("inlining").plugin == str(channel_plugin)
        assert str(channel_plugin) in config  # what workers replay
        flags = get_problem("inlining").channel_flags(Path("/tmp/base"))
        assert flags == plugin_env.channel_flags(channel_plugin, Path("/tmp/base"))
        setup_gin(args("interactive"))
        assert get_problem("inlining").plugin == ""
        assert "-enable-ml-inliner=release" in get_problem("inlining").channel_flags(Path("b"))
        with pytest.raises(MlgoError, match="only the inlining problem has a plugin"):
            setup_gin(args("plugin", "regalloc"))
    finally:
        gin.clear_config()


# A hand-written policy that reads the plugin's features: the same rule in C (served by the
# plugin, which then computes only the features it binds) and in Python (deciding through the
# channel, which sends them all).
SITE_RULE_INPUTS = ("callsite_is_last_use", "cost_estimate", "callsite_loop_depth", "threshold",
                    "callee_linkage", "callsite_relative_freq_x1000")
_QUOTED = ", ".join(f'"{n}"' for n in SITE_RULE_INPUTS)
_N = len(SITE_RULE_INPUTS)
SITE_RULE_C = f"""
#include <stddef.h>
#include <stdint.h>
const char *const mlgo_policy_feature_names[] = {{{_QUOTED}}};
const char *const mlgo_policy_feature_types[] = {{{", ".join(['"int64_t"'] * _N)}}};
const size_t mlgo_policy_feature_elements[] = {{{", ".join(["1"] * _N)}}};
const size_t mlgo_policy_num_features = {_N};
const char mlgo_policy_output_name[] = "inlining_decision";
int64_t mlgo_inline_policy(const int64_t *f, size_t n) {{
  (void)n;
  int64_t bonus = 40 * f[0] - 15 * f[2] + (f[4] == 2 ? 10 : 0) - (f[5] > 4000 ? 5 : 0);
  return f[1] < f[3] + bonus;
}}
int64_t mlgo_policy_run(const void *const *inputs) {{
  int64_t f[{_N}];
  for (size_t i = 0; i < {_N}; i++) f[i] = *(const int64_t *)inputs[i];
  return mlgo_inline_policy(f, {_N});
}}
void mlgo_policy_eval(const void *const *inputs, void *output) {{
  *(int64_t *)output = mlgo_policy_run(inputs);
}}
"""


def site_rule(obs) -> int:
    f = [int(np.asarray(obs[n]).reshape(-1)[0]) for n in SITE_RULE_INPUTS]
    bonus = 40 * f[0] - 15 * f[2] + (10 if f[4] == 2 else 0) - (5 if f[5] > 4000 else 0)
    return int(f[1] < f[3] + bonus)


def test_a_policy_on_the_plugins_features_serves_as_it_trains(corpus: Corpus, channel_plugin: Path,
                                                               tmp_path: Path) -> None:
    served = plugin.build_plugin(SITE_RULE_C, policy_label="site-rule")
    over_plugin = get_problem("inlining")
    over_plugin.plugin = str(channel_plugin)
    flips = 0
    for module in corpus.modules:
        log = tmp_path / f"{module.name.replace('/', '_')}.log"
        proc = _decision_log(served, module, tmp_path, str(log))
        assert proc.returncode == 0, proc.stderr
        served_pairs = [line.split("->") for line in log.read_text().splitlines()] if log.exists() else []
        workdir = make_workdir()
        try:
            base = workdir / "channel"
            argv = over_plugin.compile_argv(module, workdir, base)
            channel_pairs = []
            with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=120) as c:
                while (obs := c.next_observation()) is not None:
                    action = site_rule(obs.features)
                    flips += action != int(obs.features["cost_estimate"].item(0)
                                           < obs.features["threshold"].item(0))
                    llvm = " ".join(str(int(obs.features[n].item(0))) for n in for_llvm(toolchain.llvm_major()).INLINE_FEATURES)
                    channel_pairs.append([llvm + " ", f" {action}"])
                    c.answer(action)
                c.finish()
            assert (workdir / "out.o").read_bytes() == (tmp_path / "p.o").read_bytes(), module.name
        finally:
            remove_workdir(workdir)
        assert served_pairs == channel_pairs, module.name
    assert flips > 0  # the plugin's features changed decisions, so they were bound and computed


def test_a_module_recorded_as_cc1_arguments(corpus: Corpus, channel_plugin: Path,
                                            tmp_path: Path) -> None:
    from corpus_tools.corpus import Module

    source = next(m for m in corpus.modules if m.name.endswith("calls.c"))
    (tmp_path / "m.bc").write_bytes(source.bc_path.read_bytes())
    (tmp_path / "m.cmd").write_bytes(b"\0".join([b"-cc1", b"-triple", b"x86_64-pc-linux-gnu",
                                                  b"-emit-obj", b"-Oz"]))
    module = Module("m", tmp_path)
    over_plugin = get_problem("inlining")
    over_plugin.plugin = str(channel_plugin)
    argv = over_plugin.compile_argv(module, tmp_path, tmp_path / "channel")
    assert "-load" in argv and not any(a.startswith("-fplugin=") for a in argv)
    obj_i, act_i, _ = _compile(get_problem("inlining"), module, "cost-threshold")
    obj_p, act_p, _ = _compile(over_plugin, module, "cost-threshold")
    assert act_i == act_p and len(act_p) > 3 and obj_i == obj_p
