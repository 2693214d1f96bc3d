"""The tune's report: report.json (every figure), report.md (the same for people) and
report.png (each linked binary's .text change against plain -Oz, and the time per step).

Sizes are measured on the two real builds (project.py): `binaries` are the linked executables
and shared libraries (CMake input), `objects` each compile's object file, split into the tuned
modules and the others (tests, excluded or held-out paths, generated files), so the figure on
code the search never saw stays separate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mlgo.tune import decisions
from mlgo_base.files import atomic_write_bytes, atomic_write_text
from mlgo_base.toolchain import clang_name


def change(before: float, after: float) -> float:
    return (after - before) / before if before else 0.0


def _pair_rows(before: dict[str, int], after: dict[str, int]) -> list[dict[str, Any]]:
    return [{"name": k, "plain": before[k], "plugin": after[k],
             "change": change(before[k], after[k])} for k in sorted(before) if k in after]


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    b = sum(r["plain"] for r in rows)
    a = sum(r["plugin"] for r in rows)
    return {"count": len(rows), "plain": b, "plugin": a, "change": change(b, a)}


def build_report(*, project: str, kind: str, budget: float, steps: dict[str, float],
                 binaries: tuple[dict[str, int], dict[str, int]] | None,
                 test_binary: Any, objects: tuple[dict[str, int], dict[str, int]],
                 tuned: set[str], search: dict[str, Any], evaluation: dict[str, Any],
                 tests: dict[str, Any], previous: dict[str, Any] | None,
                 outputs: dict[str, str], table: dict[str, Any] | None = None,
                 training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of the report. `table`: the decision table's stats (decisions.build_table),
    with "keys" (its modules' paths) and "hits" (decisions.hit_rates on the rebuild)."""
    doc: dict[str, Any] = {"project": project, "input": kind, "time_budget_seconds": budget,
                           "steps_seconds": steps, "total_seconds": sum(steps.values())}
    if binaries is not None:
        rows = _pair_rows(*binaries)
        for r in rows:
            r["test"] = bool(test_binary(r["name"]))
        doc["binaries"] = rows
        doc["binaries_total"] = _total([r for r in rows if not r["test"]])
        doc["test_binaries_total"] = _total([r for r in rows if r["test"]])
    mods = _pair_rows(*objects)
    for r in mods:
        r["tuned"] = r["name"] in tuned
    doc["modules"] = mods
    doc["tuned_modules_total"] = _total([r for r in mods if r["tuned"]])
    doc["other_modules_total"] = _total([r for r in mods if not r["tuned"]])
    if table is not None:
        keys = set(table["keys"])
        for r in mods:
            r["table"] = r["name"] in keys
        # Modules the table names (the searched decisions) and the rest, the policy's alone.
        doc["table_modules_total"] = _total([r for r in mods if r["table"]])
        doc["policy_modules_total"] = _total([r for r in mods if not r["table"]])
        doc["table"] = {k: v for k, v in table.items() if k != "keys"}
    doc.update(search=search, evaluation=evaluation, tests=tests, outputs=outputs)
    if training is not None:
        doc["training"] = training
    if previous is not None:
        doc["previous"] = previous
    return doc


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def markdown(doc: dict[str, Any]) -> str:
    s, e = doc["search"], doc["evaluation"]
    lines = [f"# mlgo tune: {doc['project']}", "",
             f"Input: {doc['input']}. Time budget {doc['time_budget_seconds'] / 60:.1f} min; "
             f"this run took {doc.get('run_seconds', 0) / 60:.1f} min; the steps took "
             f"{doc['total_seconds'] / 60:.1f} min in all (earlier runs' finished steps "
             "included).", ""]
    if "binaries" in doc:
        t = doc["binaries_total"]
        lines += [f"## Linked binaries, .text bytes (plain {clang_name()} -Oz vs -Oz + plugin: the "
                  "decision table and the policy)", "",
                  f"All non-test binaries: {t['plain']:,} -> {t['plugin']:,} ({_pct(t['change'])})",
                  "", "| binary | plain -Oz | plugin | change |", "|---|---:|---:|---:|"]
        lines += [f"| {r['name']}{' (test)' if r['test'] else ''} | {r['plain']:,} | "
                  f"{r['plugin']:,} | {_pct(r['change'])} |" for r in doc["binaries"]]
        lines.append("")
    tm, om = doc["tuned_modules_total"], doc["other_modules_total"]
    lines += ["## Object files, .text bytes", "",
              f"Tuned modules ({tm['count']}): {tm['plain']:,} -> {tm['plugin']:,} "
              f"({_pct(tm['change'])})",
              f"Modules not tuned (never searched nor trained on: tests, excluded or held-out "
              f"paths) ({om['count']}): {om['plain']:,} -> {om['plugin']:,} ({_pct(om['change'])})",
              "", "| module | tuned | plain -Oz | plugin | change |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {'yes' if r['tuned'] else 'no'} | {r['plain']:,} | "
              f"{r['plugin']:,} | {_pct(r['change'])} |" for r in doc["modules"]]
    if "table" in doc:
        t, tm, pm = doc["table"], doc["table_modules_total"], doc["policy_modules_total"]
        h = t.get("hits") or {}
        asked = h.get("decisions_in_table_modules", 0)
        lines += ["", "## Decision table (the searched decisions, served as they are)", "",
                  f"The plugin serves the search's best decisions at {t['decisions']:,} call "
                  f"sites of {t['modules']} module(s)"
                  + (f" ({t['from_previous']} module(s) from the earlier tune's table)"
                     if t.get("from_previous") else "")
                  + ("; the policy answers everywhere else"
                     + (f" (it changed .text by {_pct(t['beyond']['change'])} on the "
                        f"{t['beyond']['modules']} tuned module(s) "
                        f"{decisions.basis_words(t['beyond'])})" if "beyond" in t else "") + "."
                     if t.get("beyond", {}).get("serve", "policy") == "policy" else
                     f"; everywhere else LLVM's own rule ({t['beyond']['serve']}) answers, "
                     f"since the policy changed .text by {_pct(t['beyond']['change'])} on the "
                     f"{t['beyond']['modules']} tuned module(s)"
                     + f" {decisions.basis_words(t['beyond'])}"
                     + " (mlgo eval).")
                  + (f" Left out (their decisions did not compile to the search's bytes "
                     f"through the plugin): {', '.join(sorted(t['left_out']))}."
                     if t["left_out"] else ""),
                  f"In the build with the plugin the table answered {h.get('table_decisions', 0):,}"
                  f" of the {asked:,} decisions in the modules it names"
                  + (f" ({100 * h.get('table_decisions', 0) / asked:.1f}%)" if asked else "")
                  + f"; the {h.get('other_decisions', 0):,} decisions of the other modules "
                  "were not the table's.",
                  f"Modules the table names ({tm['count']}): {tm['plain']:,} -> "
                  f"{tm['plugin']:,} ({_pct(tm['change'])}); the others, outside the table "
                  f"({pm['count']}): {pm['plain']:,} -> {pm['plugin']:,} ({_pct(pm['change'])})"]
    lines += ["", "## Search and policy", "",
              f"Search: {s['modules']} module(s) with a result ({s['searched']} searched in this "
              f"run, {s.get('reused', 0)} reused from an earlier tune), {s['compiles']} compiles; "
              f"best decisions {_pct(-s['gain'])} as linked on those modules"
              + ("; stopped by the time budget with "
                 f"{len(s['unfinished'])} module(s) unsearched" if s["stopped_by_budget"] else ""),
              *_continuation_lines(s), *_training_lines(doc.get("training")),
              f"Policy on the tuned modules (mlgo eval): {_pct(e['relative_change'])} per object, "
              f"{_pct(e['linked_relative_change'])} as linked"
              + (f" (the earlier tune's policy, smaller on this code than the retrained one's "
                 f"{_pct(e['retrained']['linked_relative_change'])}: exported instead)"
                 if e.get("policy") == "earlier" else ""), ""]
    if doc.get("previous"):
        p = doc["previous"]
        lines += ["## Incremental re-tune", "",
                  f"Earlier tune: {p['dir']}. Modules unchanged (search results reused): "
                  f"{p['reused']} of {p['modules']}.",
                  f"The earlier policy alone on this code, without retraining or its decision table "
                  f"(the earlier plugin serves both): "
                  f"{_pct(p['old_policy']['linked_relative_change'])} as linked"
                  + (f" ({p['old_policy']['evaluated']} changed or new module(s) compiled with "
                     f"it, the others' rows from the earlier evaluation)."
                     if "evaluated" in p["old_policy"] else "."),
                  *([f"Changed modules started from the earlier answers: {w['starts']} "
                     f"({w['kept']:,} of {w['decisions']:,} call sites answered as before); the "
                     f"search's share: {doc['search'].get('share_seconds', 0):.0f} s."]
                    if (w := doc["search"].get("warm")) else []),
                  f"This run's policy: {_pct(e['linked_relative_change'])} as linked, in "
                  f"{doc['total_seconds'] / 60:.1f} min of steps.", ""]
    lines += ["## Tests", ""]
    if doc["tests"].get("command"):
        lines.append(f"`{doc['tests']['command']}` passed on the plain build "
                     f"({doc['tests']['plain_seconds']:.1f} s) and on the plugin build "
                     f"({doc['tests']['plugin_seconds']:.1f} s).")
    else:
        lines.append("No test command given (--test-command).")
    lines += ["", "## Time per step (seconds)", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in doc["steps_seconds"].items()]
    lines += ["", "## Outputs", ""] + [f"- {k}: {v}" for k, v in doc["outputs"].items()]
    return "\n".join(lines) + "\n"


