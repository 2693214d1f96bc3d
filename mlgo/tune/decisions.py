"""The decision table of a tune (mlgo/serving/decision_table.py): the search's best decisions,
per module and call site, which the exported plugin serves as they are, the policy answering
only where the table names nothing (modules the search did not finish, held-out and new code,
call sites the table does not know). So the build gets what the search found, the way a
profile-guided build replays its profile.

Tune's search compiles in LLVM's interactive mode, whose decisions carry no call site's name.
Each module's best decisions are therefore compiled once more through the plugin's training
channel (`--env plugin`'s environment, mlgo/compiler/plugin_env.py), answering the same
decisions in order: the plugin names each call site (caller, callee, ordinal), and the compile
must give the search's best .text bytes, or the module is left out of the table (with the
reason in the report). A search result that already names its call sites (searched with the
plugin) needs no compile.

A module's key is its source path relative to the project's source root; an earlier tune's
entries (`--previous`) stay in the table for modules this run has no search result for: their
call sites that still exist keep their answers, and the rebuild's decision summary counts how
many did (report: "hit rate")."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus_tools.corpus import Module
from mlgo.serving.decision_table import (
    SHAPE_FEATURES,
    Entry,
    load_table,
    make_table,
    module_key,
    write_table,
)
from mlgo.workers.tasks import ModuleOutcome, failed_outcome
from mlgo_base.errors import MlgoError

TABLE_FILE = "decisions.json"


@dataclass
class ReplayTask:
    """One module's best decisions, compiled through the plugin's channel to name their sites."""

    module: Module
    actions: list[int]
    best_total: float  # the search's .text bytes for them
    gin_config: str
    timeout: float
    plugin: str  # the plugin with no policy (mlgo.serving.plugin.channel_plugin)
    tag: int = 0


def run_replay_task(task: ReplayTask) -> ModuleOutcome:
    """In a worker: the compile of `task`; the outcome's extra["sites"] holds the entries, or
    it is not ok with the reason."""
    from mlgo.env import CompilerEnv, replay
    from mlgo.problems.inlining.problem import InliningForSize
    from mlgo.workers.tasks import CallSites, apply_gin

    t0 = time.monotonic()
    name = task.module.name
    try:
        apply_gin(task.gin_config)
        problem = InliningForSize(plugin=task.plugin)  # the rest as gin configures the search's
        env = CompilerEnv(problem, task.module, timeout=task.timeout, record=True)
        res = replay(env, list(task.actions))
        if res.measurement.total != task.best_total:
            return ModuleOutcome(name, False, error=f"the search's decisions compiled through the "
                                 f"plugin give {res.measurement.total:.0f} bytes, the search "
                                 f"measured {task.best_total:.0f}", tag=task.tag,
                                 seconds=time.monotonic() - t0)
        sites = CallSites.from_contexts(res.contexts)
        return ModuleOutcome(name, True, policy_total=res.measurement.total,
                             num_decisions=len(sites), seconds=time.monotonic() - t0,
                             extra={"sites": _entries(sites, task.actions, res.observations)},
                             tag=task.tag)
    except Exception as e:
        return failed_outcome(name, e, t0, task.tag)


def _entries(sites: Any, actions: Sequence[int], observations: Sequence[Any] | None = None
             ) -> list[Entry]:
    """Table entries: each site, its answer and, from the compile's observations, its shape."""
    import numpy as np

    if len(sites) != len(actions):
        raise MlgoError(f"{len(sites)} call site(s) named for {len(actions)} decision(s)")
    rows = [(c, d, int(o), int(a)) for c, d, o, a in
            zip(sites.caller, sites.callee, sites.ordinal, actions, strict=True)]
    if observations is None:
        return rows
    return [(*r, *(int(np.asarray(obs[f]).reshape(-1)[0]) for f in SHAPE_FEATURES))
            for r, obs in zip(rows, observations, strict=True)]


def relative_path(module: str, project: str) -> str:
    """A corpus module's source path relative to the project's root (the corpus names modules
    PROJECT/RELATIVE)."""
    return module_key(module.removeprefix(project + "/"))


