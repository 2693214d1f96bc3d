"""How far the inlining searches get from the optimum, on modules small enough to try every
decision vector:

    python benchmarks/exhaustive_inlining.py --corpus C [--corpus C2] --work DIR \\
        [--max-decisions 10] [--min-decisions 3] [--budget 40] [--workers 2] [--curve PNG]

Per module of the corpora whose anchor compile (LLVM's own answer at every call site the
interactive inliner asks about) asks between --min-decisions and --max-decisions: the whole
decision TREE is compiled (the call sites asked about depend on earlier answers, so each path is
a prefix replayed and then LLVM's answers; at most --max-leaves compiles, larger trees are
left out and counted), and the minimum .text is the optimum. The compiles are kept in
DIR/<module>.pkl, so a re-run reuses them.

The searches then run on the enumerated tree instead of the compiler: every compile they ask for
is a path of the tree already measured (compiles are deterministic), so each is charged as one
compile of the module's mean compile time, at the same --budget compiles per module (final
replay included): the greedy search of mlgo/search.py (FlipSearch, both directions, "all", and
one way, "inlined"), and the strong search of mlgo/search_strategy.py with and without
enumeration. --verify N checks the simulation: N modules' greedy and strong searches also run
on the real compiler and must end at the same size.

Prints per module: decisions, tree leaves, anchor .text, the best single flip, each search's
best, the optimum; then totals (% vs anchor, each search's share of the optimum's gain).
--curve writes the total gain of each search against minutes of compile time (every module
given the same number of compiles, 1 .. --budget) as a PNG, and --curve-data as JSON.
--schedule T... runs the strong search's corpus schedule (mlgo/search_schedule.py) with time
budgets of T seconds on the trees, one simulated worker. --cached-only takes only the modules
whose tree is already in DIR (no compiles).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from corpus_tools.corpus import Corpus, Module
from mlgo.search import Candidate, FlipSearch, SearchConfig, _key
from mlgo.search_schedule import strong_config, strong_outcomes
from mlgo.search_strategy import (
    ModuleOracle,
    Oracle,
    OutOfBudget,
    StrongConfig,
    StrongSearch,
    StrongState,
    Trajectory,
    prefix_answer,
)
from mlgo.workers.tasks import ModuleOutcome


class TreeOracle(Oracle):
    """Answers compiles from an enumerated decision tree instead of the compiler."""

    def __init__(self, leaves: list[Trajectory]) -> None:
        self.nodes: dict[tuple, tuple[tuple, int]] = {}
        self.leaves: dict[tuple, Trajectory] = {}
        for t in leaves:
            for k in range(len(t.actions)):
                self.nodes[tuple(t.actions[:k])] = (t.sigs[k], t.llvm[k])
            self.leaves[tuple(t.actions)] = t
        self.compiles = 0

    def run(self, answer) -> Trajectory:
        self.compiles += 1
        p: list[int] = []
        while tuple(p) in self.nodes:
            sig, d = self.nodes[tuple(p)]
            p.append(int(answer(len(p), sig, d)))
        if tuple(p) not in self.leaves:
            raise KeyError(f"path {p} is not in the enumerated tree")
        return self.leaves[tuple(p)]


class TreeFlipSearch(FlipSearch):
    """mlgo/search.py's greedy search, its compiles answered by a TreeOracle."""

    def __init__(self, module: Module, config: SearchConfig, tree: TreeOracle) -> None:
        super().__init__(module, config)
        self.tree = tree
        self.history: list[tuple[int, float]] = []  # (compiles, best objective so far)

    def candidate(self, prefix):
        hit = self._memo.get(_key(prefix))
        if hit is not None:
            self.reused += 1
            return hit
        self._spend()
        t = self.tree.run(prefix_answer(prefix))
        cand = Candidate(t.objective, t.size, list(t.actions), list(t.llvm),
                         margins=[(0.0,)] * len(t.actions), alts=[[1 - a] for a in t.actions])
        self._remember(prefix, cand, every_prefix=False)
        best = min(t.objective, self.history[-1][1]) if self.history else t.objective
        self.history.append((self.compiles, best))
        return cand

    def plain_replay(self, actions, reserve: int = 1):
        self._spend(reserve)
        return SimpleNamespace(measurement=SimpleNamespace(total=self.tree.leaves[tuple(actions)].size))


