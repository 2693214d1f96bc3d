"""A re-tune with `--previous` (mlgo/tune/incremental.py) costs in proportion to what changed:
on the tiny generated project with one module changed, only that module is searched, from the
earlier answers, in a share bounded by what the earlier search spent on it; the earlier
policy's evaluation compiles only that module; training fine-tunes the earlier policy; and a
re-tune killed mid-search resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tune_project import (
    MODULES,
    check_command,
    kill_tune_when,
    make_project,
    start_tune,
    tune_argv,
    tune_env,
)

pytestmark = pytest.mark.slow



def test_fine_tune_epochs_follow_the_changed_decisions() -> None:
    from mlgo.tune import incremental

    base = {"modules": {"p/a.c": {"size": 1000, "seconds": 1.0, "decisions": 1000}}}
    plan = {"decisions": 1000, "epochs": 1500, "configured_epochs": 1500, "rounds": 3,
            "seconds": 100.0}
    half = incremental.fine_tune_plan(plan, 500, base, 1)
    assert half["epochs"] == 750 and half["rounds"] == 1 and half["fine_tune"]
    assert half["seconds"] < plan["seconds"] * 10  # (the estimate of one round, not three)
    assert incremental.fine_tune_plan(plan, 1, base, 1)["epochs"] == \
        incremental.FINE_TUNE_MIN_EPOCHS
    assert incremental.fine_tune_plan({**plan, "epochs": 30}, 1, base, 1)["epochs"] == 30


def test_the_share_counts_a_continuation_only_where_it_found_smaller_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlgo.search_store import save_result
    from mlgo.tune import incremental
    from mlgo.workers.tasks import ModuleOutcome

    monkeypatch.setattr(incremental, "earlier_modules",
                        lambda previous: {f"p/{m}.c": f"{m}.c" for m in "abc"})

    def result(sub: str, module: str, size: float, seconds: float) -> None:
        save_result(tmp_path / sub, ModuleOutcome(f"p/{module}.c", True, policy_total=size,
                                                  default_total=1000.0, seconds=seconds,
                                                  extra={"search_seconds": seconds}), "x")

    result("search", "a", 900.0, 10.0)
    result("search-more", "a", 880.0, 50.0)  # the continuation found smaller code: counted
    result("search", "b", 900.0, 5.0)
    result("search-more", "b", 900.0, 40.0)  # it found nothing: the budget's leftover
    result("search-more", "c", 990.0, 7.0)  # no greedy result to compare with: counted
    assert incremental.earlier_spend(tmp_path) == {"a.c": 60.0, "b.c": 5.0, "c.c": 7.0}
    bound = incremental.search_bound(tmp_path, ["p/b.c", "p/new.c"], "p", 1)
    mean = (60.0 + 5.0 + 7.0) / 3
    assert bound["earlier_seconds"] == round(5.0 + mean, 1) and bound["new"] == 1
    assert bound["seconds"] == round(incremental.SHARE_HEADROOM * (5.0 + mean), 1)


def test_unchanged_modules_keep_what_the_earlier_continuation_found(tmp_path: Path) -> None:
    from corpus_tools.corpus import Module
    from mlgo.search import SearchConfig, search_identity
    from mlgo.search_store import (
        load_result,
        module_fingerprint,
        result_path,
        reusable_results,
        save_result,
    )
    from mlgo.tune import incremental
    from mlgo.workers.tasks import ModuleOutcome

    earlier, out = tmp_path / "v1", tmp_path / "v2"
    for name, size in (("old/a", 880.0), ("old/b", 870.0)):
        save_result(earlier / "search-more", ModuleOutcome(name, True, policy_total=size,
                                                           default_total=1000.0), "earlier")
    root = tmp_path / "corpus"
    modules = [Module(f"new/{m}", root, "new") for m in "abc"]
    for m in modules:
        m.bc_path.parent.mkdir(parents=True, exist_ok=True)
        m.bc_path.write_bytes(m.name.encode())
        m.cmd_path.write_text("-Oz\n")
    # a and c unchanged (c's earlier search had no continuation), b changed.
    reused = {"new/a": "old/a", "new/c": "old/c"}
    more = out / "search-more"
    assert incremental.reuse_continuations(earlier, modules, reused, more, "", None) == 1
    assert load_result(result_path(more, "new/a"), "new/a").policy_total == 880.0
    assert not result_path(more, "new/b").exists() and not result_path(more, "new/c").exists()
    # The continuation of this run (another time budget) takes it as its own, valid result.
    want = search_identity(SearchConfig(passes=1, budget=0, strategy="strong",
                                        time_budget=300.0))
    assert set(reusable_results(more, {m.name: module_fingerprint(m, want)
                                       for m in modules})) == {"new/a"}
    # Called again (a resumed run): nothing copied twice.
    assert incremental.reuse_continuations(earlier, modules, reused, more, "", None) == 0


def test_a_retune_searches_only_the_changed_module_from_its_earlier_answers_and_resumes(
        tmp_path: Path) -> None:
    from mlgo.search_store import result_path
    from mlgo.tune import incremental

    src, expected = make_project(tmp_path)
    common = ["--test-command", check_command(expected), "--workers", "1",
              "--gin_bindings", "imitation.ImitationConfig.epochs = 30"]
    v1 = tmp_path / "tune-v1"
    first = subprocess.run(tune_argv(str(src), "-o", str(v1), "--time-budget", "4m", *common),
                           env=tune_env(tmp_path),
                           capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr

    # The next version: one library module gains a function; its call sites stay.
    src2 = tmp_path / "v2" / "proj"
    shutil.copytree(src, src2)
    changed = src2 / "lib" / "gen0.c"
    changed.write_text(changed.read_text() + "\nunsigned added(unsigned x) { return x * 7u; }\n")
    v2 = tmp_path / "tune-v2"
    argv = tune_argv(str(src2), "-o", str(v2), "--previous", str(v1), "--time-budget", "4m",
                     *common)
    warm_record = v2 / "steps" / "warm-starts.json"
    killed = kill_tune_when(start_tune(argv, tmp_path), warm_record.is_file, 200,
                            "the warm starts")
    assert not (v2 / "steps" / "search.json").exists(), f"killed too late:\n{killed}"
    warm_at = warm_record.stat().st_mtime_ns

    again = subprocess.run(argv, env=tune_env(tmp_path), capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert warm_record.stat().st_mtime_ns == warm_at  # the warm starts were not redone

    previous = json.loads((v2 / "steps" / "previous.json").read_text())
    assert previous["reused"] == MODULES  # all but lib/gen0.c (main.c too is unchanged)
    assert "proj/lib/gen0.c" not in previous["reused_modules"]
    # What the earlier policy keeps: only the changed module compiled with it.
    old = previous["old_policy"]
    assert old["evaluated"] == 1 and old["rows_reused"] == MODULES
    assert old["linked_default"] > 0

    search = json.loads((v2 / "steps" / "search.json").read_text())
    warm = search["warm"]
    # The changed module started from the earlier table's answers, most call sites kept.
    assert warm["starts"] == 1 and 0 < warm["kept"] <= warm["decisions"]
    assert warm["joined"] == 1 and warm["compiles"] > 0
    assert result_path(v2 / incremental.WARM_DIR, "proj/lib/gen0.c").is_file()
    # Nothing else was searched: the greedy search found every module's result in place.
    assert search["searched"] == 0 and search["skipped"] == MODULES + 1
    assert "continuation" not in search or search["continuation"]["modules"] <= 1
    # The share: at most what the earlier search spent on that module, with the headroom.
    spent = incremental.earlier_spend(v1)["lib/gen0.c"]
    assert search["share_seconds"] <= incremental.SHARE_HEADROOM * spent + 0.1
    first_search = json.loads((v1 / "steps" / "search.json").read_text())
    assert search["share_seconds"] < first_search["share_seconds"]
    # Training fine-tuned the earlier policy: one round.
    trained = json.loads((v2 / "steps" / "train.json").read_text())
    assert trained["plan"]["fine_tune"] and [r["round"] for r in trained["rounds"]] == [0]
    doc = json.loads((v2 / "report.json").read_text())
    assert doc["tests"]["plugin_seconds"] > 0
