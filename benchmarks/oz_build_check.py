"""Does the environment measure the build a user makes? For Debian packages with a recipe:
build (cached), extract at the problem's level, and compare, module by module, the default
measurement rewards are relative to with the object of `clang-19 -Oz -c SOURCE` with the
package's own flags.

    python benchmarks/oz_build_check.py lua5.4 double-conversion [--corpus-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from corpus_tools import debian
from corpus_tools.corpus import Corpus
from mlgo.problems import get_problem
from mlgo.problems.frontend import compare_with_build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+")
    ap.add_argument("--corpus-dir", type=Path, default=None,
                    help="extract here (default: a temporary directory)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args()
    problem = get_problem("inlining")
    worst = 0
    with tempfile.TemporaryDirectory(prefix="oz-build-check-") as td:
        for pkg in args.packages:
            out = (args.corpus_dir or Path(td)) / pkg
            res = debian.build_package(pkg, out, jobs=args.jobs, progress=False,
                                       opt_level=problem.opt_level)
            rows = compare_with_build(problem, Corpus.load(out),
                                      res.src_dir / "mlgo_compile_commands.json",
                                      project=pkg, root=res.src_dir, exclude=res.exclude)
            env = sum(r.environment for r in rows)
            build = sum(r.build for r in rows)
            same = sum(r.environment == r.build for r in rows)
            print(f"{pkg:20} {len(rows):4} modules, {same:4} identical; .text environment "
                  f"{env:,.0f} vs build {build:,.0f} bytes")
            for r in rows:
                if r.environment != r.build:
                    print(f"  {r.module}: {r.environment:,.0f} vs {r.build:,.0f}")
            worst = max(worst, len(rows) - same)
    return 1 if worst else 0


if __name__ == "__main__":
    raise SystemExit(main())