def _continuation_lines(s: dict[str, Any]) -> list[str]:
    if "best" not in s:
        return []
    b = s["best"]
    lines = []
    if "continuation" in s:
        c = s["continuation"]
        lines.append(f"The greedy search ended before its share of the budget: the strong search "
                     f"continued from its best on {c['modules']} module(s) ({c['compiles']} "
                     f"compiles, {c['seconds'] / 60:.1f} min) and improved {b['improved']} of "
                     f"them by {b['bytes_beyond_first']:,.0f} bytes.")
    lines.append(f"The decision table's decisions (per module the best found): "
                 f"{_pct(-b['gain'])} as linked on {b['modules']} module(s).")
    return lines


def _training_lines(t: dict[str, Any] | None) -> list[str]:
    if not t or not t.get("rounds"):
        return []
    ran = ", ".join(f"{r['epochs']} of {r['of']}" for r in t["rounds"])
    plan = t.get("plan", {})
    return [f"Training (imitation of the greedy search's results): {len(t['rounds'])} round(s), "
            f"epochs {ran}"
            + (f" (planned {plan['epochs']} for {plan['decisions']:,} decisions, about "
               f"{plan['seconds'] / 60:.1f} min)" if plan else "")
            + ("; stopped by its deadline, the last completed epoch's policy kept"
               if t.get("stopped_by_deadline") else "") + "."]


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(Path(r["name"]).name, r["change"], "#4477aa") for r in doc.get("binaries", [])]
    rows += [(f"{label} ({t['count']} objects)", t["change"], color)
             for label, t, color in (("tuned modules", doc["tuned_modules_total"], "#228833"),
                                     ("not tuned", doc["other_modules_total"], "#999999"))
             if t["count"]]
    reach = doc["search"].get("reach") or []
    fig, axes = plt.subplots(1, 3 if reach else 2, figsize=(16 if reach else 11, 4))
    ax1, ax2 = axes[0], axes[1]
    ax1.barh([n for n, _, _ in rows][::-1], [100 * c for _, c, _ in rows][::-1],
             color=[c for _, _, c in rows][::-1])
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_xlabel(f".text change vs {clang_name()} -Oz (%)")
    ax1.set_title(f"{doc['project']}: binaries as linked, objects")
    steps = doc["steps_seconds"]
    ax2.barh(list(steps)[::-1] or ["-"], [v / 60 for v in steps.values()][::-1] or [0],
             color="#cc6677")
    ax2.set_xlabel("minutes")
    ax2.set_title("time per step")
    if reach:
        ax3 = axes[2]
        ax3.step([m for m, _ in reach], [100 * g for _, g in reach], where="post",
                 color="#228833")
        if "continuation" in doc["search"]:
            begun = doc["search"].get("search_seconds", 0.0) / 60
            ax3.axvline(begun, color="#999999", lw=0.8, ls="--")
        ax3.set_xlabel("minutes since the search began")
        ax3.set_ylabel("bytes saved, % of the tuned modules' -Oz .text")
        ax3.set_title("the search's reach (per object)")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write(doc: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(doc))
    plot(doc, out / "report.png")