def enumerate_module(module: Module, max_leaves: int, timeout: float) -> dict:
    """The anchor's decisions and, if the tree has at most `max_leaves` paths, all of them."""
    oracle = ModuleOracle(module, timeout=timeout)
    t0 = time.monotonic()
    s = StrongSearch(oracle, StrongConfig())
    anchor = s.prefix([])
    out = {"module": module.name, "decisions": len(anchor.actions), "anchor": anchor}
    try:
        out["leaves"] = s.enumerate_tree(max_leaves)
    except OutOfBudget:
        out["leaves"] = None
    out["compiles"], out["seconds"] = s.state.compiles, time.monotonic() - t0
    return out


def _enumerate_job(args: tuple) -> dict:
    module, max_leaves, timeout, path, lo, hi = args
    if path.is_file():
        return pickle.loads(path.read_bytes())
    oracle = ModuleOracle(module, timeout=timeout)
    t0 = time.monotonic()
    anchor = oracle.run(prefix_answer([]))
    res = {"module": module.name, "decisions": len(anchor.actions), "anchor": anchor,
           "leaves": None, "compiles": 1, "seconds": time.monotonic() - t0}
    if lo <= len(anchor.actions) <= hi:
        res = enumerate_module(module, max_leaves, timeout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(res))
    return res


def run_searches(mod: Module, res: dict, budget: int) -> dict:
    """Every search on the module's tree at `budget` compiles; their bests and histories."""
    leaves: list[Trajectory] = res["leaves"]
    tree = TreeOracle(leaves)
    anchor = res["anchor"]
    row = {"module": mod.name, "decisions": res["decisions"], "leaves": len(leaves),
           "anchor": anchor.objective, "optimum": min(t.objective for t in leaves),
           "compile_s": res["seconds"] / max(res["compiles"], 1)}
    singles = [tree.run(prefix_answer([*anchor.actions[:k], 1 - anchor.actions[k]])).objective
               for k in range(len(anchor.actions))]
    row["single"] = min([anchor.objective, *singles])
    hist: dict[str, list[tuple[int, float]]] = {}
    for name, flips in (("greedy", "all"), ("greedy1", "inlined")):
        g = TreeFlipSearch(mod, SearchConfig(budget=budget, flips=flips), TreeOracle(leaves))
        _, best, _ = g.run()
        row[name], row[name + "_compiles"] = best.objective, g.compiles
        hist[name] = g.history
    for name, enum_max in (("strong", SearchConfig.enumerate_max), ("strong_moves", 0)):
        state = StrongState(seed=1)
        StrongSearch(TreeOracle(leaves), StrongConfig(budget=budget - 1, enumerate_max=enum_max),
                     state).run()
        assert state.best is not None
        row[name], row[name + "_compiles"] = state.best.objective, state.compiles + 1
        hist[name] = [(c, b) for c, _, b in state.history]
    row["history"] = hist
    return row


def verify(mod: Module, row: dict, budget: int, timeout: float) -> str:
    """The greedy and strong searches on the real compiler must end where the simulation did."""
    g = FlipSearch(mod, SearchConfig(budget=budget), timeout=timeout)
    _, best, _ = g.run()
    state = StrongState(seed=1)
    StrongSearch(ModuleOracle(mod, timeout=timeout),
                 StrongConfig(budget=budget - 1, enumerate_max=SearchConfig.enumerate_max),
                 state).run()
    assert state.best is not None
    ok = best.objective == row["greedy"] and state.best.objective == row["strong"]
    return (f"verify {mod.name}: greedy {best.objective:.0f} (simulated {row['greedy']:.0f}), "
            f"strong {state.best.objective:.0f} (simulated {row['strong']:.0f}): "
            f"{'same' if ok else 'DIFFERENT'}")


class TimedTreeOracle(TreeOracle):
    def __init__(self, leaves: list[Trajectory], pool: SimulatedPool, compile_s: float) -> None:
        super().__init__(leaves)
        self.pool, self.compile_s = pool, compile_s

    def run(self, answer) -> Trajectory:
        self.pool.now += self.compile_s
        return super().run(answer)


