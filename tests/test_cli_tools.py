"""`mlgo trace`, `mlgo vocab` and `mlgo eval` end to end on a small real corpus (eval on each
installed LLVM version)."""

import json

import numpy as np
import pytest
from corpus_fixtures import SOURCES, on_each_llvm

from mlgo.cli.main import main
from mlgo.policies.shipped import shipped_names
from mlgo.problems import PROBLEMS, get_problem
from mlgo.traces import read_trace, trace_dataset

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_trace_then_vocab(corpus, tmp_path):
    trace = tmp_path / "trace"
    assert main(["trace", "--problem", "inlining", "--corpus", str(corpus), "-o", str(trace),
                 "--workers", "2"]) == 0
    meta = json.loads((trace / "trace.json").read_text())
    assert meta["modules"] >= 1 and meta["decisions"] >= 3
    mods = list(read_trace(trace))
    calls = next(t for t in mods if t.module == "small/calls.c")
    # Traced with the default proxy: every recorded action is that proxy's label.
    np.testing.assert_array_equal(calls.actions, calls.default_actions)
    np.testing.assert_array_equal(
        calls.default_actions,
        (calls.features["cost_estimate"][:, 0] < calls.features["threshold"][:, 0]).astype(np.int64))
    assert sum(len(t) for t in mods) == meta["decisions"]
    # The same records through tf.data.
    assert sum(1 for _ in trace_dataset(trace)) == meta["modules"]

    vocab = tmp_path / "vocab"
    assert main(["vocab", str(trace), "-o", str(vocab), "--quantiles", "10"]) == 0
    bounds = [float(x) for x in (vocab / "cost_estimate.buckets").read_text().split()]
    assert bounds == sorted(bounds) and 1 <= len(bounds) <= 11
    values = np.concatenate([t.features["cost_estimate"].reshape(-1) for t in mods])
    assert bounds[0] == values.min() and bounds[-1] == values.max()


@on_each_llvm
def test_eval_reports_table_json_and_plot(corpus, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy", "never",
                 "--json", str(out), "--workers", "1"]) == 0
    rep = json.loads(out.read_text())
    assert len(rep["modules"]) == len(SOURCES) and rep["policy_total"] > rep["default_total"]
    assert rep["relative_change"] == pytest.approx(
        (rep["policy_total"] - rep["default_total"]) / rep["default_total"])
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert "TOTAL" in capsys.readouterr().out


def test_unknown_policy_and_bad_gin_are_clear_errors(corpus, capsys):
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy", "bogus"]) == 2
    err = capsys.readouterr().err
    # The error names what a policy may be: the problem's built-ins and the shipped policies.
    assert "unknown policy 'bogus'" in err and "cost-threshold" in err and "llvm-default" in err
    assert all(name in err for name in shipped_names())
    assert main(["eval", "--problem", "inlining", "--corpus", str(corpus), "--policy", "never",
                 "--gin_bindings", "inlining.InliningForSize.no_such_param = 3"]) == 2
    assert "bad gin configuration" in capsys.readouterr().err


def test_eval_help_lists_every_built_in_and_shipped_policy(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no line breaks inside a name like llvm-default
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = capsys.readouterr().out
    for problem in PROBLEMS:
        for name in get_problem(problem).heuristics():
            assert name in help_text, (problem, name)
    assert shipped_names() and all(name in help_text for name in shipped_names())


def test_every_flag_of_every_command_has_help():
    import argparse

    from mlgo.cli.main import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "mlgo")
    assert not missing, missing
