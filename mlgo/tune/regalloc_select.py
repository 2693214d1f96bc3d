"""The measured selection of `mlgo tune --problem regalloc`: which hot modules the tuned policy
is served in.

The trace reward forecasts what a module's code executes on the training run from the plain
build's block profile. It is exact where the policy's code kept the profiled blocks; where
allocation rebuilt them (tail duplication and branch folding act on the registers chosen) the
profile cannot tell where the executions went, and the reward charges such a function's change
as a loss (mlgo/problems/regalloc/profile.py), which can be wrong either way. So the policy is
served only in the hot modules where it measurably lowered the
instructions of the training workload, measured on the real program under callgrind: the
build with the policy in every module against the build with none. Each source file is
compiled alone (mlgo-clang serves no policy to an LTO compile), so what a module's functions
execute depends on its own code only and the program's change is the sum of its modules';
the build serving the selection is measured afterwards, which checks that sum. A function two
modules define under one name cannot be told apart in the run and counts for neither.

The check workload never feeds the choice: only the training runs are read here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlgo_base.errors import MlgoError


def module_objects(build: Path, name: str, src: Path) -> dict[str, tuple[str, Path]]:
    """{module: (source as the compile command names it, object)} of a build, for the compiles
    of sources under `src` whose object exists; a module is `name/relative path`."""
    from mlgo.tune import project

    db = build / "compile_commands.json"
    srcs, _ = project.sources(db, root=src)
    raw = json.loads(db.read_text())
    out = {}
    for s in srcs:
        obj = project.object_of(s.entry)
        if s.relative is not None and obj is not None and obj.is_file():
            out[f"{name}/{s.relative}"] = (raw[s.index]["file"], obj)
    if not out:
        raise MlgoError(f"{db}: no compile of a source under {src} wrote an object file")
    return out


def owned_functions(objects: Mapping[str, Path]) -> dict[str, set[str]]:
    """The functions each module's object defines that no other module defines."""
    from mlgo.problems.regalloc.profile import defined_functions

    owners: dict[str, list[str]] = {}
    for module, obj in objects.items():
        for fn in defined_functions(obj):
            owners.setdefault(fn, []).append(module)
    out: dict[str, set[str]] = {m: set() for m in objects}
    for fn, mods in owners.items():
        if len(mods) == 1:
            out[mods[0]].add(fn)
    return out


def unpriced(plain_obj: Path, tuned_obj: Path, profile: Mapping[str, Mapping[int, Any]]
             ) -> tuple[int, int]:
    """What the trace reward cannot price in the tuned object, in profiled instructions:
    (those of blocks it no longer has, by block ID; those of functions whose blocks are not
    the plain object's, added or gone). The reward charges a missing block nothing and a new
    block nothing, and charges a kept block its profiled count even when the new blocks took
    its executions over."""
    from mlgo.problems.regalloc.profile import read_block_map

    before, after = read_block_map(plain_obj), read_block_map(tuned_obj)
    dropped = reshaped = 0
    for fn, prof in profile.items():
        if fn not in after:
            continue
        have = {b[0] for b in after[fn]}
        dropped += sum(b.executed for bid, b in prof.items() if bid not in have)
        if have != {b[0] for b in before.get(fn, ())}:
            reshaped += sum(b.executed for b in prof.values())
    return dropped, reshaped


def module_effects(hot: list[str], plain: Mapping[str, tuple[str, Path]],
                   tuned: Mapping[str, tuple[str, Path]], runs: Mapping[str, int],
                   tuned_runs: Mapping[str, int], forecast: Mapping[str, dict],
                   profile: Mapping[str, Mapping[str, Mapping[int, Any]]]
                   ) -> dict[str, dict[str, Any]]:
    """Per hot module: the instructions its functions executed on the training workload in
    the plain build and with the policy (`runs`, `tuned_runs`: instructions per function of
    the two callgrind runs), the reward's forecast (`forecast`: the evaluation's record per
    module) and what the forecast cannot price (unpriced)."""
    owned = owned_functions({m: o for m, (_, o) in plain.items()})
    out = {}
    for m in hot:
        fns = owned.get(m, set())
        before = sum(runs.get(f, 0) for f in fns)
        after = sum(tuned_runs.get(f, 0) for f in fns)
        f = forecast.get(m)
        out[m] = {
            "source": plain[m][0], "functions": len(fns), "plain": before, "tuned": after,
            "measured": after - before,
            "measured_change": (after - before) / before if before else 0.0,
            "forecast": (f["policy"] - f["default"]) if f else None,
            "forecast_change": f["relative_change"] if f else None,
            "dropped": None, "reshaped": None,
        }
        if m in tuned:
            out[m]["dropped"], out[m]["reshaped"] = unpriced(plain[m][1], tuned[m][1],
                                                             profile.get(m, {}))
    return out


def select(effects: Mapping[str, dict]) -> list[str]:
    """The modules whose functions executed fewer instructions with the policy, most gained
    first."""
    kept = [m for m, e in effects.items() if e["measured"] < 0]
    return sorted(kept, key=lambda m: effects[m]["measured"])


def measure_selection(basis: Any, tuned_build: Path, hot: dict, name: str, src: Path,
                      plain_run: dict, tuned_run: dict) -> dict[str, Any]:
    """The selection step for the policy made for `basis` (regalloc_policy.Basis) and served in
    every module of `tuned_build`: {"effects", "selected", "sources", "forecast"}."""
    from mlgo.problems.regalloc.profile import load_profile

    ev = json.loads((basis.base / "eval.json").read_text())
    forecast = {r["module"]: r for r in ev["modules"]}
    effects = module_effects(list(hot["modules"]), module_objects(basis.build, name, src),
                             module_objects(tuned_build, name, src),
                             plain_run["functions"], tuned_run["functions"], forecast,
                             load_profile(basis.base / "profile.json"))
    chosen = select(effects)
    return {"effects": effects, "selected": chosen,
            "sources": [effects[m]["source"] for m in chosen],
            "kept_measured": sum(e["measured"] for m, e in effects.items() if m in chosen)}
