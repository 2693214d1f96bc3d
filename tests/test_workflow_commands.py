"""The workflow steps a shipped policy's train.sh runs as `mlgo` commands: `mlgo profile make`,
`merge` and `programs` (regalloc's block profiles, from a run, from files, from the training
programs), `mlgo margin` (a residual policy at flip margins, chosen on validation modules or
programs, or given a measured validation figure)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool, needs_tools

from mlgo.cli.main import main
from mlgo.policies.margin import choose_margin
from mlgo.policies.policy_dir import load_policy
from mlgo.policies.shipped import resolve as resolve_shipped
from mlgo.problems.regalloc.profile import BlockProfile, load_profile, read_callgrind, write_profile
from mlgo_base.errors import MlgoError

# Two modules of one program; `helper` is static in both, so the run cannot tell its copies
# apart and neither module's profile may claim it.
MAIN_C = r"""
__attribute__((noinline)) static int helper(int x) { return x * 3; }
__attribute__((noinline)) int work(int x) { int s = 0; for (int i = 0; i < x; i++) s += helper(i); return s; }
int other(int);
int main(void) { int t = 0; for (int i = 0; i < 40; i++) t ^= work(i) + other(i); return t == 7; }
"""
OTHER_C = r"""
__attribute__((noinline)) static int helper(int x) { return x + 1; }
__attribute__((noinline)) int other(int x) { return helper(x) * 2; }
__attribute__((noinline)) int never_called(int x) { return x - 1; }
"""


@needs_tools("valgrind")
def test_profile_make_keys_a_real_run_by_corpus_module(tmp_path: Path, capsys) -> None:
    objs = {}
    for name, text in (("main.c", MAIN_C), ("other.c", OTHER_C)):
        (tmp_path / name).write_text(text)
        objs[name] = tmp_path / (name + ".o")
        subprocess.run([llvm_tool("clang"), "-O1", "-fbasic-block-address-map", "-c",
                        str(tmp_path / name), "-o", str(objs[name])], check=True, timeout=120)
    exe = tmp_path / "prog"
    subprocess.run([llvm_tool("clang"), *map(str, objs.values()), "-o", str(exe)], check=True, timeout=120)
    cg = tmp_path / "cg.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes",
                    f"--callgrind-out-file={cg}", str(exe)], capture_output=True, timeout=300)
    out = tmp_path / "profile.json"
    assert main(["profile", "make", "--program", str(exe), "--callgrind", str(cg),
                 "--module", f"p/main.c={objs['main.c']}", "--module",
                 f"p/other.c={objs['other.c']}", "-o", str(out)]) == 0
    assert "2 modules, 2 of them executed" in capsys.readouterr().out
    profile = load_profile(out)
    assert set(profile) == {"p/main.c", "p/other.c"}
    assert {"work", "main"} <= set(profile["p/main.c"])
    assert set(profile["p/other.c"]) == {"other"}  # never_called did not run; helper is ambiguous
    calls = read_callgrind(cg, exe).calls
    entry = min(profile["p/other.c"]["other"])
    assert profile["p/other.c"]["other"][entry].entries == calls["other"] == 40


def test_profile_merge_joins_modules_and_refuses_two_runs_of_one(tmp_path: Path, capsys) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    write_profile(a, {"x/a.c": {"f": {0: BlockProfile(3, 9, 3)}}}, "run a")
    write_profile(b, {"x/b.c": {"g": {1: BlockProfile(1, 2, 2)}}, "x/a.c": load_profile(a)["x/a.c"]},
                  "run b")
    write_profile(c, {"x/a.c": {"f": {0: BlockProfile(4, 12, 3)}}}, "run c")
    out = tmp_path / "merged.json"
    assert main(["profile", "merge", str(a), str(b), "-o", str(out)]) == 0
    assert load_profile(out) == {**load_profile(a), **load_profile(b)}
    capsys.readouterr()
    assert main(["profile", "merge", str(a), str(c), "-o", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert f"{c}: module x/a.c is also in {a}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.json").exists()


def test_choose_margin_takes_the_lowest_change_and_on_a_tie_the_larger_margin() -> None:
    assert choose_margin({0.0: -0.010, 1.0: -0.020, 4.0: 0.001}) == 1.0
    assert choose_margin({0.0: -0.020, 1.0: -0.020, 4.0: -0.010}) == 1.0


def test_margin_writes_each_margin_and_records_a_validation_report(tmp_path: Path,
                                                                   capsys) -> None:
    policy = resolve_shipped("regalloc")
    assert main(["margin", "--policy", policy, "-o", str(tmp_path / "m"),
                 "--margins", "0", "2.5"]) == 0
    net, params, meta = load_policy(tmp_path / "m" / "margin-2.5")
    base_net, base_params, _ = load_policy(policy)
    assert meta["flip_margin"] == 2.5 and "validation" not in meta
    assert (params == base_net.with_flip_margin(base_params, 2.5)).all()
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"problem": "regalloc", "policy_total": 99.0,
                                  "default_total": 100.0, "relative_change": -0.01,
                                  "modules": [{}, {}], "failures": []}))
    assert main(["margin", "--policy", policy, "-o", str(tmp_path / "v"), "--margins", "1",
                 "--validation", str(report)]) == 0
    meta = load_policy(tmp_path / "v" / "margin-1")[2]
    assert meta["validation"] == {"policy_total": 99.0, "default_total": 100.0,
                                  "relative_change": -0.01, "modules": 2, "failed": 0}
    capsys.readouterr()
    assert main(["margin", "--policy", policy, "-o", str(tmp_path / "w"), "--margins", "0", "1",
                 "--validation", str(report)]) == 2
    assert "--validation takes one margin" in capsys.readouterr().err


@pytest.mark.usefixtures("isolated_cache")
def test_margin_chosen_on_validation_modules_records_that_measurement(
        tmp_path: Path, corpus: Path, capsys) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(resolve_shipped("regalloc"), policy)
    out = tmp_path / "m"
    assert main(["margin", "--policy", str(policy), "-o", str(out), "--margins", "0", "1000",
                 "--choose-on", str(corpus), "--workers", "2"]) == 0
    reports = {m: json.loads((out / f"eval-margin-{m}.json").read_text()) for m in ("0", "1000")}
    changes = {float(m): r["relative_change"] for m, r in reports.items()}
    chosen = choose_margin(changes)
    assert f"flip margin {chosen:g} chosen on the 6 modules" in capsys.readouterr().out
    meta = load_policy(out / f"margin-{chosen:g}")[2]
    assert meta["validation"]["relative_change"] == changes[chosen]
    assert meta["validation"]["modules"] == 6
    other = 0.0 if chosen else 1000.0
    assert "validation" not in load_policy(out / f"margin-{other:g}")[2]


def test_profile_programs_refuses_validation_and_held_out_programs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "programs", "--program", "lua5.4", "--program", "giflib (gif2rgb)",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "giflib (gif2rgb) (validation): a training profile or corpus comes from the training " \
           "programs only" in err
    assert not out.exists()


def test_a_workload_step_passes_bytes_both_ways_and_names_the_step_that_failed() -> None:
    import sys

    from mlgo.problems.regalloc.programs import Runner
    from mlgo_base.process import ProcessError

    run = Runner("demo", native=True)
    data = bytes(range(256)) * 100
    copy = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"]
    assert run(copy, data) == data
    with pytest.raises(ProcessError, match=r"demo: decompress .*exited with status 3"):
        run([sys.executable, "-c", "raise SystemExit(3)"], step="decompress")


def test_margin_of_a_policy_that_is_not_residual_names_the_policy(tmp_path: Path,
                                                                   capsys) -> None:
    policy = resolve_shipped("inlining-oz")
    assert main(["margin", "--policy", policy, "-o", str(tmp_path / "m"), "--margins", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlgo: error: {policy}: a flip margin applies to a residual")
    assert not (tmp_path / "m").exists()


def test_a_margin_making_one_program_worse_than_the_limit_does_not_qualify() -> None:
    totals = {0.0: -0.004, 1.0: -0.002, 4.0: 0.0}
    worst = {0.0: 0.0008, 1.0: 0.0003, 4.0: 0.0}
    assert choose_margin(totals) == 0.0
    assert choose_margin(totals, worst, limit=0.0005) == 1.0
    with pytest.raises(MlgoError, match=r"more than 0.01%"):
        choose_margin({0.0: -0.01}, {0.0: 0.002}, limit=0.0001)


def test_choosing_on_a_held_out_program_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["margin", "--policy", resolve_shipped("regalloc"), "-o", str(tmp_path / "m"),
                 "--margins", "0", "--choose-on-programs", "jq"]) == 2
    assert "jq: a held-out program" in capsys.readouterr().err


@pytest.mark.slow
@needs_tools("valgrind")
@pytest.mark.usefixtures("isolated_cache")
def test_profile_programs_profiles_a_real_training_program_and_its_corpus(tmp_path: Path,
                                                                        capsys) -> None:
    """lua5.4 from its Debian build (cached across runs): built plain, its workload run under
    callgrind and checked, every module profiled, and the corpus holding exactly those modules."""
    from corpus_tools import debian
    from corpus_tools.corpus import Corpus

    debian.build_package("lua5.4", tmp_path / "packages", jobs=2, progress=False)
    out, corpus = tmp_path / "profile.json", tmp_path / "corpus"
    assert main(["profile", "programs", "--program", "lua5.4", "-o", str(out),
                 "--corpus", str(corpus), "--workdir", str(tmp_path / "work")]) == 0
    assert "33 modules of 1 programs" in capsys.readouterr().out
    profile = load_profile(out)
    assert sorted(profile) == sorted(m.name for m in Corpus.load(corpus).modules)
    execute = profile["lua5.4/src/lvm.c"]["luaV_execute"]
    assert sum(b.executed for b in execute.values()) > 10_000_000  # the interpreter's loop
    assert main(["profile", "programs", "--program", "lua5.4", "-o", str(out),
                 "--workdir", str(tmp_path / "work")]) == 2  # old callgrind files would count


def _plugin_feature_policy(path: Path) -> Path:
    """A fresh residual inlining policy (LLVM's rule) whose network also reads the inliner
    plugin's own features, which only `--env plugin` compiles send."""
    import numpy as np

    from mlgo.compiler.plugin_env import PLUGIN_FEATURES
    from mlgo.policies import vocab as V
    from mlgo.policies.network import as_specs
    from mlgo.policies.policy_dir import save_policy
    from mlgo.problems import get_problem
    from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig
    from mlgo.serving.plugin import channel_plugin
    from mlgo.training.gin_config import parse_gin

    parse_gin([], [f"inlining.InliningForSize.plugin = {str(channel_plugin())!r}"])
    try:
        header = get_problem("inlining").header()
    finally:
        parse_gin([], [])
    config = InliningNetworkConfig(residual=True, hidden_sizes=(8,))
    specs = as_specs(header)
    # any bucket bounds do: the fresh residual network is the rule whatever its inputs
    vocab = {key: np.array([0.0, 1.0, 10.0, 100.0]) for f in specs
             if f.name not in config.ignored_features
             for key in V.vocab_names(f.name, f.num_elements)}
    net = InliningNetwork(specs, config, vocab, header.advice)
    assert set(PLUGIN_FEATURES) <= {f.name for f in net.features}
    return save_policy(path, net, net.init_params(0), {"algorithm": "imitation"})


@pytest.mark.usefixtures("isolated_cache")
def test_margin_chooses_through_the_plugin_with_env_plugin(tmp_path: Path, corpus: Path,
                                                           capsys) -> None:
    policy = _plugin_feature_policy(tmp_path / "policy")
    out = tmp_path / "m"
    assert main(["margin", "--policy", str(policy), "-o", str(out), "--margins", "0", "1",
                 "--choose-on", str(corpus), "--workers", "1", "--env", "plugin"]) == 0
    assert "flip margin 1 chosen on the 6 modules" in capsys.readouterr().out
    report = json.loads((out / "eval-margin-1.json").read_text())
    assert len(report["modules"]) == 6 and not report["failures"]
    # LLVM's interactive mode does not send the plugin's features the network reads
    assert main(["margin", "--policy", str(policy), "-o", str(tmp_path / "i"), "--margins", "0",
                 "--choose-on", str(corpus), "--workers", "1", "--env", "interactive"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlgo: error: ") and "lacks feature(s) callee_linkage" in err
    assert len(err.strip().splitlines()) == 1


def test_margin_refuses_env_without_a_corpus_to_compile(tmp_path: Path, capsys) -> None:
    policy = resolve_shipped("regalloc")
    assert main(["margin", "--policy", policy, "-o", str(tmp_path / "m"), "--margins", "1",
                 "--env", "plugin"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mlgo: error: --env goes with --choose-on: it says how the validation modules are "
        "compiled, and nothing else here compiles through it")
    assert not (tmp_path / "m").exists()
