"""Where the inliner plugin's compile-time cost goes: callgrind's inclusive instruction counts of
the inliner's and the advisor's functions, plain clang -Oz against each plugin, on named modules.

Each module's bitcode is compiled with its recorded arguments at -Oz under valgrind's callgrind
(one whole `clang -cc1`: independent of load, about a minute of CPU each), once plainly and once
per plugin. For each variant it prints the total, then the inclusive count of each group below
(a function's own instructions and those of everything it calls; a group sums the functions whose
demangled names match, so recursion and nesting can count twice: read each row on its own, as
"this much ran under it"), and the difference from plain -Oz. Rows that take no instructions in
every variant are left out.

Modules come from corpora, or from a CMake build's compile_commands.json (its sources compiled
from source with their recorded commands, frontend included), where --module names a source
by the end of its path.

Usage: python benchmarks/plugin_profile.py CORPUS [CORPUS ...] --module NAME [--module NAME ...]
       --plugin LABEL=SO [--plugin LABEL=SO ...] [--keep DIR]
       python benchmarks/plugin_profile.py --compile-commands JSON ... --module SRC ... --plugin ...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import tempfile
from pathlib import Path

from corpus_tools.corpus import Corpus
from mlgo_base import process, toolchain

# (row label, regular expression on the demangled function name, matched at its start)
GROUPS = [
    ("inliner pass (all of it)", r"llvm::InlinerPass::run\("),
    ("  InlineFunction", r"llvm::InlineFunction\("),
    ("  plain advisor: getInlineCost", r"llvm::getInlineCost\("),
    ("  ML advisor: constructor", r"llvm::MLInlineAdvisor::MLInlineAdvisor\("),
    ("  getAdvice (the advisor's answer)", r"llvm::InlineAdvisor::getAdvice\("),
    ("    getInliningCostEstimate", r"llvm::getInliningCostEstimate\("),
    ("    getInliningCostFeatures", r"llvm::getInliningCostFeatures\("),
    ("    FunctionPropertiesInfo computed",
     r"(?:llvm::FunctionPropertiesAnalysis|mlgo::PropertyCountsAnalysis)::run\("),
    ("    the policy's network", r"mlgo_inline_policy"),
    ("    the plugin's own features", r"mlgo::computeSiteFeature"),
    ("  advice recorded (FPI kept current)",
     r"(?:llvm::MLInlineAdvice|mlgo::CountedAdvice)::recordInlining"),
    ("    FunctionPropertiesUpdater::finish", r"llvm::FunctionPropertiesUpdater::finish\("),
    # (the plugin's advisor overrides both, calling LLVM's unless it keeps the counts itself)
    ("  onPassEntry", r"mlgo::LazyFeatureAdvisor::onPassEntry\("),
    ("  onPassExit", r"mlgo::LazyFeatureAdvisor::onPassExit\("),
    ("dominator tree built", r"void llvm::DomTreeBuilder::Calculate<"),
    ("loop info built", r"llvm::LoopInfoBase<llvm::BasicBlock, llvm::Loop>::analyze\("),
]

_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\S*?:)?(.*)$")


def _argv(module, plugin: str | None, out: str) -> list[str]:
    extra = [f"-fpass-plugin={plugin}"] if plugin else []
    return [toolchain.locate("clang", override=False), *module.compile_args(opt_level="-Oz", extra=extra), "-o", out]


def _recorded_argv(entry: dict, plugin: str | None, out: str) -> list[str]:
    """A compile_commands.json entry's command, writing `out`, with the plugin if given."""
    argv = list(entry["arguments"]) if "arguments" in entry else shlex.split(entry["command"])
    if "-o" in argv:
        argv[argv.index("-o") + 1] = out
    else:
        argv += ["-o", out]
    return argv + ([f"-fpass-plugin={plugin}"] if plugin else [])


