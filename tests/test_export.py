"""`mlgo export`: SavedModel + AOT + manifest (on each installed LLVM version: the manifest
records the compiler and its features), and the validation gate."""

import json

import pytest
from corpus_fixtures import on_each_llvm

from mlgo.cli.main import main
from mlgo.policies.policy_dir import save_policy
from mlgo.problems import get_problem


def _policy(tmp_path, name, relative_change):
    problem = get_problem("regalloc")
    net = problem.build_network(problem.header(), None)
    meta = {"algorithm": "es", "validation": {"policy_total": 100.0 * (1 + relative_change),
                                              "default_total": 100.0, "relative_change": relative_change}}
    return save_policy(tmp_path / name, net, net.init_params(1), meta)


def test_worse_policy_is_refused_then_flagged_with_force(tmp_path, capsys):
    pol = _policy(tmp_path, "worse", 0.02)
    assert main(["export", "--policy", str(pol), "-o", str(tmp_path / "out"), "--no-aot"]) == 2
    assert "worse than the default" in capsys.readouterr().err
    assert main(["export", "--policy", str(pol), "-o", str(tmp_path / "out"), "--no-aot", "--force"]) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["worse_than_default"] is True and m["artifacts"] == ["saved_model"]


@pytest.mark.slow
@on_each_llvm
def test_export_with_aot(tmp_path, llvm_version):
    pol = _policy(tmp_path, "better", -0.01)
    out = tmp_path / "out"
    assert main(["export", "--policy", str(pol), "-o", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["problem"] == "regalloc" and m["aot_class"] == "llvm::RegAllocEvictModel"
    assert m["compiler"].startswith(f"clang {llvm_version.major}.")
    assert {f["name"] for f in m["features"]} >= {"mask", "progress"}
    header = (out / "aot" / "model.h").read_text()
    assert "class RegAllocEvictModel" in header and "result_fetch_index_to_evict" in header
    assert (out / "saved_model" / "saved_model.pb").is_file()
