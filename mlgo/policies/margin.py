"""Flip margins of a residual policy (inlining.InliningNetworkConfig.residual,
regalloc.RegallocNetworkConfig.residual): the same policy leaving its rule (LLVM's cost
threshold, `default-rule`) only where another action wins by more than a margin m, written as
a policy directory of its own so `mlgo eval`, `mlgo export`, the plugin and mlgo-clang serve it
as any other. A margin is chosen on validation modules only (`mlgo margin --choose-on`, the demo):
the one whose policy changes the objective least (most negative change), on a tie the larger
margin (fewer flips for the same result)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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


def margin_policy_dir(out: Path | str, margin: float) -> Path:
    """Where a margin's policy is written under `out`: OUT/margin-M."""
    return Path(out) / f"margin-{margin:g}"


def check_margins(margins: Iterable[float]) -> list[float]:
    """The margins, distinct and sorted; MlgoError for none or a non-finite one (a negative
    margin is allowed: the policy then leaves its rule more often)."""
    ms = sorted(set(float(m) for m in margins))
    if not ms:
        raise MlgoError("no flip margin given")
    bad = [m for m in ms if not math.isfinite(m)]
    if bad:
        raise MlgoError(f"flip margin {bad[0]:g}: a margin is a finite number")
    return ms


def choose_margin(changes: Mapping[float, float], worst: Mapping[float, float] | None = None,
                  limit: float | None = None) -> float:
    """The margin whose relative change (negative is better) is lowest; on a tie, the larger.
    With `limit`, only margins whose `worst` change (e.g. of any one program) is at most
    `limit` qualify; MlgoError when none does."""
    if not changes:
        raise MlgoError("no flip margin was measured")
    allowed = [m for m in changes if limit is None or worst is None or worst[m] <= limit]
    if not allowed:
        raise MlgoError(f"every flip margin makes something worse by more than {100 * limit:g}% "
                        f"(the least: {100 * min(worst.values()):+.3f}%)")
    return min(allowed, key=lambda m: (changes[m], -m))


def choose_flip_margin(src: Path | str, out: Path | str, margins: Iterable[float],
                       evaluate: Callable[[Path], Mapping[str, Any]],
                       problem: str) -> tuple[float, dict[float, dict[str, Any]]]:
    """Write `src` at each margin (margin_policy_dir), measure each with `evaluate` (a policy
    directory -> its `mlgo eval --json` report on validation modules), and record the chosen
    margin's report as its policy's validation figure. Returns (chosen margin, reports)."""
    reports: dict[float, dict[str, Any]] = {}
    for m in check_margins(margins):
        policy = write_margin_policy(src, margin_policy_dir(out, m), m)
        reports[m] = dict(evaluate(policy))
    chosen = choose_margin({m: float(r["relative_change"]) for m, r in reports.items()})
    where = margin_policy_dir(out, chosen)
    write_margin_policy(src, where, chosen,
                        validation_from_report(reports[chosen], where, problem))
    return chosen, reports