def _recorded(paths: list[Path], names: list[str]) -> dict[str, dict]:
    """The entry of each named source (the end of its path) in the compile_commands.json files:
    the first, when a source is compiled more than once (a static and a shared library)."""
    entries = []
    for path in paths:
        try:
            entries += json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: not a readable compile_commands.json: {e}") from None
    found = {}
    for name in names:
        hits = [e for e in entries if str(e.get("file", "")).endswith(name)]
        if len({str(e["file"]) for e in hits}) != 1:
            raise SystemExit(f"{name}: {len(hits)} sources end so in "
                             f"{', '.join(map(str, paths))}; name exactly one")
        found[name] = hits[0]
    return found


def profile(argv: list[str], env: dict, prefix: Path, what: str,
            cwd: str | None = None) -> tuple[int, dict[str, int]]:
    """Total Ir and each group's inclusive Ir of one compile under callgrind."""
    data = Path(f"{prefix}.callgrind").resolve()
    process.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={data}",
                 f"--log-file={Path(f'{prefix}.log').resolve()}", *argv], what=what, timeout=3600,
                env=env, cwd=cwd)
    text = process.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                        str(data)], what=f"annotating {data}", timeout=600).stdout
    total = re.search(r"^\s*([\d,]+)\s+\([^)]*\)\s+PROGRAM TOTALS", text, re.M)
    if not total:
        raise SystemExit(f"{data}: callgrind_annotate printed no PROGRAM TOTALS")
    groups = dict.fromkeys((label for label, _ in GROUPS), 0)
    for line in text.splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        count, name = int(found.group(1).replace(",", "")), found.group(2).strip()
        for label, pattern in GROUPS:
            if re.match(pattern, name):
                groups[label] += count
    return int(total.group(1).replace(",", "")), groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="*", type=Path)
    ap.add_argument("--compile-commands", action="append", default=[], type=Path, metavar="JSON",
                    help="a CMake build's compile_commands.json: profile its sources' compiles")
    ap.add_argument("--module", action="append", required=True, metavar="NAME")
    ap.add_argument("--plugin", action="append", required=True, metavar="LABEL=SO")
    ap.add_argument("--keep", type=Path, help="keep the callgrind files here")
    args = ap.parse_args()
    variants: dict[str, str | None] = {"plain -Oz": None}
    for spec in args.plugin:
        label, so = spec.split("=", 1)
        variants[label] = so
    if bool(args.corpus) == bool(args.compile_commands):
        ap.error("give corpora or --compile-commands, not both or neither")
    if args.compile_commands:
        recorded = _recorded(args.compile_commands, args.module)
    else:
        modules = {m.name: m for path in args.corpus for m in Corpus.load(path).modules}
        missing = [name for name in args.module if name not in modules]
        if missing:
            raise SystemExit(f"no module {', '.join(missing)} in {', '.join(map(str, args.corpus))}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGO_PLUGIN", "MLGO_DECISION"))}
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        out = str(Path(tmp) / "out.o")
        for name in args.module:
            rows = {}
            for i, (label, so) in enumerate(variants.items()):
                prefix = keep / f"{Path(name).name}-{i}"
                if args.compile_commands:
                    entry = recorded[name]
                    rows[label] = profile(_recorded_argv(entry, so, out), env, prefix,
                                          f"{name} ({label})", cwd=entry.get("directory"))
                else:
                    rows[label] = profile(_argv(modules[name], so, out), env, prefix,
                                          f"{name} ({label})")
            base_total, base = rows["plain -Oz"]
            print(f"{name} (load {os.getloadavg()[0]:.1f}): instructions, inclusive "
                  "(difference from plain -Oz in % of plain's total)")
            print(f"  {'':38s}" + "".join(f"{label[:22]:>24s}" for label in variants))
            print(f"  {'total':38s}" + "".join(
                f"{t:>15,d} {(t - base_total) / base_total:+7.2%}" for t, _ in rows.values()))
            for group, _ in GROUPS:
                if not any(g[group] for _, g in rows.values()):
                    continue
                print(f"  {group:38s}" + "".join(
                    f"{g[group]:>15,d} {(g[group] - base[group]) / base_total:+7.2%}"
                    for _, g in rows.values()))
            print(flush=True)


if __name__ == "__main__":
    main()
