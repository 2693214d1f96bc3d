"""Flip margins of a residual policy (inlining.InliningNetworkConfig.residual,
regalloc.RegallocNetworkConfig.residual): the same policy leaving its rule (LLVM's cost
threshold, `default-rule`) only where another action wins by more than a margin m, written as
a policy directory of its own so `mlgo eval`, `mlgo export`, the plugin and mlgo-clang serve it
as any other. A margin is chosen on validation modules (the demo, benchmarks/flip_margin.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlgo.policies.policy_dir import load_policy, save_policy
from mlgo_base.errors import MlgoError

REPORT_FIELDS = ("policy_total", "default_total", "relative_change")


def validation_from_report(report: Mapping[str, Any], where: Path | str, problem: str) -> dict[str, Any]:
    """The policy-metadata validation record (what the export gate reads) of an
    `mlgo eval --problem PROBLEM --json` report on validation modules."""
    if report.get("problem") != problem or not all(k in report for k in REPORT_FIELDS):
        raise MlgoError(f"{where}: not an `mlgo eval --problem {problem}` report")
    out = {k: report[k] for k in REPORT_FIELDS}
    out["modules"] = len(report.get("modules", ()))
    out["failed"] = len(report.get("failures", ()))
    if "linked_relative_change" in report:
        out["linked_relative_change"] = report["linked_relative_change"]
    return out


def write_margin_policy(src: Path | str, dest: Path | str, margin: float,
                        validation: Mapping[str, Any] | None = None) -> Path:
    """`src`'s residual policy with its flip margin raised by `margin`, saved to `dest`. The
    training run's validation figure was for the unshifted parameters, so it is dropped; pass
    `validation` (validation_from_report) once the shifted policy is measured."""
    net, params, meta = load_policy(src)
    meta = {k: v for k, v in meta.items() if k != "validation"}
    meta.update(flip_margin=float(margin), flip_margin_of=str(Path(src).resolve()))
    if validation is not None:
        meta["validation"] = dict(validation)
    return save_policy(dest, net, net.with_flip_margin(params, margin), meta)
