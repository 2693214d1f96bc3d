"""What a regalloc policy does to real programs: several programs from Debian source packages,
each compiled from the package's own compile commands (its -O2 flags, as recorded by
`mlgo corpus debian` in the build cache) three ways: plain clang-19 (the default eviction
advisor), through mlgo-clang's native launcher with MLGO_REGALLOC_POLICY=proxy, and with
MLGO_REGALLOC_POLICY=regalloc (the shipped policy), plus any policy given with --policy.

Each build runs a fixed, deterministic, CPU-bound workload under callgrind. Reported per program
and variant: callgrind's instruction count (Ir, summed over the workload's runs) and the
block-frequency-weighted spill cost summed over the build's objects' regalloc remarks (as
mlgo/problems/regalloc/problem.py measures it). The workload's output must be the same for
every variant and equal to its known value (programs.KNOWN); then the correlation between spill-cost
change and instruction change over all (program, policy) pairs is printed.

The programs, their recipes and workloads are mlgo/problems/regalloc/programs.py's.
Needs the build cache: mlgo corpus debian lua5.4 bzip2 zlib lz4 jq pcre2 libzstd expat \
libyaml jsonnet libpng1.6 giflib -o CORPUS
Usage: python benchmarks/regalloc_programs.py [--program bzip2]... [--policy DIR]...
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.problems.regalloc.programs import KNOWN, RECIPES, Runner, build, tree_of
from mlgo.serving.launcher import launcher_for
from mlgo_base import toolchain
from mlgo_base.change import relative_change
from mlgo_base.errors import MlgoError


class BenchError(SystemExit):
    """One clear line naming the program and the step that failed."""

    def __init__(self, program: str, step: str, detail: str) -> None:
        super().__init__(f"{program}: {step} failed: {detail.strip()[-1500:]}")


def spill_cost(out: Path) -> float:
    return sum(parse_regalloc_remarks(y).total for y in out.glob("*.yaml"))


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share their mean rank), for Spearman's coefficient."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", action="append", choices=sorted(RECIPES),
                    help="only these programs (default: all)")
    ap.add_argument("--policy", action="append", default=[],
                    help="another regalloc policy directory, after proxy and regalloc")
    ap.add_argument("--no-shipped", action="store_true",
                    help="leave out proxy and regalloc (plain and the --policy ones only)")
    ap.add_argument("--smoke", action="store_true",
                    help="build plain only and run the workloads without callgrind")
    args = ap.parse_args()
    programs = args.program or list(RECIPES)
    policies = [] if args.smoke else [*([] if args.no_shipped else ["proxy", "regalloc"]),
                                      *args.policy]
    os.environ.pop("MLGO_INLINE_POLICY", None)  # measure eviction only
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load}")
    variants = [("plain", toolchain.clang().path, dict(os.environ))]
    for p in policies:
        # The launcher serves the policies set when it is built: one launcher per policy.
        os.environ["MLGO_REGALLOC_POLICY"] = p
        try:
            launcher = launcher_for("clang")
        except MlgoError as e:
            raise SystemExit(f"policy {p}: building its launcher failed: {e}") from None
        variants.append((p, launcher, dict(os.environ)))
    results: dict[str, dict[str, tuple[int, float]]] = {}
    noise: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mlgo-rprog-") as tmp:
        for program in programs:
            recipe = RECIPES[program]
            tree = tree_of(program, recipe)
            print(f"\n{program}: {tree.name}, {len(recipe.sources)} sources", flush=True)
            outputs = {}
            for label, cc, env in variants:
                out = Path(tmp) / f"{program.split()[0]}-{label.replace('/', '_')}"
                exe = build(program, recipe, tree, cc, env, out)
                run = Runner(program, native=args.smoke)
                (out / "work").mkdir()
                outputs[label] = recipe.workload(exe, out / "work", run)
                results.setdefault(program, {})[label] = (run.ir, spill_cost(out))
                if label == "plain" and not args.smoke:
                    # The same binary again: how much the count moves by itself (jq seeds its
                    # hashes with arc4random, so its count is not exactly repeatable).
                    again = Runner(program)
                    shutil.rmtree(out / "work")
                    (out / "work").mkdir()
                    recipe.workload(exe, out / "work", again)
                    noise[program] = 100 * abs(again.ir - run.ir) / run.ir
                print(f"  {label:24s} Ir {run.ir:>14,d}  spill cost {spill_cost(out):14.0f}  "
                      f"output: {outputs[label]}", flush=True)
            if len(set(outputs.values())) != 1:
                raise BenchError(program, "comparing outputs", f"variants differ: {outputs}")
            known = KNOWN.get(program)
            if args.smoke:
                continue
            if known is None:
                raise BenchError(program, "checking the output",
                                 f"no known value for it; got {outputs['plain']!r}")
            if outputs["plain"] != known:
                raise BenchError(program, "checking the output",
                                 f"got {outputs['plain']!r}, expected {known!r}")
    if args.smoke:
        return
    labels = [v[0] for v in variants]
    print(f"\n{'program':18s}" + "".join(f"{'Ir ' + lb:>18s}" for lb in labels)
          + "".join(f"{'Ir ' + lb:>16s}{'spill ' + lb:>16s}" for lb in labels[1:])
          + f"{'plain rerun':>14s}")
    xs, ys = [], []
    for program, row in results.items():
        base_ir, base_spill = row["plain"]
        line = f"{program:18s}" + "".join(f"{row[lb][0]:18,d}" for lb in labels)
        for lb in labels[1:]:
            d_ir = 100 * relative_change(base_ir, row[lb][0])
            d_spill = 100 * relative_change(base_spill, row[lb][1])
            xs.append(d_spill)
            ys.append(d_ir)
            line += f"{d_ir:+15.3f}%{d_spill:+15.2f}%"
        print(line + f"{noise[program]:13.3f}%")
    print("\n(changes are vs plain clang-19; 'plain rerun': |Ir change| running the plain build "
          "again, the measurement's own noise)")
    if len(xs) >= 3:
        pearson = statistics.correlation(xs, ys)
        spearman = statistics.correlation(ranks(xs), ranks(ys))
        print(f"spill-cost change vs Ir change over {len(xs)} (program, policy) pairs: "
              f"Pearson r = {pearson:+.3f}, Spearman rho = {spearman:+.3f}")


if __name__ == "__main__":
    try:
        main()
    except MlgoError as e:
        raise SystemExit(f"error: {e}") from None
