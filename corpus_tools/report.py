"""`mlgo corpus report`: IR statistics of a whole corpus, and corpus filters for training.

The statistics come from corpus_tools.ir_analysis (definitions in its docstring). Modules are
analysed in a process pool; a module that cannot be parsed is listed under "failures" and left
out of the totals instead of stopping the report.

Report layout (also the JSON written with --json):
    {"corpus": DIR, "modules": {NAME: {"project": P, <ModuleStats.to_dict()>}},
     "failures": {NAME: {"project": P, "error": MESSAGE}}, "summary": {"all": ROW, "projects": {P: ROW}},
     "decisions": {...}}   (with decisions: decision_table's result and their "source")

Decisions made under the inliner plugin name their caller and callee; `join_decisions` attaches
to each the call-graph facts (DECISION_FACTS) of the corpus module, and `decision_table` counts
where the decisions, and those that differ from the default (a search's flips), fall by them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import Corpus, Module
from corpus_tools.ir_analysis import (
    CALL_OPCODES,
    analyze_module,
    function_ir,
    parse_module,
    scc_heights,
    strongly_connected_components,
)
from corpus_tools.ir_liveness import DECISION, FunctionIR
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


def run_report(corpus_dir: Path, json_out: Path | None, jobs: int,
               decisions: tuple[str, Mapping[str, ModuleDecisions]] | None = None) -> int:
    """Analyse the corpus, print the summary table, write the JSON report if asked. With
    `decisions` (where they come from, and per module its ModuleDecisions), also the table of
    where those decisions and their flips fall by DECISION_FACTS.

    Modules that cannot be analysed are listed on stderr and skipped; the exit code is 1 only if
    the corpus has modules and none of them could be analysed."""
    corpus = Corpus.load(corpus_dir)
    report = analyze_corpus(corpus, jobs)
    print(format_table(report["summary"]))
    if decisions is not None:
        source, by_module = decisions
        table = decision_table(join_decisions(corpus, by_module, source), by_module)
        report["decisions"] = {"source": source, **table}
        print()
        print(format_decision_table(table, source))
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


# --------------------------------------------------------------------------------------------
# Decisions joined to the call graph of the module before optimization.
#
# A decision made under the inliner plugin names its call site's caller and callee (the plugin's
# context line, carried into traces and search results). The call graph of the corpus module,
# which is the frontend's output before any optimization, gives per pair the facts below. A
# caller or callee that the inliner made (a clone, a function renamed by an earlier pass) is not
# in that graph: such a decision is counted and listed as unmatched, never dropped.

# Facts per decision, all integers (1/0 for yes/no). Functions are the module's defined ones; a
# "direct call" is a call site whose called operand is the function (ir_analysis's decision point).
DECISION_FACTS: dict[str, str] = {
    "callee_callers": "defined functions with a direct call to the callee (itself included)",
    "callee_call_sites": "direct calls to the callee in the module",
    "callee_address_taken": "the callee is used other than as a called operand: passed, stored, "
                            "or in a global variable's initializer (not counted: globals named llvm.*, "
                            "such as llvm.used)",
    "callee_internal": "the callee has internal or private linkage",
    "callee_instructions": "the callee's IR instructions",
    "callee_blocks": "the callee's basic blocks",
    "callee_scc_size": "functions in the callee's strongly connected component",
    "callee_height": "the callee's height in the call graph (ir_analysis: leaves are 0)",
    "caller_instructions": "the caller's IR instructions",
    "caller_height": "the caller's height in the call graph",
    "same_scc": "caller and callee are in the same strongly connected component",
    "pair_call_sites": "direct calls from this caller to this callee",
}


@dataclass
class CallGraph:
    """The facts DECISION_FACTS draws on, for one module's defined functions by name."""

    instructions: dict[str, int]
    blocks: dict[str, int]
    internal: dict[str, bool]
    callers: dict[str, set[str]]
    pair_calls: dict[tuple[str, str], int]
    calls_to: dict[str, int]  # direct calls of each function, from all callers
    address_taken: set[str]
    scc: dict[str, int]  # function -> index of its SCC
    scc_size: dict[str, int]
    height: dict[str, int]

    def __contains__(self, function: str) -> bool:
        return function in self.instructions

    def facts(self, caller: str, callee: str) -> dict[str, int]:
        """DECISION_FACTS of a call from `caller` to `callee` (both must be in the graph)."""
        return {
            "callee_callers": len(self.callers[callee]),
            "callee_call_sites": self.calls_to[callee],
            "callee_address_taken": int(callee in self.address_taken),
            "callee_internal": int(self.internal[callee]),
            "callee_instructions": self.instructions[callee],
            "callee_blocks": self.blocks[callee],
            "callee_scc_size": self.scc_size[callee],
            "callee_height": self.height[callee],
            "caller_instructions": self.instructions[caller],
            "caller_height": self.height[caller],
            "same_scc": int(self.scc[caller] == self.scc[callee]),
            "pair_call_sites": self.pair_calls.get((caller, callee), 0),
        }


