"""The report of `mlgo tune --problem regalloc` (OUT/report.json and OUT/report.md): what each
workload was, the instructions each build executed on each (callgrind, the whole process) against
the plain build, clang's own PGO alone and with a policy tuned on the PGO build's code on top,
the hot spots (the functions that executed the most, before and after, a function's split-off
parts counted with it), the searches, each hot module's measured effect beside the reward's
forecast (regalloc_select.py) and the time each step took."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlgo_base.files import atomic_write_text

MAX_CHECK_LOSS = 0.001  # the check workload may be at most 0.1% worse for the policy to be used
HOT_SPOTS = 15  # functions listed per workload
LABELS = {"plain": "plain clang (same flags)", "tuned": "tuned eviction policy (every module)",
          "selected": "tuned policy in the measured modules only",
          "pgo": "clang PGO (instrumented, training workload)",
          "pgo-tuned": "PGO + policy tuned on the PGO build (every module)",
          "pgo-selected": "PGO + that policy in the measured modules only"}
# A part the compiler split off a function, named after it: hot/cold splitting's `f.cold.1`,
# machine function splitting's and GCC's `f.cold`, partial inlining's `f.part.0`.
SPLIT_PART = re.compile(r"^(.+?)\.(?:cold|part)(?:\.\d+)?$")


def fold_split_parts(functions: dict[str, int]) -> dict[str, int]:
    """Instructions per function with each split-off part (SPLIT_PART) added to the function it
    came from, so that a function reads the same whether or not a build split it."""
    out: dict[str, int] = {}
    for fn, n in functions.items():
        m = SPLIT_PART.match(fn)
        key = m.group(1) if m else fn
        out[key] = out.get(key, 0) + n
    return out


def change(base: float, new: float) -> float:
    """(new - base) / base: negative is fewer instructions."""
    return (new - base) / base if base else 0.0


def write_report(out: Path, o: Any, project: str, made: dict[str, dict],
                 measured: dict[str, dict], steps: dict[str, float], run_seconds: float
                 ) -> dict[str, Any]:
    """`made`: for "plain" (and "pgo"), the policy made for that build's code: its hot modules,
    search and evaluation as the steps recorded them."""
    plain = measured["plain"]
    table = {v: {w: {"instructions": r[w]["instructions"],
                     "change": change(plain[w]["instructions"], r[w]["instructions"]),
                     "own": r[w]["own"], "own_change": change(plain[w]["own"], r[w]["own"])}
                 for w in ("train", "check")} for v, r in measured.items()}
    # The build the tune recommends is the selection's (the policy where it measurably helped
    # on the training workload); worth using when it executes fewer instructions there and not
    # more on the other input.
    chosen = table["selected"] if "selected" in table else table["tuned"]
    verdict = ("use the selected policy" if chosen["train"]["change"] < 0
               and chosen["check"]["change"] <= MAX_CHECK_LOSS else "keep the plain build")
    spots = {}
    for w in ("train", "check"):
        folded = {v: fold_split_parts(r[w]["functions"]) for v, r in measured.items()}
        top = sorted(folded["plain"], key=folded["plain"].get, reverse=True)[:HOT_SPOTS]
        spots[w] = [{"function": fn, **{v: f.get(fn, 0) for v, f in folded.items()}}
                    for fn in top]
    policies = {b: {"hot_modules": m["hot"]["modules"], "search": m["search"],
                    "evaluation": m["evaluation"], "policy": m["policy"],
                    "selection": m.get("selection")}
                for b, m in made.items()}
    doc = {
        "project": project, "source": str(o.source), "program": o.program,
        "workloads": {"train": o.workload, "check": o.check_workload},
        "cmake_args": list(o.cmake_args), "policies": policies, "instructions": table,
        "verdict": verdict, "hot_spots": spots,
        "steps_seconds": steps, "run_seconds": run_seconds, "time_budget": o.time_budget,
        "outputs": {"policy": policies["plain"]["policy"], "report": str(out / "report.md"),
                    "tuned build": str(out / "build-tuned"),
                    **({"selected build": str(out / "build-selected"),
                        "compilers serving the selection": str(out / "compilers-selected")}
                       if (out / "compilers-selected").is_dir() else {}),
                    **({"policy for the PGO build": policies["pgo"]["policy"]}
                       if "pgo" in policies else {})},
    }
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(doc))
    return doc


def selection_lines(sel: dict[str, Any], code: str) -> list[str]:
    """The table of each hot module's measured effect beside the reward's forecast."""
    lines = ["", f"### Where the policy helped, measured ({code}, training workload)", "",
             "| module | reward's forecast | profiled, in blocks the tuned code dropped | "
             "profiled, in functions whose blocks changed | measured (instructions of its "
             "functions) | measured change | served |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for m, e in sel["effects"].items():
        fc = (f"{e['forecast']:+,.0f} ({100 * e['forecast_change']:+.2f}%)"
              if e["forecast"] is not None else "-")
        dropped, reshaped = (f"{e[k]:,}" if e.get(k) is not None else "-"
                             for k in ("dropped", "reshaped"))
        lines.append(f"| {m} | {fc} | {dropped} | {reshaped} | {e['measured']:+,} | "
                     f"{100 * e['measured_change']:+.2f}% | "
                     f"{'yes' if m in sel['selected'] else 'no'} |")
    lines += ["", "Measured: the instructions the module's functions executed on the training "
              "workload with the policy in every module against without (callgrind, whole "
              "program). The reward prices the tuned code on the plain build's blocks, exactly "
              "while they are kept; a function whose blocks changed (a profiled block that ran "
              "dropped, a block added, an empty block given code) is charged its change as a "
              "loss, as the profile cannot tell where the executions went. The two columns "
              "beside the forecast are the profiled instructions in blocks the tuned code "
              "dropped and in functions whose blocks changed (a forecast is exact where both "
              "are 0). The policy is served where the measured change is "
              f"negative (the kept modules' measured sum {sel['kept_measured']:+,} "
              "instructions); the check workload is not read for this."]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# mlgo tune --problem regalloc: {doc['project']} ({doc['program']})", "",
             f"Source: {doc['source']}" + (f", CMake arguments {' '.join(doc['cmake_args'])}"
                                          if doc["cmake_args"] else ""), "",
             "Workloads ($PROGRAM is the program built):", "",
             f"- training (profiled, searched and trained on): `{doc['workloads']['train']}`",
             f"- check (given before tuning, never trained on): `{doc['workloads']['check']}`",
             "", "Every build's output on both workloads was identical to the plain build's.", "",
             "## Instructions executed (callgrind, whole process)", "",
             "| build | training workload | change | (own code) | check workload | change "
             "| (own code) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v, r in doc["instructions"].items():
        lines.append(f"| {LABELS.get(v, v)} | " + " | ".join(
            f"{r[w]['instructions']:,} | {100 * r[w]['change']:+.3f}% | "
            f"{100 * r[w]['own_change']:+.3f}%" for w in ("train", "check")) + " |")
    lines += ["", "(own code: the instructions of the program's own functions, without the C "
              "library and the dynamic loader.)", "",
              f"Verdict: **{doc['verdict']}** (the policy served in the measured modules only: "
              "used when the training workload executes fewer instructions and the check "
              f"workload at most {100 * MAX_CHECK_LOSS:g}% more)."]
    if "pgo" in doc["instructions"] and "pgo-tuned" in doc["instructions"]:
        p, pt = doc["instructions"]["pgo"], doc["instructions"]["pgo-tuned"]
        lines += ["", "PGO + the policy tuned on the PGO build's code, against PGO alone: " + ", ".join(
            f"{w} {100 * change(p[w]['instructions'], pt[w]['instructions']):+.3f}%"
            for w in ("train", "check")) + "."]
        ps = doc["instructions"].get("pgo-selected")
        if ps:
            lines += ["", "PGO + that policy in the measured modules only, against PGO alone: "
                      + ", ".join(f"{w} {100 * change(p[w]['instructions'], ps[w]['instructions']):+.3f}%"
                                  for w in ("train", "check")) + "."]
    for b, p in doc["policies"].items():
        code = "the plain build's code" if b == "plain" else "the PGO build's code"
        lines += ["", f"## Hot modules searched ({code})", "",
                  "| module | share of the program's instructions (training run) |",
                  "|---|---:|"]
        lines += [f"| {m} | {100 * s:.1f}% |" for m, s in p["hot_modules"].items()]
        s = p["search"]
        lines += ["", f"Search: {s['modules']} module(s) with a result, {s['compiles']} "
                  f"compiles, trace cost of the best decisions {100 * s['change']:+.3f}% on "
                  "those modules" + (f"; stopped by the budget ({len(s['unfinished'])} "
                                     "unfinished)" if s["stopped_by_budget"] else "")
                  + f". The policy ({p['policy']}): trace cost "
                  f"{100 * p['evaluation']['change']:+.3f}% on the same modules."]
        if p.get("selection"):
            lines += selection_lines(p["selection"], code)
    for w, title in (("train", "training"), ("check", "check")):
        rows = doc["hot_spots"][w]
        if not rows:
            continue
        variants = [v for v in rows[0] if v != "function"]
        lines += ["", f"## Hot spots on the {title} workload (instructions per function, "
                  "split-off parts such as `f.cold` counted in `f`)", "",
                  "| function | " + " | ".join(variants) + " |",
                  "|---|" + "---:|" * len(variants)]
        for r in rows:
            lines.append(f"| `{r['function']}` | " + " | ".join(
                f"{r[v]:,}" + (f" ({100 * change(r['plain'], r[v]):+.2f}%)"
                               if v != "plain" and r["plain"] else "") for v in variants) + " |")
    lines += ["", "## Time", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in doc["steps_seconds"].items()]
    lines += ["", f"The steps took {sum(doc['steps_seconds'].values()) / 60:.1f} min in all; "
              f"this run (resumed or not) {doc['run_seconds'] / 60:.1f} min of a "
              f"{doc['time_budget'] / 60:.0f} min budget.", ""]
    return "\n".join(lines)
