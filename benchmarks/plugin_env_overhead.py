"""Compile-time cost of inliner plugins vs plain clang-19 -Oz, side by side on corpus modules.

Every module's bitcode is compiled with its recorded arguments at -Oz, plainly and once with each
plugin given, interleaved module by module (so that load from other work falls on every variant
alike), for several rounds. CPU time is the compiler processes' user+sys (getrusage of children):
far less sensitive to other load than wall time. Optimizer and code generation only (no
frontend), so the ratios are larger than a build from sources would show.

--callgrind N also counts the instructions (valgrind's callgrind, total Ir) of each variant's
compile of N modules spread over the size range (or of the modules named with --callgrind-module):
independent of load, the primary figure on a shared machine (about a minute of CPU per compile
under valgrind).

--standard-variants adds the plugins that show what each group of the advisor's work costs
(mlgo/serving/plugin_advice.h): the shipped inlining-oz (binds LLVM's 38 features: tracked mode,
computing all of them), cost-threshold declaring LLVM's 38 features (the same) and declaring
only the two it reads (the estimate and the cost features, no FunctionPropertiesInfo), and two
rules on the cost estimate (which the advisor computes anyway: a call site without one cannot be
inlined) plus cheap call-site and IR features, without and with the FunctionPropertiesInfo
features. `cost_estimate < 5` agrees with `cost_estimate < threshold` on 99.8% of the call sites
of zopfli, cjson and snappy at -Oz, so all variants make nearly the same decisions and the later
passes see nearly the same code.

--parity compiles each module with each plugin twice more, once with MLGO_PLUGIN_DECISION_LOG set
(which makes the plugin compute every feature through LLVM's own advisor) and once without, and
reports modules whose objects differ (exit status 1), the decisions each way (MLGO_DECISION_SUMMARY:
how many, how many inlined) and each plugin's work counts (MLGO_PLUGIN_FEATURE_WORK).
--check-counts also sets MLGO_PLUGIN_CHECK_COUNTS=1 on the served compiles: where the plugin
counts a caller's function properties and keeps its reachable blocks itself after an inlining
(tracked mode on LLVM 19), LLVM's own update and a dominator tree run beside it, and
`count_mismatches` and `reachability_mismatches` say how often they differed; the served
compile also writes a decision log, every feature computed in the plugin's tracked mode, which
must equal LLVM's line by line (every feature of every decision). Any difference fails the run.
The compiler is the chosen LLVM's clang (clang-19, or clang-22 with MLGO_LLVM_VERSION=22, whose
plugins must then be built for 22 too).
Usage: python benchmarks/plugin_env_overhead.py CORPUS [CORPUS ...] [--plugin LABEL=SO ...]
       [--standard-variants] [--rounds 3] [--max-modules N] [--callgrind N]
       [--callgrind-module NAME ...] [--parity [--check-counts]]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo_base import process, toolchain

CHEAP = ["cost_estimate", "callsite_height", "nr_ctant_params", "is_callee_avail_external",
         "is_caller_avail_external", "callee_linkage", "callee_in_comdat", "callee_inline_hint",
         "callee_uses", "callsite_is_last_use", "callsite_loop_depth", "callee_is_recursive"]
FPI = ["caller_basic_block_count", "callee_basic_block_count", "caller_users", "callee_users",
       "caller_instruction_count", "callee_instruction_count"]




def standard_variants() -> dict[str, str]:
    from mlgo.policies import c_source
    from mlgo.serving.plugin import build_plugin, plugin_for

    return {
        "inlining-oz": str(plugin_for("inlining-oz")),
        "cost-threshold (38 in)": str(plugin_for("cost-threshold")),
        "cost-threshold (2 in)": str(build_plugin(
            c_source.heuristic_c_source("inlining", "cost-threshold", ["threshold", "cost_estimate"]),
            policy_label="cost-threshold-2")),
        "estimate+cheap": str(build_plugin(c_source.expression_c_source(CHEAP, "f[0] < 5"),
                                           policy_label="cheap")),
        "estimate+cheap+FPI": str(build_plugin(c_source.expression_c_source(CHEAP + FPI, "f[0] < 5"),
                                               policy_label="cheap-fpi")),
    }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _argv(module, plugin: str | None, out: str) -> list[str]:
    extra = [f"-fpass-plugin={plugin}"] if plugin else []
    return [toolchain.locate("clang", override=False), *module.compile_args(opt_level="-Oz", extra=extra), "-o", out]


def spread(modules: list, n: int) -> list:
    """`n` modules evenly spaced over the bitcode-size order (smallest to largest)."""
    by_size = sorted(modules, key=lambda m: m.bc_path.stat().st_size)
    if n >= len(by_size):
        return by_size
    return [by_size[round(i * (len(by_size) - 1) / (n - 1))] for i in range(n)] if n > 1 \
        else [by_size[-1]]


def instructions(argv: list[str], env: dict, tmp: str, what: str) -> int:
    """Total instructions (callgrind's Ir) of one compile."""
    log = os.path.join(tmp, "callgrind.log")
    process.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
                 f"--log-file={log}", *argv], what=what, timeout=3600, env=env)
    text = Path(log).read_text()
    found = re.search(r"Collected\s*:\s*(\d+)", text)
    if not found:
        raise SystemExit(f"{log}: no 'Collected' line from callgrind")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+", type=Path)
    ap.add_argument("--plugin", action="append", default=[], metavar="LABEL=SO")
    ap.add_argument("--standard-variants", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-modules", type=int, default=0, help="per corpus (0: all)")
    ap.add_argument("--callgrind", type=int, default=0, metavar="N")
    ap.add_argument("--callgrind-module", action="append", default=[], metavar="NAME")
    ap.add_argument("--parity", action="store_true")
    ap.add_argument("--check-counts", action="store_true")
    args = ap.parse_args()
    if args.check_counts and not args.parity:
        ap.error("--check-counts goes with --parity")
    plugins: dict[str, str | None] = {"plain -Oz": None}
    if args.standard_variants:
        plugins.update(standard_variants())
    for spec in args.plugin:
        label, so = spec.split("=", 1)
        plugins[label] = so
    if len(plugins) == 1:
        ap.error("give --plugin LABEL=SO or --standard-variants")
    modules = []
    for path in args.corpus:
        mods = Corpus.load(path).modules
        modules += mods[: args.max_modules] if args.max_modules else mods
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGO_PLUGIN", "MLGO_DECISION"))}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(modules)} modules")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.o")
        if args.parity:
            failed = parity(modules, plugins, env, tmp, check_counts=args.check_counts)
        if args.callgrind or args.callgrind_module:
            chosen = [m for m in modules if m.name in args.callgrind_module] or \
                spread(modules, args.callgrind)
            ir = dict.fromkeys(plugins, 0)
            print(f"callgrind, load {os.getloadavg()[0]:.1f} at start:")
            for m in chosen:
                row = {}
                for name, so in plugins.items():
                    row[name] = instructions(_argv(m, so, out), env, tmp, f"{m.name} ({name})")
                    ir[name] += row[name]
                base = row["plain -Oz"]
                print(f"  {m.name}: plain {base:,} Ir; " + ", ".join(
                    f"{n} {v / base - 1:+.2%}" for n, v in row.items() if n != "plain -Oz"),
                    flush=True)
            print(f"instructions, {len(chosen)} modules (callgrind Ir, total):")
            for name in plugins:
                print(f"  {name:24s} {ir[name]:15,d} ({ir[name] / ir['plain -Oz'] - 1:+.2%})")
        if args.rounds:
            load0 = os.getloadavg()[0]
            cpu = dict.fromkeys(plugins, 0.0)
            wall = dict.fromkeys(plugins, 0.0)
            for r in range(args.rounds):
                for i, m in enumerate(modules):
                    # Rotate which variant goes first, so none always runs on a cold cache.
                    names = list(plugins)
                    names = names[(i + r) % len(names):] + names[:(i + r) % len(names)]
                    for name in names:
                        c0, t0 = _cpu(), time.perf_counter()
                        process.run(_argv(m, plugins[name], out), what=f"compiling {m.name} ({name})",
                                    timeout=600, env=env)
                        wall[name] += time.perf_counter() - t0
                        cpu[name] += _cpu() - c0
            print(f"CPU time, {len(modules)} modules x {args.rounds} rounds, interleaved; load "
                  f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end:")
            base = cpu["plain -Oz"]
            for name in plugins:
                print(f"  {name:24s} cpu {cpu[name]:8.2f} s ({cpu[name] / base - 1:+.2%})  "
                      f"wall {wall[name]:8.2f} s")
    sys.exit(1 if failed else 0)


def parity(modules: list, plugins: dict[str, str | None], env: dict, tmp: str, *,
           check_counts: bool = False) -> bool:
    """Objects with every feature computed (the decision log on) vs as served; True if any
    differ. Prints the work counts of the served compiles."""
    failed = False
    for name, so in plugins.items():
        if so is None:
            continue
        work = Path(tmp) / f"work-{len(name)}.txt"
        work.unlink(missing_ok=True)
        differ = []
        decided = inlined = 0
        for m in modules:
            objs, counts, logs = [], [], []
            for logged in (True, False):
                e = dict(env)
                obj = str(Path(tmp) / f"parity-{logged}.o")
                summary = Path(tmp) / "summary.txt"
                summary.unlink(missing_ok=True)
                e["MLGO_DECISION_SUMMARY"] = str(summary)
                if logged:
                    log = Path(tmp) / "decisions.txt"
                    log.write_text("")
                    e["MLGO_PLUGIN_DECISION_LOG"] = str(log)
                else:
                    e["MLGO_PLUGIN_FEATURE_WORK"] = str(work)
                    if check_counts:
                        e["MLGO_PLUGIN_CHECK_COUNTS"] = "1"
                        log = Path(tmp) / "decisions-served.txt"
                        log.write_text("")
                        e["MLGO_PLUGIN_DECISION_LOG"] = str(log)
                process.run(_argv(m, so, obj), what=f"compiling {m.name} ({name})", timeout=600,
                            env=e)
                objs.append(Path(obj).read_bytes())
                logs.append(log.read_text() if logged or check_counts else "")
                lines = summary.read_text().splitlines() if summary.exists() else []
                counts.append([line.split("\t")[3:5] for line in lines])
            if objs[0] != objs[1] or counts[0] != counts[1] or (check_counts and
                                                                 logs[0] != logs[1]):
                differ.append(m.name)
            decided += sum(int(c[0]) for c in counts[1])
            inlined += sum(int(c[1]) for c in counts[1])
        totals: dict[str, int] = {}
        modes = set()
        for line in work.read_text().splitlines() if work.exists() else []:
            fields = line.split("\t")
            modes.add(fields[2])
            for f in fields[3:]:
                k, v = f.split("=")
                totals[k] = totals.get(k, 0) + int(v)
        print(f"parity {name}: {len(modules) - len(differ)}/{len(modules)} objects and decision "
              f"counts identical{' (differ: ' + ', '.join(differ) + ')' if differ else ''}; "
              f"{decided} decisions, {inlined} inlined; mode "
              f"{'/'.join(sorted(modes))}; work " + " ".join(f"{k}={v}" for k, v in totals.items()),
              flush=True)
        failed |= bool(differ) or any(totals.get(k, 0) > 0 for k in
                                      ("count_mismatches", "reachability_mismatches"))
    return failed


if __name__ == "__main__":
    main()
