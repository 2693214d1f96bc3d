"""The demo (`mlgo tune` on a project, held-out modules reported apart, the program built with
the plugin and run) end to end on a tiny generated CMake project instead of lua5.4."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from tune_project import make_project

from mlgo.cli.demo import run_demo
from mlgo.lua_demo import DemoProject, held_out

pytestmark = pytest.mark.slow


def test_held_out_is_every_fifth_file_from_the_third() -> None:
    files = [f"src/{c}.c" for c in "kjihgfedcba"]
    assert held_out(files) == ["src/c.c", "src/h.c"]


@pytest.mark.usefixtures("isolated_cache")
def test_the_demo_runs_end_to_end_on_a_small_project(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src, expected = make_project(tmp_path / "gen")

    def cmake_source(work: Path) -> Path:
        shutil.copytree(src, work / "src", dirs_exist_ok=True)
        return work / "src"

    project = DemoProject(name="gen", cmake_source=cmake_source, program="app", run_args=(),
                          expected_output=expected, held_out=lambda tree: ["lib/gen3.c"])
    out = tmp_path / "demo"

    # 3 minutes: the greedy search leaves less of its share than the strong continuation
    # needs, so none runs here (tests/test_tune_budget.py tests it).
    changes = run_demo(out, project, workers=2, time_budget=180.0,
                       gin_bindings=("imitation.ImitationConfig.epochs = 30",))

    printed = capsys.readouterr().out
    assert set(changes) == {"binary", "tuned", "held_out", "policy"}
    assert all(math.isfinite(v) for v in changes.values())
    # The held-out module took no part in the search or the training ...
    corpus = json.loads((out / "tune" / "corpus" / "corpus_description.json").read_text())
    assert corpus["modules"] and not any("gen3" in m for m in corpus["modules"])
    assert not any("gen3" in p.name for p in (out / "tune" / "search").rglob("*.npz"))
    # ... and is reported on its own, from the two builds' objects.
    rows = {r["name"]: r for r in json.loads((out / "tune" / "report.json").read_text())["modules"]}
    gen3 = rows["lib/gen3.c"]
    assert gen3["tuned"] is False
    assert changes["held_out"] == pytest.approx((gen3["plugin"] - gen3["plain"]) / gen3["plain"])
    assert "held-out modules (1, never searched nor trained on)" in printed
    # The program was built with the plugin, ran, and printed what -O0 prints.
    assert f"app runs: {expected}  (checked)" in printed
    assert "-fpass-plugin=" in (out / "tune" / "build-plugin" / "compile_commands.json").read_text()
