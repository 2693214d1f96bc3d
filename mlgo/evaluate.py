"""Evaluating a policy against the default heuristic over a corpus: per-module and total
objective, a JSON report, a table and a plot.

Per project, sizes are also given as linking keeps them ("linked"): a COMDAT text group
(C++ inline functions, template instances) that several of the project's objects define is
counted once, at the size of its copy in the first object (by module name) that has it, as a
linker keeps the first. Plain .text counts in full. For problems whose measurements carry no
COMDAT breakdown the linked figures equal the plain ones."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus_tools.corpus import Corpus
from mlgo.compiler.measure import COMDAT_PREFIX
from mlgo.workers.pool import WorkerPool, run_with_progress
from mlgo.workers.tasks import ModuleOutcome, ModuleTask, PolicySpec
from mlgo_base.change import relative_change
from mlgo_base.files import atomic_write_bytes, atomic_write_text


def comdat_pairs(outcome: ModuleOutcome) -> dict[str, list[float]]:
    """{COMDAT group signature: [policy bytes, default bytes]} of one module's outcome."""
    return {k.removeprefix(COMDAT_PREFIX): [p, d] for k, (p, d) in outcome.per_function.items()
            if k.startswith(COMDAT_PREFIX)}


def linked_totals(modules: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per project {"policy", "default"} as linking keeps it (see the module docstring), from
    rows with "module", "project", "policy", "default" and "comdat" (comdat_pairs)."""
    out: dict[str, dict[str, float]] = {}
    seen: dict[tuple[str, int], set[str]] = {}
    for m in sorted(modules, key=lambda m: m["module"]):
        tot = out.setdefault(m["project"], {"policy": 0.0, "default": 0.0})
        for side, key in ((0, "policy"), (1, "default")):
            groups = seen.setdefault((m["project"], side), set())
            comdat = {g: v[side] for g, v in m.get("comdat", {}).items() if v[side] > 0}
            tot[key] += m[key] - sum(comdat.values())
            tot[key] += sum(v for g, v in comdat.items() if g not in groups)
            groups.update(comdat)
    return out


@dataclass
class EvalReport:
    problem: str
    policy: str
    objective: str
    modules: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def default_total(self) -> float:
        return sum(m["default"] for m in self.modules)

    @property
    def policy_total(self) -> float:
        return sum(m["policy"] for m in self.modules)

    @property
    def relative_change(self) -> float:
        """The policy's change over the whole corpus (mlgo_base/change.py): negative is better."""
        return relative_change(self.default_total, self.policy_total)

    def per_project(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for m in self.modules:
            p = out.setdefault(m["project"], {"default": 0.0, "policy": 0.0, "modules": 0})
            p["default"] += m["default"]
            p["policy"] += m["policy"]
            p["modules"] += 1
        for p in out.values():
            p["relative_change"] = relative_change(p["default"], p["policy"])
        return out

    def linked(self) -> dict[str, dict[str, float]]:
        """Per project {"policy", "default", "relative_change"} as linking keeps them."""
        out = linked_totals(self.modules)
        for p in out.values():
            p["relative_change"] = relative_change(p["default"], p["policy"])
        return out

    @property
    def linked_relative_change(self) -> float:
        """The policy's change over every project as linking keeps it."""
        projects = self.linked().values()
        return relative_change(sum(p["default"] for p in projects),
                               sum(p["policy"] for p in projects))

    def counts(self) -> dict[str, int]:
        worse = sum(m["policy"] > m["default"] for m in self.modules)
        better = sum(m["policy"] < m["default"] for m in self.modules)
        return {"better": better, "worse": worse, "same": len(self.modules) - worse - better}

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem, "policy": self.policy, "objective": self.objective,
            "default_total": self.default_total, "policy_total": self.policy_total,
            "relative_change": self.relative_change, "counts": self.counts(),
            "linked_relative_change": self.linked_relative_change, "linked": self.linked(),
            "projects": self.per_project(), "modules": self.modules, "failures": self.failures,
        }


def collect(problem: str, policy: str, objective: str, corpus: Corpus,
            outcomes: Iterable[ModuleOutcome]) -> EvalReport:
    project = {m.name: m.project for m in corpus.modules}
    rep = EvalReport(problem, policy, objective)
    for o in outcomes:
        if not o.ok:
            rep.failures.append({"module": o.module, "error": o.error})
            continue
        rep.modules.append({
            "module": o.module, "project": project.get(o.module, ""),
            "default": o.default_total, "policy": o.policy_total,
            "relative_change": relative_change(o.default_total, o.policy_total),
            "decisions": o.num_decisions, "seconds": round(o.seconds, 4),
            "comdat": comdat_pairs(o),
        })
    rep.modules.sort(key=lambda m: m["module"])
    return rep


def evaluate_policy(problem_name: str, policy: str, corpus: Corpus, pool: WorkerPool, *,
                    gin_config: str = "", timeout: float = 300.0,
                    label: str = "eval") -> EvalReport:
    """`policy` (a name or a policy directory, as `mlgo eval --policy` takes it) against the
    problem's default over every module of `corpus`, compiled by `pool`'s workers."""
    from mlgo.problems import get_problem

    problem = get_problem(problem_name)
    spec = PolicySpec.named(policy)
    if spec.builtin is not None:
        problem.heuristic(spec.builtin)  # unknown names fail here, not in every worker
    tasks = [ModuleTask(problem.name, m, spec, gin_config=gin_config, timeout=timeout)
             for m in corpus.modules]
    return collect(problem.name, policy, problem.objective, corpus,
                   run_with_progress(pool, tasks, label))


def format_table(rep: EvalReport, top: int = 10) -> str:
    # The linked column only where measurements carry COMDAT groups (inlining's .text).
    show = any(m.get("comdat") for m in rep.modules)
    linked = rep.linked()
    lines = [f"{rep.problem}: policy {rep.policy!r} vs default ({rep.objective}, smaller is better)"]
    lines.append(f"{'project':24s} {'modules':>7s} {'default':>14s} {'policy':>14s} {'change':>8s}"
                 + (f" {'linked':>8s}" if show else ""))
    for name, p in sorted(rep.per_project().items()):
        lines.append(f"{name or '-':24s} {p['modules']:7d} {p['default']:14.1f} {p['policy']:14.1f} "
                     f"{100 * p['relative_change']:+7.2f}%"
                     + (f" {100 * linked[name]['relative_change']:+7.2f}%" if show else ""))
    lines.append(f"{'TOTAL':24s} {len(rep.modules):7d} {rep.default_total:14.1f} "
                 f"{rep.policy_total:14.1f} {100 * rep.relative_change:+7.2f}%"
                 + (f" {100 * rep.linked_relative_change:+7.2f}%" if show else ""))
    if show:
        lines.append("linked: each COMDAT text group counted once per project, as linking keeps it")
    c = rep.counts()
    lines.append(f"modules better: {c['better']}, worse: {c['worse']}, same: {c['same']}, "
                 f"failed: {len(rep.failures)}")
    worst = sorted(rep.modules, key=lambda m: -m["relative_change"])[:top]
    worst = [m for m in worst if m["relative_change"] > 0]
    if worst:
        lines.append("largest regressions:")
        lines += [f"  {m['module']:50s} {100 * m['relative_change']:+7.2f}%" for m in worst]
    return "\n".join(lines)


def write_json(rep: EvalReport, path: Path) -> None:
    atomic_write_text(path, json.dumps(rep.to_json(), indent=1) + "\n")


def plot(rep: EvalReport, path: Path) -> None:
    """Histogram of per-module relative change, plus the sorted per-module curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    changes = [100 * m["relative_change"] for m in rep.modules]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.hist(changes, bins=40, color="#4477aa")
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_xlabel(f"per-module change in {rep.objective} vs default (%)")
    ax1.set_ylabel("modules")
    ax2.plot(sorted(changes), color="#cc6677")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlabel("modules, sorted")
    ax2.set_ylabel("change (%)")
    fig.suptitle(f"{rep.problem}: {rep.policy} — total {100 * rep.relative_change:+.2f}% "
                 f"over {len(rep.modules)} modules")
    fig.tight_layout()
    try:
        # Drawn into memory and written atomically: a full disk leaves no half a PNG.
        buf = io.BytesIO()
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
