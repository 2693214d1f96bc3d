"""`mlgo demo`: `mlgo tune` on a small real project (Debian's lua5.4), within a few minutes.
`run_demo` runs the same on any `DemoProject` (mlgo/lua_demo.py).

  1. set-up   the project's source as a CMake project (lua: Debian's source package, with a
              CMakeLists.txt building the interpreter), some source files held out of tuning
  2. tune     `mlgo tune` (mlgo/tune/) within the time budget: the plain -Oz build (the
              chosen clang), the search and the imitation on the project's own modules (the
              held-out ones never take part), the policy's plugin, the build with it, the
              project's test (the interpreter runs a Lua program whose output is checked) on
              both builds
  3. result   the interpreter's .text with the plugin against plain -Oz, its run, and the
              figures on the tuned modules and, separately, on the held-out modules
Every output stays in OUTPUT/ (the tune's in OUTPUT/tune/); a re-run resumes.
"""

from __future__ import annotations

import argparse
import fnmatch
import time
from pathlib import Path

from mlgo.cli.args import workers_arg
from mlgo.lua_demo import LUA, DemoProject
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

DEFAULT_BUDGET = "8m"
# Fewer cloning epochs than own_project.gin's 1500: within the demo's minutes they are better
# spent on the search.
DEMO_BINDINGS = ("imitation.ImitationConfig.epochs = 400",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on lua5.4: mlgo tune on the interpreter's "
                       "own modules, its build with the plugin, the result")
    p.add_argument("--output", "-o", type=Path, default=Path("demo-output"),
                   help="directory for every step's output; a re-run resumes the tune in it "
                   "(default demo-output)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="local worker processes (default: cores)")
    p.add_argument("--time-budget", default=DEFAULT_BUDGET,
                   help=f"for the tune, set-up not included (default {DEFAULT_BUDGET})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.tune.progress import parse_duration

    run_demo(args.output, LUA, workers=args.workers,
             time_budget=parse_duration(args.time_budget), gin_bindings=DEMO_BINDINGS)
    return 0


def run_demo(out: Path, project: DemoProject, *, workers: int | None = None,
             time_budget: float = 360.0, gin_bindings: tuple[str, ...] = ()) -> dict[str, float]:
    """The demo on `project`, every output in `out`. Returns the .text changes against
    clang-19 -Oz: "binary" (the program as linked), "tuned" and "held_out" (object files of
    the tuned and of the held-out modules), "policy" (mlgo eval on the tuned modules)."""
    from mlgo.tune.flow import TuneOptions, tune
    from mlgo_base import process

    t0 = time.monotonic()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"=== [1/3] set up {project.name} as a CMake project", flush=True)
    src = project.cmake_source(out)
    held = project.held_out(src)
    print(f"source: {src}\nheld out of tuning (reported separately): {', '.join(held)}",
          flush=True)

    print(f"\n=== [2/3] mlgo tune {src} --time-budget {time_budget / 60:g}m", flush=True)
    doc = tune(TuneOptions(output=out / "tune", source=src, exclude=tuple(held),
                           test_command=project.test_command(), time_budget=time_budget,
                           workers=workers, project=project.name, gin_bindings=gin_bindings))

    print(f"\n=== [3/3] {project.name} built with the tuned policy's plugin", flush=True)
    exe = out / "tune" / "build-plugin" / project.program
    ran = process.run([str(exe), *project.run_args], what=f"running {exe}", timeout=60)
    if ran.stdout.strip() != project.expected_output:
        raise MlgoError(f"{exe} printed {ran.stdout.strip()!r}, not {project.expected_output!r}")
    row = next((r for r in doc.get("binaries", []) if r["name"] == project.program), None)
    if row is None:
        raise MlgoError(f"{out / 'tune'}: no linked {project.program} measured in the two builds")
    tuned = doc["tuned_modules_total"]
    other = _total([r for r in doc["modules"]
                    if any(fnmatch.fnmatchcase(r["name"], g) for g in held)])
    print(f"{project.program} runs: {ran.stdout.strip()}  (checked)")
    print(f"{project.program} .text: clang-{toolchain.llvm_major()} -Oz {row['plain']:,} bytes, "
          f"-Oz + mlgo plugin "
          f"{row['plugin']:,} bytes: {100 * row['change']:+.2f}%")
    print(f"tuned modules ({tuned['count']}): {100 * tuned['change']:+.2f}% .text; "
          f"held-out modules ({other['count']}, never searched nor trained on): "
          f"{100 * other['change']:+.2f}%")
    print(f"report: {out / 'tune' / 'report.md'} (plot: {out / 'tune' / 'report.png'})")
    print(f"demo finished in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    return {"binary": row["change"], "tuned": tuned["change"], "held_out": other["change"],
            "policy": doc["evaluation"]["linked_relative_change"]}


def _total(rows: list[dict]) -> dict:
    plain = sum(r["plain"] for r in rows)
    plugin = sum(r["plugin"] for r in rows)
    return {"count": len(rows), "plain": plain, "plugin": plugin,
            "change": (plugin - plain) / plain if plain else 0.0}