def call_graph(functions: Sequence[FunctionIR], linkage: Mapping[str, str] | None = None,
               address_taken: Iterable[str] = ()) -> CallGraph:
    """The CallGraph of `functions` (the defined ones); `linkage` by name as llvmlite spells it."""
    linkage = linkage or {}
    pair_calls: dict[tuple[str, str], int] = {}
    calls_to = {f.name: 0 for f in functions}
    callers: dict[str, set[str]] = {f.name: set() for f in functions}
    for f in functions:
        for block in f.blocks:
            for inst in block.instructions:
                if inst.call_kind == DECISION and inst.callee in callers:
                    pair_calls[(f.name, inst.callee)] = pair_calls.get((f.name, inst.callee), 0) + 1
                    calls_to[inst.callee] += 1
                    callers[inst.callee].add(f.name)
    graph = {f.name: sorted({g for (c, g) in pair_calls if c == f.name}) for f in functions}
    sccs = strongly_connected_components(graph)
    return CallGraph(
        instructions={f.name: sum(len(b.instructions) for b in f.blocks) for f in functions},
        blocks={f.name: len(f.blocks) for f in functions},
        internal={f.name: linkage.get(f.name, "") in ("internal", "private") for f in functions},
        callers=callers, pair_calls=pair_calls, calls_to=calls_to,
        address_taken=set(address_taken) & set(callers),
        scc={m: i for i, c in enumerate(sccs) for m in c},
        scc_size={m: len(c) for c in sccs for m in c},
        height=scc_heights(graph, sccs))


# A global's name in IR text (@name or @"quoted name"); quoted strings that are not names
# (c"..." data, section names, metadata strings) are removed first.
_GLOBAL_NAME = re.compile(r'@("[^"]*"|[-a-zA-Z$._0-9]+)')
_NOT_A_NAME = re.compile(r'(?<!@)"[^"]*"')
_NO_FUNCTIONS = frozenset({"argument", "basic_block", "instruction", "global_variable",
                           "constant_int", "constant_fp", "constant_pointer_null", "undef_value",
                           "poison_value", "constant_aggregate_zero", "constant_data_array",
                           "constant_data_vector", "constant_token_none", "metadata_as_value",
                           "inline_asm"})


def _names_in(text: str) -> set[str]:
    return {m.strip('"') for m in _GLOBAL_NAME.findall(_NOT_A_NAME.sub("", text))}


def module_call_graph(path: Path | str) -> CallGraph:
    """The CallGraph of a module file, read with llvmlite (CorpusError if it cannot be)."""
    module = parse_module(path)
    defined = {fn.name for fn in module.functions if not fn.is_declaration}
    functions, linkage, taken = [], {}, set()
    for fn in module.functions:
        if fn.is_declaration:
            continue
        functions.append(function_ir(fn, defined))
        linkage[fn.name] = fn.linkage.name
        for block in fn.blocks:
            for inst in block.instructions:
                operands = list(inst.operands)
                if inst.opcode in CALL_OPCODES and operands:
                    operands.pop()  # the called operand
                for op in operands:
                    kind = op.value_kind.name
                    if kind == "function":
                        taken.add(op.name)
                    elif kind not in _NO_FUNCTIONS:
                        taken |= _names_in(str(op)) & defined
    # Global variables (and aliases) from the module's text, printed once: printing each global
    # on its own costs a walk of the whole module per global.
    for line in str(module).splitlines():
        if line.startswith("@") and not line.startswith(("@llvm.", '@"llvm.')):
            taken |= _names_in(line.partition(" = ")[2]) & defined
    return call_graph(functions, linkage, taken)


@dataclass
class ModuleDecisions:
    """One module's decisions in order, each with its call site (from a trace or a search's
    results) and the decision made beside the one taken (`default_actions`)."""

    callers: list[str]
    callees: list[str]
    ordinals: list[int]
    actions: list[int]
    default_actions: list[int]


UNMATCHED = -1  # a fact's value for a decision whose caller or callee is not in the graph


@dataclass
class JoinedDecisions:
    """DECISION_FACTS per decision, by module: `facts[module][name]` has one value per decision,
    UNMATCHED where `matched[module]` is False."""

    facts: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    matched: dict[str, list[bool]] = field(default_factory=dict)
    # (module, caller, callee, ordinal, what the graph lacks) per unmatched decision
    unmatched: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    unanalysed: dict[str, str] = field(default_factory=dict)  # module -> why llvmlite could not

    @property
    def decisions(self) -> int:
        return sum(len(m) for m in self.matched.values())


