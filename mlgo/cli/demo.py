"""`mlgo demo`: the whole loop on a small real project (Debian's lua5.4), step by step.
`run_demo` runs the same steps on any `DemoProject` (mlgo/lua_demo.py).

  1. build the project with clang-19 and extract a corpus of -Oz IR (one module per source
     file, each as `clang-19 -Oz -c` emits it with the package's flags)
  2. analyse it (call graph, pressure) and set test modules aside: they play no part in
     search, training or any choice (which round's policy is exported), and only they are
     reported
  3. search and imitation (mlgo train --algorithm imitation): per training module, a search
     for inlining decisions that beat LLVM's own (mlgo/search.py, within a compile budget;
     validation modules are not searched), then a residual policy (LLVM's cost-threshold rule
     plus learned flips, mlgo/problems/inlining/network.py) cloned from the best decisions found
     and validated on the validation modules; each later round searches again, guided by the
     policy, and clones the best found so far; then the flip margin (how confident a flip of
     the rule must be) is chosen on the validation modules
  4. evaluate on the test modules against plain clang-19 -Oz, write a table and a plot
  5. export the policy that was best on validation (SavedModel, XLA AOT) and build its plugin
  6. build the lua interpreter with `clang-19 -Oz -fpass-plugin=...` and with plain -Oz, run
     both on a small Lua program, and compare their sizes
Every step's output stays in OUTPUT/, and a re-run reuses the corpus.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from mlgo.cli.args import int_arg, workers_arg
from mlgo.compiler.measure import text_size
from mlgo.lua_demo import LUA, DemoProject
from mlgo_base.errors import MlgoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on lua5.4: corpus, training, evaluation")
    p.add_argument("--output", "-o", type=Path, default=Path("demo-output"),
                   help="directory for every step's output; a re-run reuses its corpus "
                   "(default demo-output)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="local worker processes (default: cores)")
    p.add_argument("--search-budget", type=int_arg(lo=3), default=40,
                   help="compiles per training module per search round (default 40)")
    p.add_argument("--rounds", type=int_arg(lo=1), default=2,
                   help="imitation rounds: search (guided by the policy after the first), "
                   "clone, validate (default 2)")
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
    run_demo(args.output, LUA, workers=args.workers, search_budget=args.search_budget,
             rounds=args.rounds)
    return 0


def run_demo(out: Path, project: DemoProject, *, workers: int | None = None,
             search_budget: int = 40, rounds: int = 2, epochs: int = 40,
             gin_bindings: Sequence[str] = ()) -> dict[str, float]:
    """The demo's six steps on `project`, every output in `out`. Returns the .text changes
    vs clang-19 -Oz: each policy's on the test modules, and "binary" for the whole program
    built with the exported policy's plugin. `gin_bindings` come after the demo's own."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    trainval, test = out / "trainval", out / "test"
    workers_flag = ["--workers", str(workers)] if workers else []
    # lua is C (no COMDAT groups): plain .text. Most of the search's gain on C is in not
    # inlining (mlgo/search.py), so only 1 -> 0 flips are tried. The policy is the residual
    # network: LLVM's rule cost_estimate < threshold (LLVM's own decision at 99.86% of call
    # sites) unless a learned flip wins, so it starts at the rule and cloning only has to learn
    # the search's flips (40 epochs, the learning rate decaying to a tenth).
    gin = [f"--gin_bindings=imitation.ImitationConfig.{k} = {v}" for k, v in (
        ("rounds", rounds), ("search_budget", search_budget),
        ("search_flips", "'inlined'"), ("search_guide", "'disagree'"), ("epochs", epochs),
        ("final_lr_fraction", 0.1))]
    gin.append("--gin_bindings=inlining.InliningNetworkConfig.residual = True")
    for binding in gin_bindings:
        gin += ["--gin_bindings", binding]
    total = 6
    t_start = time.monotonic()

    _step(1, total, f"build {project.name} with clang-19 and extract its corpus")
    if _corpus_level(corpus) not in (None, "-Oz"):
        # An earlier demo's corpus of another level (e.g. -O2-frontend IR): not what -Oz builds.
        print(f"{corpus} holds IR at {_corpus_level(corpus)}; extracting -Oz IR anew")
        import shutil

        for d in (corpus, trainval, test):
            shutil.rmtree(d, ignore_errors=True)
    if not (corpus / "corpus_description.json").is_file():
        _call(project.corpus_command(corpus))
    else:
        print(f"reusing {corpus}")

    _step(2, total, "analyse the corpus and set test modules aside")
    _call(["corpus", "report", str(corpus), "--json", str(out / "corpus_report.json")])
    from corpus_tools.corpus import Corpus, split_by_project

    # A seed of its own: the training runs split trainval again (seed 0) for validation.
    rest, test_names = split_by_project(Corpus.load(corpus), 0.2, seed=12)
    _subset_corpus(corpus, rest, trainval)
    _subset_corpus(corpus, test_names, test)
    print(f"{len(rest)} modules for training and validation, {len(test_names)} test modules "
          f"(reported only): {', '.join(n.split('/')[-1] for n in test_names)}")

    _step(3, total, f"search the training modules for decisions that beat LLVM's, then "
          f"imitate them ({rounds} round(s); validation modules choose the round)")
    common = ["--problem", "inlining", "--corpus", str(trainval), *workers_flag]
    # Round 0's search is imitation's own, on the run's training split only (split.json).
    _call(["train", *common, "--algorithm", "imitation", "-o", str(out / "imitation"), *gin])
    _show_rounds(out / "imitation")
    chosen = _choose_flip_margin(out, trainval, common, workers_flag)

    _step(4, total, "evaluate on the test modules against clang-19 -Oz")
    rows = []
    # llvm-default: LLVM's own decisions served through the environment (must be 0.00%: the
    # environment adds nothing); cost-threshold: the rule the warm start imitates.
    for name, policy in (("llvm-default", "llvm-default"), ("cost-threshold", "cost-threshold"),
                         ("imitation", str(chosen))):
        report = out / f"eval-{name}.json"
        _call(["eval", *common[:2], "--corpus", str(test), *workers_flag, "--policy", policy,
               "--json", str(report)])
        rows.append((name, json.loads(report.read_text())))
    print(f"\n{'policy':16s} {'test .text (bytes)':>24s} {'-Oz (bytes)':>14s} {'change':>9s}")
    for name, rep in rows:
        print(f"{name:16s} {rep['policy_total']:24.0f} {rep['default_total']:14.0f} "
              f"{100 * rep['relative_change']:+8.2f}%")
    print(f"\nplots: {', '.join(str(out / f'eval-{n}.png') for n, _ in rows)}")

    _step(5, total, "export the policy best on validation and build its clang pass plugin")
    # Chosen on the validation modules (the round training recorded as best, and its flip
    # margin), never on the test modules.
    print(f"validation .text change of the chosen policy: "
          f"{100 * _validation_change(chosen):+.2f}%: exporting it")
    _call(["export", "--policy", str(chosen), "-o", str(out / "export"), "--force"])
    from mlgo.serving.plugin import plugin_for

    plugin = plugin_for(str(chosen))
    print(f"plugin: {plugin}")

    _step(6, total, f"build and run {project.name} with the plugin and with plain -Oz")
    sizes = {}
    for label, flags in (("clang-19 -Oz", []), ("-Oz + mlgo plugin", [f"-fpass-plugin={plugin}"])):
        exe = project.build(out / "build" / ("plugin" if flags else "plain"), flags)
        result = subprocess.run([str(exe), *project.run_args], capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0 or result.stdout.strip() != project.expected_output:
            raise MlgoError(f"{exe} did not run correctly: {result.stdout!r} {result.stderr!r}")
        sizes[label] = text_size(exe)
        print(f"{label:20s} {exe.name} .text {sizes[label]:8d} bytes; runs: "
              f"{result.stdout.strip()}")
    base, ml = sizes["clang-19 -Oz"], sizes["-Oz + mlgo plugin"]
    print(f"whole program: {100 * (ml - base) / base:+.2f}% .text with the policy "
          f"(imitation) vs clang-19 -Oz")
    _write_plot(out / "demo.png", project.name, rows, sizes)
    print(f"summary plot: {out / 'demo.png'}")
    print(f"demo finished in {(time.monotonic() - t_start) / 60:.1f} min; outputs in {out}")
    return {**{name: rep["relative_change"] for name, rep in rows}, "binary": (ml - base) / base}


FLIP_MARGINS = (0.0, 1.0, 2.0, 4.0)


def _choose_flip_margin(out: Path, trainval: Path, common: list[str],
                        workers_flag: list[str]) -> Path:
    """The best round's residual policy at the flip margin (FLIP_MARGINS) whose .text on the
    run's validation modules is smallest (on a tie, the larger margin: fewer flips); the test
    modules play no part. Each margin's policy is written to OUT/margin/margin-M."""
    from mlgo.policies.margin import validation_from_report, write_margin_policy

    best = out / "imitation" / "best"
    split = json.loads((out / "imitation" / "split.json").read_text())
    if not split["validation"]:
        return best
    val_corpus = out / "validation"
    _subset_corpus(trainval, split["validation"], val_corpus)
    results = []
    for m in FLIP_MARGINS:
        policy = out / "margin" / f"margin-{m:g}"
        write_margin_policy(best, policy, m)
        report = out / "margin" / f"eval-margin-{m:g}.json"
        _call(["eval", *common[:2], "--corpus", str(val_corpus), *workers_flag, "--policy",
               str(policy), "--json", str(report)])
        rep = json.loads(report.read_text())
        results.append((rep["policy_total"], -m, m, policy, rep, report))
    print(f"\n{'flip margin':>11s} {'validation .text':>17s} {'change':>9s}")
    for total, _, m, _, rep, _ in results:
        print(f"{m:11g} {total:17.0f} {100 * rep['relative_change']:+8.2f}%")
    _, _, m, policy, rep, report = min(results, key=lambda r: r[:2])
    write_margin_policy(best, policy, m, validation_from_report(rep, report, "inlining"))
    print(f"flip margin {m:g} chosen on the {len(split['validation'])} validation modules")
    return policy


def _show_rounds(run: Path) -> None:
    """Per imitation round: the search's and the policy's gains on the training modules, and
    the policy's change on validation (from the run's log.jsonl)."""
    print(f"{'round':>5s} {'search (train)':>15s} {'policy (train)':>15s} "
          f"{'validation':>11s}")
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        val = r.get("validation/relative_change")
        print(f"{int(r['iteration']):5d} {-100 * r['imitation/search_gain']:+14.2f}% "
              f"{-100 * r['imitation/policy_gain']:+14.2f}% "
              + (f"{100 * val:+10.2f}%" if val is not None else f"{'-':>11s}"))
    print("(policy (train): the policy before that round's cloning; the search's and the "
          "policy's as .text change vs -Oz)")


def _corpus_level(corpus: Path) -> str | None:
    from corpus_tools.corpus import Corpus

    if not (corpus / "corpus_description.json").is_file():
        return None
    return Corpus.load(corpus, check_files=False).opt_level or "an unrecorded level"


def _validation_change(policy_dir: Path) -> float:
    """The validation .text change training recorded when it saved this best policy."""
    from mlgo.policies.policy_dir import POLICY_JSON

    doc = json.loads((policy_dir / POLICY_JSON).read_text())
    try:
        return float(doc["meta"]["validation"]["relative_change"])
    except (KeyError, TypeError, ValueError) as e:
        raise MlgoError(f"{policy_dir / POLICY_JSON}: no validation result recorded") from e


def _subset_corpus(corpus: Path, names: list[str], dest: Path) -> None:
    """A corpus description over a subset of another corpus's modules (files linked, not copied)."""
    from corpus_tools.corpus import Corpus, write_description

    src = Corpus.load(corpus)
    keep = [m for m in src.modules if m.name in set(names)]
    if not keep:
        raise MlgoError(f"{corpus}: no modules for {dest}")
    for m in keep:
        for p in (m.bc_path, m.cmd_path):
            target = dest / p.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(p.resolve())
    extra = {k: src.extra[k] for k in ("opt_level", "origins") if k in src.extra}
    write_description(dest, [m.name for m in keep], {m.name: m.project for m in keep}, **extra)


def _write_plot(path: Path, project: str, rows: list, sizes: dict[str, int]) -> None:
    """Change vs clang-19 -Oz: each policy on the test modules, and the whole interpreter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, ml = sizes["clang-19 -Oz"], sizes["-Oz + mlgo plugin"]
    names = [f"{n}\n(test modules)" for n, _ in rows] + [f"{project} binary\n(-fpass-plugin)"]
    values = [100 * r["relative_change"] for _, r in rows] + [100 * (ml - base) / base]
    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    ax.bar(names, values, color=["#999999"] * 2 + ["#4477aa"] * (len(rows) - 2) + ["#cc6677"])
    ax.axhline(0, color="k", lw=0.8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel(".text change vs clang-19 -Oz (%)")
    ax.set_title(f"{project}: smaller is better")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
