"""Which regalloc reward tracks executed instructions? For the training programs of
mlgo/problems/regalloc/programs.py (its split was fixed before any of this was measured), each
program is built plain (clang-19) and through the launcher with each policy, and its workload
runs under callgrind with per-function counts kept. Per module (one object of the program) and
variant it reports:

- Ir: instructions executed in the module's own functions (every executed address in each
  function's range; exact, since an eviction choice changes only its own module's code),
- static: the remark spill+reload+copy cost summed over the module's functions (the reward
  policies were trained on; each function counts as if called once),
- weighted: each function's remark cost times its call count in the *plain* build's run
  (mlgo/problems/regalloc/profile.py),
- trace: the basic-block trace cost (profile.trace_cost): every build is compiled with
  -fbasic-block-address-map; each of the variant's blocks costs what the block with its ID
  executed in the *plain* build's run (callgrind --dump-instr=yes), plus its entry count per
  instruction gained or lost.

weighted and trace are rewards a training run can compute from a compile and a stored profile,
without running the program (callgrind gives a position-independent program's instruction
addresses as link-time ones, so they match llvm-objdump's).

It prints the Pearson and Spearman correlations of the change (policy minus plain) in each
reward with the change in Ir, over modules and over whole programs, and writes everything
measured as JSON. The profile and corpus training reads come from `mlgo profile programs`,
which builds and runs the plain programs the same way.

Usage: python benchmarks/regalloc_reward.py [--program P]... [--policy P]... [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from regalloc_programs import BenchError, ranks

from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.problems.regalloc.profile import (
    BlockProfile,
    CallgrindProfile,
    block_instructions,
    block_profile,
    defined_functions,
    function_instructions,
    instruction_addresses,
    read_block_map,
    read_callgrind,
    trace_cost,
    weighted_cost,
)
from mlgo.problems.regalloc.program_profiles import BB_FLAGS
from mlgo.problems.regalloc.programs import (
    KNOWN,
    RECIPES,
    TRAINING,
    Runner,
    build,
    project_of,
    tree_of,
)
from mlgo.serving.launcher import launcher_for
from mlgo_base import toolchain
from mlgo_base.change import relative_change
from mlgo_base.errors import MlgoError

# Modules below this share of the program's plain Ir are left out of the module-level
# correlation (their changes are a few instructions either way).
MIN_SHARE = 0.001


KINDS = ("static", "weighted", "trace")


def run_variant(program: str, exe: Path, work: Path) -> CallgrindProfile:
    run = Runner(program, profile_dir=work / "callgrind", callgrind_args=("--dump-instr=yes",))
    (work / "run").mkdir(parents=True, exist_ok=True)
    output = RECIPES[program].workload(exe, work / "run", run)
    if output != KNOWN[program]:
        raise BenchError(program, "checking the output", f"got {output!r}, expected {KNOWN[program]!r}")
    prof = CallgrindProfile()
    for f in sorted((work / "callgrind").glob("*.cg")):
        prof.add(read_callgrind(f, exe))
    return prof


def variant_dir(tmp: Path, program: str, label: str) -> Path:
    return tmp / f"{project_of(program)}-{label.replace('/', '_')}"


def measure_program(program: str, variants: list[tuple[str, str, dict[str, str]]],
                    tmp: Path) -> dict:
    recipe = RECIPES[program]
    tree = tree_of(program, recipe)
    recipe = dataclasses.replace(recipe, extra=recipe.extra + BB_FLAGS)
    project = project_of(program)
    modules: dict[str, dict] = {}
    plain_calls: dict[str, int] = {}
    plain_blocks: dict[str, dict[int, BlockProfile]] = {}
    plain_ids: dict[str, set[int]] = {}
    owner: dict[str, list[str]] = {}
    result: dict = {"modules": modules, "variants": {}}
    for label, cc, env in variants:
        out = variant_dir(tmp, program, label)
        exe = out / "build" / "prog"
        if (out / "measured").exists():  # --workdir of an earlier run: its builds and profiles
            prof = CallgrindProfile()
            for f in sorted((out / "callgrind").glob("*.cg")):
                prof.add(read_callgrind(f, exe))
        else:
            shutil.rmtree(out, ignore_errors=True)
            exe = build(program, recipe, tree, cc, env, out / "build")
            prof = run_variant(program, exe, out)
            (out / "measured").touch()
        instr = prof.instructions
        blocks = read_block_map(exe)
        addrs = instruction_addresses(exe)
        ninstr = block_instructions(blocks, addrs)
        costs_of = {rel: parse_regalloc_remarks(y).per_function if (
            y := out / "build" / (rel.replace("/", "_") + ".yaml")).exists() else {}
            for rel in recipe.sources}
        if label == "plain":
            plain_blocks = block_profile(blocks, addrs, instr)
            plain_ids = {fn: set(bbs) for fn, bbs in ninstr.items()}
            plain_calls = prof.calls
            for rel in recipe.sources:
                obj = out / "build" / (rel.replace("/", "_") + ".o")
                for fn in defined_functions(obj):
                    owner.setdefault(fn, []).append(rel)
        trace = trace_cost(ninstr, plain_blocks)
        changed = sum(1 for fn, bbs in ninstr.items()
                      if fn in plain_blocks and set(bbs) != plain_ids.get(fn))
        # Ground truth: every instruction the run executed in each function's address range.
        executed = function_instructions(blocks, addrs, instr)
        total_ir = sum(instr.values())
        result["variants"][label] = {"ir": total_ir, **dict.fromkeys(KINDS, 0.0)}
        for rel in recipe.sources:
            costs = costs_of[rel]
            # A name defined by two modules (static functions) cannot be told apart in the
            # profile: such functions count for the program, not for a module.
            fns = {fn for fn, mods in owner.items() if mods == [rel]}
            m = modules.setdefault(f"{project}/{rel}", {})
            m[label] = {
                "ir": sum(executed.get(fn, 0) for fn in fns),
                "static": sum(costs.values()),
                "weighted": weighted_cost(costs, plain_calls),
                "trace": sum(trace.get(fn, 0.0) for fn in fns),
            }
            for key in KINDS:
                result["variants"][label][key] += m[label][key]
        v = result["variants"][label]
        print(f"  {label:12s} Ir {v['ir']:>14,d}  static {v['static']:14.0f}  "
              f"weighted {v['weighted']:14.0f}  trace {v['trace']:14.0f}  ({changed} executed "
              "functions whose blocks changed)", flush=True)
    return result



def correlations(xs: list[float], ys: list[float]) -> str:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return "n/a (too few distinct points)"
    return (f"Pearson r = {statistics.correlation(xs, ys):+.3f}, "
            f"Spearman rho = {statistics.correlation(ranks(xs), ranks(ys)):+.3f} (n = {len(xs)})")


def report(results: dict[str, dict], policies: list[str]) -> dict[str, str]:
    lines: dict[str, str] = {}
    print(f"\n{'program':18s}{'policy':>12s}{'Ir':>10s}" + "".join(f"{k:>10s}" for k in KINDS))
    for program, r in results.items():
        base = r["variants"]["plain"]
        for p in policies:
            v = r["variants"][p]
            d = {k: 100 * relative_change(base[k], v[k]) for k in ("ir", *KINDS)}
            print(f"{program:18s}{p:>12s}{d['ir']:+9.3f}%"
                  + "".join(f"{d[k]:+9.3f}%" for k in KINDS))
    subsets = [("all policies", policies)]
    if len(policies) > 1:
        subsets += [(f"{p} only", [p]) for p in policies]
    if "never" in policies and len(policies) > 2:
        subsets.append(("all but never", [p for p in policies if p != "never"]))
    for subset, pols in subsets:
        # Programs: relative changes (%); modules: absolute ones (instructions, cost units).
        pts: dict[str, tuple[list[float], list[float]]] = {}
        for r in results.values():
            base = r["variants"]["plain"]
            for p in pols:
                for k in KINDS:
                    xs, ys = pts.setdefault(f"program {k}, {subset}", ([], []))
                    xs.append(relative_change(base[k], r["variants"][p][k]))
                    ys.append(relative_change(base["ir"], r["variants"][p]["ir"]))
            floor = MIN_SHARE * base["ir"]
            for m in r["modules"].values():
                if m["plain"]["ir"] < floor:
                    continue
                for p in pols:
                    for k in KINDS:
                        xs, ys = pts.setdefault(f"module {k}, {subset}", ([], []))
                        xs.append(m[p][k] - m["plain"][k])
                        ys.append(m[p]["ir"] - m["plain"]["ir"])
        for key, (xs, ys) in pts.items():
            lines[key] = correlations(xs, ys)
    candidate_sets = [["plain", *policies]]
    if "never" in policies and len(policies) > 1:
        candidate_sets.append(["plain", *(p for p in policies if p != "never")])
    for labels in candidate_sets:
        print(f"\nper module, the variant of {{{', '.join(labels)}}} each reward ranks best (ties: "
              "plain first), and the program's Ir if every module were compiled that way, vs plain:")
        print(f"{'program':18s}" + "".join(f"{k + ' pick':>15s}" for k in ("Ir (oracle)", *KINDS)))
        for program, r in results.items():
            base = r["variants"]["plain"]["ir"]
            line = f"{program:18s}"
            for k in ("ir", *KINDS):
                delta = 0
                for m in r["modules"].values():
                    best = min(range(len(labels)),
                               key=lambda i, m=m, k=k, labels=labels: (m[labels[i]][k], i))
                    delta += m[labels[best]]["ir"] - m["plain"]["ir"]
                change = 100 * relative_change(base, base + delta)
                line += f"{change:+14.3f}%"
                lines[f"pick {k} of {'/'.join(labels)}, {program}"] = f"{change:+.3f}%"
            print(line)
    print("\nchange in reward vs change in executed instructions:")
    for k, v in lines.items():
        if not k.startswith("pick"):
            print(f"  {k:40s} {v}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", action="append", choices=sorted(RECIPES),
                    help=f"only these programs (default: the training programs {', '.join(TRAINING)})")
    ap.add_argument("--policy", action="append",
                    help="regalloc policies to build with (default: proxy, regalloc, never)")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--workdir", type=Path,
                    help="keep the builds and callgrind files here (default: a temporary "
                    "directory); a variant already measured there is read, not rebuilt")
    args = ap.parse_args()
    programs = args.program or list(TRAINING)
    policies = args.policy or ["proxy", "regalloc", "never"]
    os.environ.pop("MLGO_INLINE_POLICY", None)
    variants = [("plain", toolchain.clang().path, dict(os.environ))]
    for p in policies:
        os.environ["MLGO_REGALLOC_POLICY"] = p
        try:
            variants.append((p, launcher_for("clang"), dict(os.environ)))
        except MlgoError as e:
            raise SystemExit(f"policy {p}: building its launcher failed: {e}") from None
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mlgo-rreward-") as tmp:
        if args.workdir:
            tmp = str(args.workdir)
        for program in programs:
            print(f"\n{program}", flush=True)
            results[program] = measure_program(program, variants, Path(tmp))
    lines = report(results, policies)
    if args.json:
        args.json.write_text(json.dumps({"policies": policies, "programs": results,
                                         "correlations": lines}, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except MlgoError as e:
        raise SystemExit(f"error: {e}") from None