def join_decisions(corpus: Corpus, decisions: Mapping[str, ModuleDecisions],
                   source: str = "the decisions") -> JoinedDecisions:
    """Attach to every decision of `decisions` the DECISION_FACTS of its caller and callee in
    the corpus module's call graph. MlgoError if a module is not in `corpus`; a module llvmlite
    cannot read has all its decisions unmatched, with the reason in `unanalysed`."""
    by_name = {m.name: m for m in corpus.modules}
    missing = sorted(set(decisions) - set(by_name))
    if missing:
        raise MlgoError(f"{source}: module {missing[0]} is not in the corpus {corpus.root}"
                        + (f" (nor {len(missing) - 1} other(s))" if len(missing) > 1 else ""))
    joined = JoinedDecisions()
    for name in sorted(decisions):
        d = decisions[name]
        graph: CallGraph | None = None
        try:
            graph = module_call_graph(by_name[name].bc_path)
        except MlgoError as e:
            joined.unanalysed[name] = str(e)
        columns: dict[str, list[int]] = {f: [] for f in DECISION_FACTS}
        matched: list[bool] = []
        for caller, callee, ordinal in zip(d.callers, d.callees, d.ordinals, strict=True):
            lacks = ("the module's analysis" if graph is None else
                     " and ".join(w for w, f in (("caller", caller), ("callee", callee)) if f not in graph))
            facts = graph.facts(caller, callee) if not lacks and graph is not None else None
            matched.append(facts is not None)
            if facts is None:
                joined.unmatched.append((name, caller, callee, ordinal, lacks))
            for f in DECISION_FACTS:
                columns[f].append(UNMATCHED if facts is None else facts[f])
        joined.facts[name], joined.matched[name] = columns, matched
    return joined


def _bucket(value: int) -> tuple[int, str]:
    """Buckets that keep small counts apart: 0, 1, 2, 3-4, 5-8, 9-16, ..."""
    if value <= 2:
        return value, str(value)
    hi = 1 << (value - 1).bit_length()
    return hi, f"{hi // 2 + 1}-{hi}"


def decision_table(joined: JoinedDecisions, decisions: Mapping[str, ModuleDecisions]) -> dict:
    """Per fact and bucket of its value: matched decisions, how many were inlined (action 1) and
    how many differ from the default action (the flips); plus the totals and the unmatched."""
    tables: dict[str, dict[str, dict[str, int]]] = {}
    flips = inlined = 0
    for fact in DECISION_FACTS:
        rows: dict[tuple[int, str], dict[str, int]] = {}
        for name, columns in joined.facts.items():
            d = decisions[name]
            for i, ok in enumerate(joined.matched[name]):
                if not ok:
                    continue
                row = rows.setdefault(_bucket(columns[fact][i]),
                                      {"decisions": 0, "inlined": 0, "flipped": 0})
                row["decisions"] += 1
                row["inlined"] += d.actions[i] == 1
                row["flipped"] += d.actions[i] != d.default_actions[i]
        tables[fact] = {label: rows[(k, label)] for k, label in sorted(rows)}
    for name in joined.facts:
        d = decisions[name]
        flips += sum(a != b for a, b in zip(d.actions, d.default_actions, strict=True))
        inlined += sum(a == 1 for a in d.actions)
    unmatched_flips = sum(decisions[m].actions[i] != decisions[m].default_actions[i]
                          for m, ok in joined.matched.items() for i, good in enumerate(ok) if not good)
    return {"decisions": joined.decisions, "inlined": inlined, "flipped": flips,
            "unmatched": len(joined.unmatched), "unmatched_flipped": unmatched_flips,
            "unanalysed": joined.unanalysed,
            "unmatched_sites": [{"module": m, "caller": c, "callee": g, "ordinal": o, "missing": w}
                                for m, c, g, o, w in joined.unmatched],
            "facts": tables}


def format_decision_table(table: dict, source: str, max_unmatched: int = 10) -> str:
    lines = [f"decisions of {source}: {table['decisions']} ({table['inlined']} inlined, "
             f"{table['flipped']} differ from the default action)",
             f"not in the call graph before optimization: {table['unmatched']} decision(s) "
             f"({table['unmatched_flipped']} of them flipped), left out of the table below"]
    for site in table["unmatched_sites"][:max_unmatched]:
        lines.append(f"  {site['module']}: {site['caller']} -> {site['callee']} "
                     f"#{site['ordinal']}: no {site['missing']}")
    if table["unmatched"] > max_unmatched:
        lines.append(f"  ... and {table['unmatched'] - max_unmatched} more (all in --json)")
    rows = [("fact", "value", "decisions", "inlined", "flipped", "flip %")]
    for fact, buckets in table["facts"].items():
        for label, row in buckets.items():
            rate = f"{100 * row['flipped'] / row['decisions']:.1f}" if row["decisions"] else "-"
            rows.append((fact, label, str(row["decisions"]), str(row["inlined"]),
                         str(row["flipped"]), rate))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    body = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    body.insert(1, "-" * len(body[0]))
    return "\n".join(lines + [""] + body)