class SimulatedPool:
    """Runs StrongTasks on enumerated trees (one worker) under a simulated clock: each compile
    takes the module's mean measured compile time. For strong_outcomes' time-budget schedule."""

    workers = 1

    def __init__(self, trees: dict[str, tuple[list[Trajectory], float]]) -> None:
        self.trees = trees
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def run(self, tasks):
        for task in tasks:
            leaves, compile_s = self.trees[task.module.name]
            state = task.state or StrongState(seed=1)
            limits = (strong_config(task.config, task.seconds, state.compiles) if task.search
                      else StrongConfig(budget=1 if state.anchor is None else -1))
            search = StrongSearch(TimedTreeOracle(leaves, self, compile_s), limits, state,
                                  clock=self.clock)
            if limits.budget >= 0:
                search.run()
            out = ModuleOutcome(task.module.name, True, tag=task.tag)
            out.extra = {"state": state, "done": search.done}
            if task.finish:
                assert state.best is not None
                self.now += compile_s  # the plain replay
                out.policy_total = state.best.objective
            yield out


def scheduled(mods: list[Module], results: list[dict], seconds: float) -> tuple[float, float]:
    """strong_outcomes with a time budget on the simulated pool: (total best, seconds used)."""
    trees = {r["module"]: (r["leaves"], r["seconds"] / max(r["compiles"], 1)) for r in results}
    pool = SimulatedPool(trees)
    config = SearchConfig(strategy="strong", time_budget=seconds)
    total = sum(o.policy_total for o in strong_outcomes(mods, config, pool, clock=pool.clock,
                                                        min_slice=0.0))
    return total, pool.now


SEARCHES = (("single", "best single flip"), ("greedy", "greedy (all)"),
            ("greedy1", "greedy (one way)"), ("strong", "strong"),
            ("strong_moves", "strong, no enumeration"))


def table(rows: list[dict]) -> str:
    head = f"{'module':44s} {'dec':>3s} {'leaves':>6s} {'anchor':>7s}" + "".join(
        f" {k[:9]:>9s}" for k, _ in SEARCHES) + f" {'optimum':>8s}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['module'][:44]:44s} {r['decisions']:3d} {r['leaves']:6d} "
                     f"{r['anchor']:7.0f}" + "".join(f" {r[k]:9.0f}" for k, _ in SEARCHES)
                     + f" {r['optimum']:8.0f}")
    anchor = sum(r["anchor"] for r in rows)
    opt_gain = anchor - sum(r["optimum"] for r in rows)
    lines.append(f"{len(rows)} modules, anchor .text {anchor:.0f}; optimum "
                 f"{100 * -opt_gain / anchor:+.2f}% vs anchor")
    for k, label in SEARCHES:
        total = sum(r[k] for r in rows)
        comp = sum(r.get(k + "_compiles", 0) for r in rows)
        share = (anchor - total) / opt_gain if opt_gain else 1.0
        found = sum(r[k] == r["optimum"] for r in rows)
        lines.append(f"  {label:24s} {100 * (total - anchor) / anchor:+.2f}% vs anchor, "
                     f"{100 * share:5.1f}% of the optimum's gain, optimum on {found}/{len(rows)}"
                     + (f", {comp} compiles" if comp else ""))
    return "\n".join(lines)