def build_table(modules: Sequence[Module], search: Path, project: str, pool: Any, *, gin: str,
                timeout: float, previous: Path | None = None) -> tuple[dict[str, Any], dict]:
    """The table of every module with a search result in `search` (plus, with `previous`, an
    earlier tune's entries for modules this one has no result for). Returns the table document
    and what went into it: {"modules", "decisions", "from_previous", "left_out": {module:
    reason}}."""
    from mlgo.search_store import load_result, result_path
    from mlgo.serving.plugin import channel_plugin

    tables: dict[str, list[Entry]] = {}
    left_out: dict[str, str] = {}
    tasks: list[ReplayTask] = []
    plugin = None
    for m in modules:
        path = result_path(search, m.name)
        if not path.is_file():
            continue
        r = load_result(path, m.name)
        if r.actions is None:
            continue  # a module with no decision to make
        actions = [int(a) for a in r.actions]
        if r.call_sites is not None:  # searched through the plugin: it named the sites
            shapes = None
            if all(f in r.features for f in SHAPE_FEATURES):
                shapes = [{f: r.features[f][t] for f in SHAPE_FEATURES}
                          for t in range(len(actions))]
            tables[relative_path(m.name, project)] = _entries(r.call_sites, actions, shapes)
            continue
        plugin = plugin or str(channel_plugin())
        tasks.append(ReplayTask(m, actions, float(r.policy_total), gin, timeout, plugin,
                                tag=len(tasks)))
    for out in pool.run(tasks):
        if out.ok:
            tables[relative_path(out.module, project)] = [tuple(e) for e in out.extra["sites"]]
        else:
            left_out[out.module] = out.error.splitlines()[0]
    carried = 0
    if previous is not None and (previous / TABLE_FILE).is_file():
        for key, entries in load_table(previous / TABLE_FILE).items():
            if key not in tables:
                tables[key] = entries
                carried += 1
    doc = make_table(tables, project=project)
    return doc, {"modules": len(tables), "decisions": sum(len(v) for v in tables.values()),
                 "from_previous": carried, "left_out": left_out}


def write(out: Path, doc: dict[str, Any]) -> Path:
    path = out / TABLE_FILE
    write_table(path, doc)
    return path


def hit_rates(summary: Path, table: Mapping[str, Sequence[Entry]]) -> dict[str, Any]:
    """From a build's MLGO_DECISION_SUMMARY file: per module the table named, its decisions
    and how many the table answered; and the totals, with the decisions of modules it did
    not name (the policy's alone)."""
    rows: dict[str, dict[str, int]] = {}
    other = 0
    if not summary.is_file():
        return {"modules": {}, "table_decisions": 0, "decisions_in_table_modules": 0,
                "other_decisions": 0}
    for line in summary.read_text(errors="replace").splitlines():
        f = line.split("\t")
        if len(f) != 6 or f[0] != "inlining" or not f[3].isdigit():
            continue
        hits = [int(n[len("table="):]) for n in f[5].split(",") if n.startswith("table=")
                and n[len("table="):].isdigit()]
        if not hits:
            other += int(f[3])
            continue
        name = f[2]  # the module as the compile named it
        r = rows.setdefault(name, {"decisions": 0, "table": 0, "entries": 0})
        r["decisions"] += int(f[3])
        r["table"] += hits[0]
    for name, r in rows.items():
        r["entries"] = max((len(v) for k, v in table.items()
                            if name == k or name.endswith("/" + k)), default=0)
    return {"modules": rows, "table_decisions": sum(r["table"] for r in rows.values()),
            "decisions_in_table_modules": sum(r["decisions"] for r in rows.values()),
            "other_decisions": other}


def summary_line(stats: dict[str, Any]) -> str:
    return (f"decision table: {stats['modules']} module(s), {stats['decisions']} call sites"
            + (f" ({stats['from_previous']} module(s) from the earlier tune)"
               if stats.get("from_previous") else "")
            + (f"; {len(stats['left_out'])} left out ({json.dumps(stats['left_out'])[:300]})"
               if stats["left_out"] else ""))


# What serves the call sites outside the table when the policy would make them bigger: LLVM's
# own cost rule in the plugin, which compiles as plain -Oz does.
LLVM_RULE = "cost-threshold"


def change_on(eval_json: Path, project: str, keep: Any) -> tuple[float, int] | None:
    """The policy's .text change, from its evaluation (`mlgo eval`'s JSON), on the modules
    whose key `keep` accepts and where it made a decision, and their number; None when they
    hold no .text."""
    rows = [r for r in json.loads(eval_json.read_text())["modules"]
            if keep(relative_path(r["module"], project)) and r.get("decisions", 1) > 0]
    default = sum(r["default"] for r in rows)
    if default <= 0:
        return None
    return (sum(r["policy"] for r in rows) - default) / default, len(rows)


def policy_beyond_table(eval_json: Path, table_keys: set[str], project: str,
                        held_out: set[str] = frozenset()) -> dict[str, Any]:
    """Whether the policy should serve what the table does not name, from its evaluation on
    the tuned modules: its .text change on those the table does not name; when the table names
    them all, on the modules held out of its training (`held_out`, keys as the table's); only
    without either, on the modules it was trained on, where imitation flatters it. A policy
    that makes them bigger is replaced there by LLVM_RULE: {"serve": "policy" or LLVM_RULE,
    "change", "modules", "outside_table", "held_out"}."""
    outside = change_on(eval_json, project, lambda k: k not in table_keys)
    unseen = None if outside else change_on(eval_json, project, lambda k: k in held_out)
    change, n = outside or unseen or change_on(eval_json, project, lambda k: True) or (0.0, 0)
    return {"serve": LLVM_RULE if change > 0 else "policy", "change": change, "modules": n,
            "outside_table": outside is not None, "held_out": unseen is not None}


def basis_words(beyond: Mapping[str, Any]) -> str:
    """Which modules policy_beyond_table judged on, for a sentence about them."""
    if beyond.get("outside_table"):
        return "the table does not name"
    return "held out of its training" if beyond.get("held_out") else "it was trained on"
