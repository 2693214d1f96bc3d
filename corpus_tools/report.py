"""`mlgo corpus report`: IR statistics of a whole corpus, and corpus filters for training.

The statistics come from corpus_tools.ir_analysis (definitions in its docstring). Modules are
analysed in a process pool; a module that cannot be parsed is listed under "failures" and left
out of the totals instead of stopping the report.

Report layout (also the JSON written with --json):
    {"corpus": DIR, "modules": {NAME: {"project": P, <ModuleStats.to_dict()>}},
     "failures": {NAME: {"project": P, "error": MESSAGE}}, "summary": {"all": ROW, "projects": {P: ROW}}}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from corpus_tools.corpus import Corpus, Module
from corpus_tools.ir_analysis import analyze_module
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text

# (module name, module statistics as a dict or None, failure message or None)
_Outcome = tuple[str, dict | None, str | None]


def _analyze_one(name: str, bc_path: str) -> _Outcome:
    try:
        return name, analyze_module(bc_path, name).to_dict(), None
    except MlgoError as e:
        return name, None, str(e)
    except Exception as e:  # one odd module must not lose the whole report
        return name, None, f"{bc_path}: analysis failed ({type(e).__name__}: {e})"


def _run_in_pool(modules: Sequence[Module], jobs: int,
                 on_done: Callable[[_Outcome], None]) -> None:
    """Analyse modules in `jobs` processes. If LLVM kills a worker (an abort inside the bitcode
    reader), the modules that were in flight are retried one per fresh process so only the
    culprit is reported as failed."""
    pending = list(modules)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures: dict[Future, Module] = {
            pool.submit(_analyze_one, m.name, str(m.bc_path)): m for m in pending}
        unfinished = []
        for future, module in futures.items():
            try:
                on_done(future.result())
            except BrokenProcessPool:
                unfinished.append(module)
    for module in unfinished:
        try:
            with ProcessPoolExecutor(max_workers=1) as alone:
                on_done(alone.submit(_analyze_one, module.name, str(module.bc_path)).result())
        except BrokenProcessPool:
            on_done((module.name, None,
                     f"{module.bc_path}: the analysis process died (LLVM aborted on this module)"))


def analyze_corpus(corpus: Corpus, jobs: int = 1) -> dict:
    """Per-module and per-function statistics of every module, failures, and the summary."""
    outcomes: dict[str, _Outcome] = {}

    def keep(outcome: _Outcome) -> None:
        outcomes[outcome[0]] = outcome

    if jobs <= 1 or len(corpus.modules) <= 1:
        for m in corpus.modules:
            keep(_analyze_one(m.name, str(m.bc_path)))
    else:
        _run_in_pool(corpus.modules, min(jobs, len(corpus.modules)), keep)

    modules: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    for m in corpus.modules:  # corpus order, whatever order the workers finished in
        _, stats, error = outcomes[m.name]
        if stats is None:
            failures[m.name] = {"project": m.project, "error": error or "unknown failure"}
        else:
            modules[m.name] = {"project": m.project, **stats}
    report = {"corpus": str(corpus.root), "modules": modules, "failures": failures}
    report["summary"] = summarize(report)
    return report


def _summary_row(module_stats: Sequence[dict], failures: int) -> dict:
    pressures = [f["max_pressure"] for m in module_stats for f in m["functions"]]
    return {
        "modules": len(module_stats),
        "failed": failures,
        "functions": len(pressures),
        "decision_points": sum(m["decision_points"] for m in module_stats),
        "external_calls": sum(m["external_calls"] for m in module_stats),
        "instructions": sum(f["instructions"] for m in module_stats for f in m["functions"]),
        "max_pressure": max(pressures, default=0),
        "mean_pressure": round(sum(pressures) / len(pressures), 2) if pressures else 0.0,
        "max_height": max((m["max_height"] for m in module_stats), default=0),
    }


def summarize(report: dict) -> dict:
    """Totals over the corpus and per project ("mean_pressure" is the mean over functions of
    each function's max_pressure)."""
    by_project: dict[str, list[dict]] = {}
    for stats in report["modules"].values():
        by_project.setdefault(stats["project"], []).append(stats)
    failed_by_project: dict[str, int] = {}
    for failure in report["failures"].values():
        failed_by_project[failure["project"]] = failed_by_project.get(failure["project"], 0) + 1
    projects = sorted(set(by_project) | set(failed_by_project))
    return {
        "all": _summary_row(list(report["modules"].values()), len(report["failures"])),
        "projects": {p: _summary_row(by_project.get(p, []), failed_by_project.get(p, 0))
                     for p in projects},
    }


_COLUMNS = [("modules", "modules"), ("failed", "failed"), ("functions", "functions"),
            ("decision_points", "decisions"), ("external_calls", "ext.calls"),
            ("max_pressure", "max.press"), ("mean_pressure", "mean.press"),
            ("max_height", "height")]


def format_table(summary: dict) -> str:
    rows = [("project", *(title for _, title in _COLUMNS))]
    for project, row in summary["projects"].items():
        rows.append((project or "(none)", *(str(row[key]) for key, _ in _COLUMNS)))
    rows.append(("all", *(str(summary["all"][key]) for key, _ in _COLUMNS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def run_report(corpus_dir: Path, json_out: Path | None, jobs: int) -> int:
    """Analyse the corpus, print the summary table, write the JSON report if asked.

    Modules that cannot be analysed are listed on stderr and skipped; the exit code is 1 only if
    the corpus has modules and none of them could be analysed."""
    corpus = Corpus.load(corpus_dir)
    report = analyze_corpus(corpus, jobs)
    print(format_table(report["summary"]))
    if report["failures"]:
        print(f"{len(report['failures'])} module(s) could not be analysed and were skipped:",
              file=sys.stderr)
        for failure in report["failures"].values():
            print(f"  {failure['error']}", file=sys.stderr)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=1) + "\n")
        print(f"report: {json_out}")
    return 1 if corpus.modules and not report["modules"] else 0


# --------------------------------------------------------------------------------------------
# Filters for training.


def filter_modules(stats: dict, min_decision_points: int = 1) -> list[str]:
    """Names of the analysed modules with at least `min_decision_points` inlining decisions
    (failed modules are dropped too). `stats` is analyze_corpus's result."""
    return [name for name, m in stats["modules"].items()
            if m["decision_points"] >= min_decision_points]


def rank_functions_by_pressure(stats: dict) -> list[tuple[str, str, int]]:
    """(module, function, max_pressure) for every analysed function, highest pressure first;
    ties in (module, function) name order, so the ranking is reproducible."""
    rows = [(module, f["name"], f["max_pressure"])
            for module, m in stats["modules"].items() for f in m["functions"]]
    rows.sort(key=lambda r: (-r[2], r[0], r[1]))
    return rows
