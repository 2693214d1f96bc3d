"""`mlgo train` end to end on a small real corpus: bc, then es and ppo from its warm start,
resume after kill -9, and refusing a mismatched run directory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import SOURCES

from mlgo.cli.main import main
from mlgo.policies.policy_dir import load_policy
from mlgo_base import toolchain

pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def bc_run(corpus, module_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "bc"
    rc = main(["train", "--problem", "inlining", "--algorithm", "bc", "--corpus", str(corpus),
               "-o", str(out), "--workers", "2", "--validation-fraction", "0.34",
               "--gin_bindings", "bc.BCConfig.epochs = 3"])
    assert rc == 0
    return out


def test_bc_writes_policy_checkpoints_and_summaries(bc_run):
    net, params, meta = load_policy(bc_run / "policy", problem="inlining")
    assert params.shape == (net.num_params,) and meta["algorithm"] == "bc"
    log = [json.loads(x) for x in (bc_run / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in log] == [0, 1, 2]
    assert 0.0 <= log[-1]["bc/agreement_train"] <= 1.0
    assert "validation/relative_change" in log[-1]
    assert (bc_run / "best" / "policy.json").is_file()
    assert list((bc_run / "tensorboard").iterdir())
    assert (bc_run / "checkpoints" / "LATEST").read_text().strip() == "ckpt-000002"


@pytest.mark.parametrize("algorithm,bindings", [
    ("es", ["es.ESConfig.iterations = 2", "es.ESConfig.directions = 2"]),
    ("ppo", ["ppo.PPOConfig.iterations = 2", "ppo.PPOConfig.epochs = 1"]),
])
def test_warm_started_algorithms_run(bc_run, corpus, tmp_path, algorithm, bindings):
    out = tmp_path / algorithm
    args = ["train", "--problem", "inlining", "--algorithm", algorithm, "--corpus", str(corpus),
            "-o", str(out), "--warmstart", str(bc_run / "best"), "--workers", "2",
            "--validation-fraction", "0.34"]
    for b in bindings:
        args += ["--gin_bindings", b]
    assert main(args) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in log] == [0, 1]
    assert all("reward/mean" in x for x in log)
    # Running the finished command again resumes past the end: nothing more to do.
    assert main(args) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_es_in_the_output_layer_subspace_leaves_other_layers_alone(bc_run, corpus, tmp_path):
    out = tmp_path / "es-last"
    assert main(["train", "--problem", "inlining", "--algorithm", "es", "--corpus", str(corpus),
                 "-o", str(out), "--warmstart", str(bc_run / "best"), "--workers", "2",
                 "--validation-fraction", "0.34", "--gin_bindings", "es.ESConfig.iterations = 1",
                 "--gin_bindings", "es.ESConfig.directions = 2",
                 "--gin_bindings", "es.ESConfig.trainable_layers = 1",
                 # a step large enough to flip decisions, so the candidates' fitness differs
                 "--gin_bindings", "es.ESConfig.sigma = 1.0"]) == 0
    net, start, _ = load_policy(bc_run / "best", problem="inlining")
    _, end, _ = load_policy(out / "policy", problem="inlining")
    last = net.param_shapes()[-2:]
    n_last = sum(int(np.prod(shape)) for _, shape in last)
    assert (end[:-n_last] == start[:-n_last]).all()
    assert (end[-n_last:] != start[-n_last:]).any()
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["es/dimensions"] == n_last


def test_ppo_warmstart_temperature_explores_without_changing_the_greedy_policy(bc_run, corpus,
                                                                             tmp_path):
    logs = {}
    for t in (1.0, 8.0):
        out = tmp_path / f"ppo-t{t}"
        assert main(["train", "--problem", "inlining", "--algorithm", "ppo", "--corpus", str(corpus),
                     "-o", str(out), "--warmstart", str(bc_run / "best"), "--workers", "2",
                     "--validation-fraction", "0.34", "--gin_bindings", "ppo.PPOConfig.iterations = 1",
                     "--gin_bindings", "ppo.PPOConfig.learning_rate = 0.0",  # isolate the scaling
                     "--gin_bindings", f"ppo.PPOConfig.warmstart_temperature = {t}"]) == 0
        logs[t] = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert logs[8.0]["ppo/entropy"] > logs[1.0]["ppo/entropy"]
    assert logs[8.0]["validation/relative_change"] == logs[1.0]["validation/relative_change"]


def test_kill_minus_9_then_resume(bc_run, corpus, tmp_path):
    out = tmp_path / "es-killed"
    cmd = [sys.executable, "-m", "mlgo.cli.main", "train", "--problem", "inlining",
           "--algorithm", "es", "--corpus", str(corpus), "-o", str(out),
           "--warmstart", str(bc_run / "best"), "--workers", "1", "--validation-fraction", "0.34",
           "--gin_bindings", "es.ESConfig.iterations = 4", "--gin_bindings", "es.ESConfig.directions = 2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = out / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 240
    while not latest.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    descendants = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the trainer only: its workers and compilers must follow
    proc.wait()
    assert latest.is_file(), "no checkpoint before the kill"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in descendants):
        time.sleep(0.2)
    left = [p for p in descendants if _alive(p)]
    os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed trainer: {left}"
    done_before = int(latest.read_text().strip().split("-")[1])
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    log = [json.loads(x)["iteration"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1] == 3 and sorted(set(log)) == [0, 1, 2, 3]
    assert done_before + 1 in log  # it went on from the checkpoint, not from scratch
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "ckpt-000003"


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_mismatched_run_directory_is_refused(bc_run, corpus, capsys):
    rc = main(["train", "--problem", "inlining", "--algorithm", "es", "--corpus", str(corpus),
               "-o", str(bc_run)])
    assert rc == 2 and "algorithm=bc" in capsys.readouterr().err


def test_warm_start_of_the_wrong_problem_is_refused(bc_run, corpus, tmp_path, capsys):
    rc = main(["train", "--problem", "regalloc", "--algorithm", "es", "--corpus", str(corpus),
               "-o", str(tmp_path / "x"), "--warmstart", str(bc_run / "best")])
    assert rc == 2 and "not 'regalloc'" in capsys.readouterr().err


def test_policy_dir_runs_in_eval(bc_run, corpus, tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy",
                 str(bc_run / "best"), "--json", str(out), "--workers", "1"]) == 0
    assert len(json.loads(out.read_text())["modules"]) == len(SOURCES)
    assert Path(str(out).replace(".json", ".png")).is_file()


def test_a_broken_module_is_skipped_and_recorded(bc_run, corpus, tmp_path, caplog):
    """Training goes on when a module cannot be compiled; the run records which and why."""
    import shutil

    from corpus_tools.corpus import Corpus, write_description

    broken = tmp_path / "corpus"
    shutil.copytree(corpus, broken)
    (broken / "small" / "broken.c.bc").write_bytes(b"BC\xc0\xde" + b"\0" * 64)
    (broken / "small" / "broken.c.cmd").write_bytes(b"-c\0-O2")
    names = [m.name for m in Corpus.load(corpus).modules] + ["small/broken.c"]
    write_description(broken, names, llvm_version=toolchain.llvm_major())
    out = tmp_path / "es"
    assert main(["train", "--problem", "inlining", "--algorithm", "es", "--corpus", str(broken),
                 "-o", str(out), "--warmstart", str(bc_run / "best"), "--workers", "2",
                 "--validation-fraction", "0.34", "--gin_bindings", "es.ESConfig.iterations = 1",
                 "--gin_bindings", "es.ESConfig.directions = 2",
                 "--gin_bindings", "es.ESConfig.modules_per_iteration = 0"]) == 0
    state = json.loads(next((out / "checkpoints").glob("ckpt-*/state.json")).read_text())["state"]
    assert "small/broken.c" in state["failed_modules"]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["es/usable_modules"] >= 1
    assert log[-1]["skipped_modules"] == 1  # counted in the iteration it failed in...
    report = [r.getMessage() for r in caplog.records if "skipped:" in r.getMessage()]
    assert report and report[0].startswith("iteration 0: 1 module(s) failed and were skipped")
    assert "small/broken.c:" in report[0]  # ...and named, with the reason, at its end
