"""How `mlgo tune` spends its time budget (mlgo/tune/flow.py, benchmarks/tune_budget_rule.md):
training planned from the decisions it will see and stopped by its deadline with the last
completed epoch kept, so the run ends within its budget; and the strong search continuing from
the greedy search's best when the greedy one ends before its share, resumable after kill -9,
its results served by the decision table (the better of the two per module) while the policy
learns from the greedy results."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from tune_project import (
    check_command,
    kill_tune_when,
    make_project,
    start_tune,
    tune_argv,
    tune_env,
)

from mlgo.cli.main import main

pytestmark = pytest.mark.slow



def _base(decisions: int, seconds: float = 1.0) -> dict:
    return {"modules": {"p/a.c": {"size": 1000, "seconds": seconds, "decisions": decisions}}}


def test_training_is_planned_from_its_decisions_and_capped_to_its_share_of_the_budget() -> None:
    from mlgo.tune import flow, learn

    learn.gin_config(1, None)  # own_project.gin: 1,500 epochs
    small = learn.train_plan(100, _base(100), 1, 3600.0, ())
    assert small["epochs"] == 1500 and small["seconds"] < learn.TRAIN_SHARE * 3600
    # 15,000 decisions x 1,500 epochs is far past its share of an hour: fewer epochs, planned
    # to fit it (muparser's training took 902 s where the old estimate said about 60).
    big = learn.train_plan(15000, _base(15000), 1, 3600.0, ())
    assert big["configured_epochs"] == 1500 and 100 <= big["epochs"] < 1500
    assert abs(big["seconds"] - learn.TRAIN_SHARE * 3600) < 5
    assert learn.train_plan(15000, _base(15000), 1, 300.0, ())["epochs"] == learn.MIN_EPOCHS
    # Epochs the user set are theirs; the estimate then says what they cost.
    bound = ("imitation.ImitationConfig.epochs = 1500",)
    learn.gin_config(1, None, bound)
    pinned = learn.train_plan(15000, _base(15000), 1, 3600.0, bound)
    assert pinned["epochs"] == 1500 and pinned["seconds"] > 900
    rest = flow.estimate_rest(_base(15000), {}, 1, False, pinned["seconds"])
    assert rest["train"] == pinned["seconds"]


@pytest.mark.usefixtures("isolated_cache")
def test_training_stops_at_its_deadline_and_the_run_ends_within_its_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from mlgo.tune import flow, learn

    # An estimate far below what training will take (20,000 epochs, minutes): only the deadline
    # keeps the run within its budget. No continuation of the search, to keep this short.
    monkeypatch.setattr(learn, "train_seconds", lambda *a: 5.0)
    monkeypatch.setattr(flow, "CONTINUE_MIN_SECONDS", 1e9)
    src, expected = make_project(tmp_path)
    out = tmp_path / "out"
    budget = 150.0
    t0 = time.monotonic()
    assert main(["tune", str(src), "-o", str(out), "--time-budget", f"{budget:.0f}s",
                 "--workers", "1", "--test-command", check_command(expected),
                 "--gin_bindings", "imitation.ImitationConfig.epochs = 20000"]) == 0
    wall = time.monotonic() - t0
    printed = capsys.readouterr().out
    trained = json.loads((out / "steps" / "train.json").read_text())
    (r,) = trained["rounds"]
    assert trained["stopped_by_deadline"] and r["stopped"] and 0 < r["epochs"] < 20000
    # The policy written is the last completed epoch's (the run's one checkpoint).
    log = [json.loads(x) for x in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["imitation/epochs"] == r["epochs"]
    assert (out / "train" / "policy").is_dir()
    assert "stopped by its deadline" in printed
    assert "stopped by its deadline" in (out / "report.md").read_text()
    doc = json.loads((out / "report.json").read_text())
    assert doc["run_seconds"] <= budget and wall <= budget + 10
    # The search ended early but the continuation's minimum was not left: none ran.
    search = json.loads((out / "steps" / "search.json").read_text())
    assert "continuation" not in search and not (out / flow.MORE_DIR).exists()


def test_the_strong_search_continues_from_the_greedy_best_and_resumes_after_kill(
        tmp_path: Path) -> None:
    from mlgo.search_store import load_result, result_path
    from mlgo.serving.decision_table import load_table

    src, expected = make_project(tmp_path)
    out = tmp_path / "out"
    argv = tune_argv(str(src), "-o", str(out), "--test-command", check_command(expected),
                     "--workers", "2", "--gin_bindings", "imitation.ImitationConfig.epochs = 30")
    more = out / "search-more"
    first = kill_tune_when(start_tune([*argv, "--time-budget", "4m"], tmp_path),
                           (more / "search.json").is_file, 150, "the continuation", settle=3)
    assert "the strong search continues from its best decisions" in first
    assert not (out / "steps" / "search.json").exists(), f"killed too late:\n{first}"
    greedy = {p: p.stat().st_mtime_ns for p in (out / "search" / "modules").rglob("*.npz")}
    assert len(greedy) == 5  # the greedy search had finished every module

    # Resumed with less time (the budget counts from each invocation): the greedy results are
    # kept as they were, the continuation runs in what is left of the search's share.
    again = subprocess.run([*argv, "--time-budget", "200s"], env=tune_env(tmp_path),
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in greedy.items())
    search = json.loads((out / "steps" / "search.json").read_text())
    cont, best = search["continuation"], search["best"]
    assert cont["modules"] + cont["earlier"] >= 4 and cont["compiles"] > 0
    # Per module the table serves the better of the greedy result and its continuation.
    table = load_table(out / "decisions.json")
    doc = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in doc["modules"]}
    improved = 0
    for path in (out / "search" / "modules").rglob("*.npz"):
        g = load_result(path)
        name = g.module
        c_path = result_path(more, name)
        c = load_result(c_path, name) if c_path.is_file() else None
        b = load_result(result_path(out / "search-best", name), name)
        want = min([g] + ([c] if c else []), key=lambda r: r.extra["best_objective"])
        assert b.policy_total == want.policy_total, name
        improved += b.policy_total < g.policy_total
        key = name.split("/", 1)[1]
        if key in table:
            assert rows[key]["plugin"] == b.policy_total, key
    assert improved == best["improved"]
    assert doc["run_seconds"] <= 200
    assert doc["search"]["reach"][-1][1] > 0
    # The policy learned from the greedy results: training read the greedy search directory.
    trace = json.loads((out / "train" / "vocab" / "inputs.json").read_text())
    assert trace["trace"] == str(out / "search")
