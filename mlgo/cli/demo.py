"""`mlgo demo`: the whole loop on a small real project (Debian's lua5.4), step by step.

  1. build the project with clang-19 and extract a corpus (one module per source file)
  2. analyse it (call graph, pressure) and split modules into training and held-out sets
  3. warm start: trace the default heuristic, then behavioral cloning
  4. improve with evolution strategies for a few iterations
  5. evaluate on the held-out modules against plain clang-19 -Oz, write a table and a plot
Every step's output stays in OUTPUT/, and a re-run reuses finished steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlgo.errors import MlgoError

PROJECT = "lua5.4"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on lua5.4: corpus, training, evaluation")
    p.add_argument("--output", "-o", type=Path, default=Path("demo-output"))
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--es-iterations", type=int, default=6)
    p.add_argument("--bc-epochs", type=int, default=6)
    p.set_defaults(func=run)


def _step(n: int, total: int, what: str) -> float:
    print(f"\n=== [{n}/{total}] {what}", flush=True)
    return time.monotonic()


def _call(argv: list[str]) -> None:
    from mlgo.cli.main import main

    rc = main(argv)
    if rc != 0:
        raise MlgoError(f"demo step failed: mlgo {' '.join(argv)} (exit {rc})")


def run(args: argparse.Namespace) -> int:
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    workers = ["--workers", str(args.workers)] if args.workers else []
    gin = ["--gin_bindings", f"bc.BCConfig.epochs = {args.bc_epochs}",
           "--gin_bindings", f"es.ESConfig.iterations = {args.es_iterations}"]
    total = 5
    t_start = time.monotonic()

    _step(1, total, f"build {PROJECT} with clang-19 and extract its corpus")
    if not (corpus / "corpus_description.json").is_file():
        _call(["corpus", "debian", PROJECT, "-o", str(corpus)])
    else:
        print(f"reusing {corpus}")

    _step(2, total, "analyse the corpus")
    _call(["corpus", "report", str(corpus), "--json", str(out / "corpus_report.json")])

    _step(3, total, "warm start: trace the default inliner and clone it (behavioral cloning)")
    common = ["--problem", "inlining", "--corpus", str(corpus), *workers]
    _call(["train", *common, "--algorithm", "bc", "-o", str(out / "bc"), *gin])

    _step(4, total, f"evolution strategies from the warm start ({args.es_iterations} iterations)")
    _call(["train", *common, "--algorithm", "es", "-o", str(out / "es"),
           "--warmstart", str(out / "bc" / "best"), *gin])

    _step(5, total, "evaluate on held-out modules against clang-19 -Oz")
    split = json.loads((out / "es" / "split.json").read_text())
    held = out / "heldout"
    _subset_corpus(corpus, split["validation"], held)
    rows = []
    for name, policy in (("cost-threshold", "cost-threshold"), ("bc", str(out / "bc" / "best")),
                         ("es", str(out / "es" / "best"))):
        report = out / f"eval-{name}.json"
        _call(["eval", *common[:2], "--corpus", str(held), *workers, "--policy", policy,
               "--json", str(report)])
        rows.append((name, json.loads(report.read_text())))
    print(f"\n{'policy':16s} {'held-out .text (bytes)':>24s} {'-Oz (bytes)':>14s} {'change':>9s}")
    for name, rep in rows:
        print(f"{name:16s} {rep['policy_total']:24.0f} {rep['default_total']:14.0f} "
              f"{100 * rep['relative_change']:+8.2f}%")
    print(f"\nplots: {', '.join(str(out / f'eval-{n}.png') for n, _ in rows)}")
    print(f"demo finished in {(time.monotonic() - t_start) / 60:.1f} min; outputs in {out}")
    return 0


def _subset_corpus(corpus: Path, names: list[str], dest: Path) -> None:
    """A corpus description over a subset of another corpus's modules (files linked, not copied)."""
    from corpus_tools.corpus import Corpus, write_description

    src = Corpus.load(corpus)
    keep = [m for m in src.modules if m.name in set(names)]
    if not keep:
        raise MlgoError(f"{corpus}: no held-out modules to evaluate")
    for m in keep:
        for p in (m.bc_path, m.cmd_path):
            target = dest / p.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(p.resolve())
    write_description(dest, [m.name for m in keep], {m.name: m.project for m in keep})