def curve(rows: list[dict], budget: int) -> dict:
    """Per search: (minutes of compile time, % vs anchor) with every module given b compiles,
    b = 1 .. budget."""
    anchor = sum(r["anchor"] for r in rows)
    out: dict[str, list[tuple[float, float]]] = {}
    for k in ("greedy", "greedy1", "strong", "strong_moves"):
        pts = []
        for b in range(1, budget + 1):
            secs = total = 0.0
            for r in rows:
                h = [x for x in r["history"][k] if x[0] <= b]
                used = h[-1][0] if h else 1
                secs += used * r["compile_s"]
                total += h[-1][1] if h else r["anchor"]
            pts.append((secs / 60, 100 * (total - anchor) / anchor))
        out[k] = pts
    out["optimum"] = [(0.0, 100 * (sum(r["optimum"] for r in rows) - anchor) / anchor)]
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=80)
    labels = dict(SEARCHES)
    end = max(p[0] for pts in data.values() for p in pts)
    styles = {"greedy": ":", "greedy1": "-.", "strong": "-", "strong_moves": "--"}
    for k, pts in data.items():
        if k == "optimum":
            ax.axhline(pts[0][1], color="k", ls="--", lw=1, label="optimum (exhaustive)")
            continue
        # a search that stopped early keeps its best: drawn on to the end
        xs, ys = [p[0] for p in pts] + [end], [p[1] for p in pts] + [pts[-1][1]]
        ax.plot(xs, ys, styles[k], lw=2 if k == "greedy" else 1.3, label=labels[k])
    ax.set_xlabel("minutes of compile time (every module the same compiles)")
    ax.set_ylabel(".text vs LLVM's decisions (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", action="append", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path, help="enumerated trees (reused)")
    p.add_argument("--min-decisions", type=int, default=3)
    p.add_argument("--max-decisions", type=int, default=10)
    p.add_argument("--max-leaves", type=int, default=1024)
    p.add_argument("--budget", type=int, default=40, help="compiles per module for each search")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--cached-only", action="store_true",
                   help="only the modules whose tree is already in --work (no compiles)")
    p.add_argument("--verify", type=int, default=0, help="modules to re-run on the compiler")
    p.add_argument("--curve", type=Path, help="PNG of gain against compile minutes")
    p.add_argument("--curve-data", type=Path, help="the curve as JSON")
    p.add_argument("--json", type=Path, help="per-module rows as JSON")
    p.add_argument("--schedule", type=float, nargs="*", default=[],
                   help="also run the strong search's corpus schedule (simulated, one worker) "
                   "with these time budgets in seconds")
    args = p.parse_args()
    modules = [m for c in args.corpus for m in Corpus.load(c).modules]
    jobs = [(m, args.max_leaves, args.timeout,
             args.work / (m.name.replace("/", "__") + ".pkl"),
             args.min_decisions, args.max_decisions) for m in modules]
    if args.cached_only:
        jobs = [j for j in jobs if j[3].is_file()]
        modules = [j[0] for j in jobs]
    t0 = time.monotonic()
    with ProcessPoolExecutor(args.workers) as ex:
        results = list(ex.map(_enumerate_job, jobs))
    by_name = {m.name: m for m in modules}
    in_range = [r for r in results if args.min_decisions <= r["decisions"] <= args.max_decisions]
    too_big = [r for r in in_range if r["leaves"] is None]
    small = [r for r in in_range if r["leaves"] is not None]
    print(f"{len(modules)} modules; {len(in_range)} with {args.min_decisions}-"
          f"{args.max_decisions} decisions, {len(too_big)} of them with more than "
          f"{args.max_leaves} paths (left out); enumeration "
          f"{sum(r['compiles'] for r in results)} compiles, {time.monotonic() - t0:.0f}s",
          file=sys.stderr)
    rows = [run_searches(by_name[r["module"]], r, args.budget) for r in small]
    print(table(rows))
    anchor = sum(r["anchor"] for r in rows)
    opt_gain = anchor - sum(r["optimum"] for r in rows)
    for budget in args.schedule:
        total, used = scheduled([by_name[r["module"]] for r in small], small, budget)
        print(f"strong, corpus schedule, time budget {budget:.0f}s (simulated, 1 worker): "
              f"{100 * (total - anchor) / anchor:+.2f}% vs anchor, "
              f"{100 * (anchor - total) / opt_gain if opt_gain else 100.0:5.1f}% of the "
              f"optimum's gain, {used:.0f}s used")
    for r in rows[:args.verify]:
        print(verify(by_name[r["module"]], r, args.budget, args.timeout))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "history"}
                                         for r in rows], indent=1) + "\n")
    if args.curve or args.curve_data:
        data = curve(rows, args.budget)
        if args.curve_data:
            args.curve_data.write_text(json.dumps(data) + "\n")
        if args.curve:
            plot(data, args.curve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
