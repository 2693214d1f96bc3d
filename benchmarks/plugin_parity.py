"""Per-decision parity of the inliner pass plugin with interactive mode on a whole corpus.

For every module of CORPUS and every POLICY (a policy directory or a built-in heuristic such as
cost-threshold), two compiles at -Oz:
  interactive  the module through the FIFO channel, each decision made in Python (numpy for a
               policy directory: what training and evaluation run)
  plugin       plain clang-19 -Oz -fpass-plugin=$(mlgo plugin POLICY), the policy compiled to C
               inside clang, its decisions written by MLGO_PLUGIN_DECISION_LOG
and compares, module by module: the sequence of (features, decision) pairs, the objects' .text
sizes, and the object bytes. With --saved-model (policy directories only) the policy is also
exported as a TensorFlow SavedModel (mlgo.policies.saved_model, LLVM's signature) and its
`action` signature is called on every recorded observation, checked against numpy's decision.
Compiles run one at a time.
Usage: python benchmarks/plugin_parity.py CORPUS POLICY [POLICY ...] [--saved-model]
       [--max-modules N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from corpus_tools.corpus import Corpus
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.compiler.measure import text_size
from mlgo.problems import get_problem
from mlgo.protocol import llvm19
from mlgo.serving.plugin import plugin_for
from mlgo_base import process, toolchain


def _decider(problem, policy: str):
    if os.path.isdir(policy):
        from mlgo.policies.loading import numpy_policy

        return numpy_policy(problem, policy).act
    return problem.heuristic(policy)


def interactive(problem, module, decide, workdir: Path):
    """(object bytes, [(features, decision)], [observation dicts]) of an interactive compile."""
    base = workdir / "channel"
    argv = problem.compile_argv(module, workdir, base)
    pairs, observations = [], []
    with InteractiveCompile(argv, module.name, workdir, channel_base=base, timeout=600) as c:
        names = c.header.feature_names if not c.no_channel else list(llvm19.INLINE_FEATURES)
        if names != list(llvm19.INLINE_FEATURES):
            sys.exit(f"{module.name}: the compiler's features are not the plugin's: {names}")
        while (obs := c.next_observation()) is not None:
            action = int(decide(obs.features))
            pairs.append(([int(np.asarray(obs.features[n]).reshape(-1)[0]) for n in names],
                          action))
            observations.append({n: np.array(v, copy=True) for n, v in obs.features.items()})
            c.answer(action)
        c.finish()
    return (workdir / "out.o").read_bytes(), pairs, observations


def with_plugin(module, so: Path, workdir: Path):
    """(object bytes, [(features, decision)]) of a plain -Oz compile with the plugin."""
    log, out = workdir / "plugin-decisions.txt", workdir / "plugin.o"
    log.unlink(missing_ok=True)
    args = module.compile_args(opt_level="-Oz", extra=[f"-fpass-plugin={so}"])
    process.run([toolchain.clang().path, *args, "-o", str(out)],
                what=f"compiling {module.name} with the plugin", timeout=600,
                env=dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log)))
    pairs = []
    if log.exists():
        for line in log.read_text().splitlines():
            features, decision = line.split("->")
            pairs.append(([int(x) for x in features.split()], int(decision)))
    return out.read_bytes(), pairs


def first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"decision {i}: interactive {x}, plugin {y}"
    return f"interactive made {len(a)} decisions, the plugin {len(b)}"


def saved_model_check(policy_dir: str, problem, observations: list[dict]) -> dict:
    """Decisions of the exported SavedModel vs numpy on the recorded observations."""
    from mlgo.policies.loading import load_network, numpy_policy
    from mlgo.policies.policy import SavedModelPolicy
    from mlgo.policies.saved_model import export_saved_model

    network, params = load_network(policy_dir, problem.name)
    ours = numpy_policy(problem, policy_dir)
    with tempfile.TemporaryDirectory(prefix="mlgo-parity-sm-") as tmp:
        saved = SavedModelPolicy(export_saved_model(network, params, Path(tmp) / "sm"))
        t0 = time.perf_counter()
        mismatches = 0
        max_logit_gap = 0.0
        for obs in observations:
            a_tf, a_np = saved.act(obs), ours.act(obs)
            mismatches += a_tf != a_np
            gap = np.abs(saved.logits(obs) - ours.logits(obs)).max()
            max_logit_gap = max(max_logit_gap, float(gap))
        seconds = time.perf_counter() - t0
    return {"decisions": len(observations), "mismatches": int(mismatches),
            "max_abs_logit_difference": max_logit_gap, "seconds": seconds}


def run_policy(corpus: Corpus, policy: str, modules, saved_model: bool) -> dict:
    problem = get_problem("inlining")
    decide = _decider(problem, policy)
    so = plugin_for(policy)
    rows, failures, all_observations = [], [], []
    t0 = time.perf_counter()
    for i, module in enumerate(modules):
        workdir = make_workdir("mlgo-parity-")
        try:
            ref_obj, ref_pairs, observations = interactive(problem, module, decide, workdir)
            obj, pairs = with_plugin(module, so, workdir)
            ref_text, text = text_size(workdir / "out.o"), text_size(workdir / "plugin.o")
        except Exception as e:  # a broken module is reported, the run goes on
            failures.append((module.name, f"{type(e).__name__}: {e}"))
            continue
        finally:
            remove_workdir(workdir)
        mismatched = (sum(a != b for a, b in zip(ref_pairs, pairs, strict=False))
                      + abs(len(ref_pairs) - len(pairs)))
        row = {"module": module.name, "project": module.project, "decisions": len(ref_pairs),
               "plugin_decisions": len(pairs), "mismatches": mismatched,
               "inlined": sum(d for _, d in ref_pairs),
               "text_interactive": ref_text, "text_plugin": text,
               "objects_identical": obj == ref_obj}
        if mismatched:
            row["first_difference"] = first_difference(ref_pairs, pairs)
            print(f"  MISMATCH {module.name}: {row['first_difference']}", flush=True)
        rows.append(row)
        all_observations += observations
        if (i + 1) % 20 == 0:
            print(f"  {policy}: {i + 1}/{len(modules)} modules", flush=True)
    result = {"policy": policy, "plugin": str(so), "modules": rows, "failures": failures,
              "seconds": time.perf_counter() - t0}
    if saved_model and os.path.isdir(policy):
        result["saved_model"] = saved_model_check(policy, problem, all_observations)
    return result


def summary(result: dict) -> list[str]:
    rows = result["modules"]
    projects: dict[str, list[dict]] = {}
    for r in rows:
        projects.setdefault(r["project"] or "-", []).append(r)
    lines = [f"policy {result['policy']} (plugin {result['plugin']}), "
             f"{result['seconds']:.0f} s",
             f"{'project':12s} {'modules':>7s} {'decisions':>9s} {'inlined':>7s} "
             f"{'mismatches':>10s} {'.text interactive':>17s} {'.text plugin':>12s} "
             f"{'.text equal':>11s} {'objects identical':>17s}"]
    for name, rs in sorted(projects.items()) + [("total", rows)]:
        lines.append(
            f"{name:12s} {len(rs):7d} {sum(r['decisions'] for r in rs):9d} "
            f"{sum(r['inlined'] for r in rs):7d} {sum(r['mismatches'] for r in rs):10d} "
            f"{sum(r['text_interactive'] for r in rs):17d} {sum(r['text_plugin'] for r in rs):12d} "
            f"{sum(r['text_interactive'] == r['text_plugin'] for r in rs):11d} "
            f"{sum(r['objects_identical'] for r in rs):17d}")
    lines.append(f"modules compared {len(rows)}, decisions compared "
                 f"{sum(r['decisions'] for r in rows)}, mismatches "
                 f"{sum(r['mismatches'] for r in rows)}, modules with a different .text "
                 f"{sum(r['text_interactive'] != r['text_plugin'] for r in rows)}, failed "
                 f"{len(result['failures'])}")
    for name, why in result["failures"]:
        lines.append(f"  failed: {name}: {why[:300]}")
    if "saved_model" in result:
        sm = result["saved_model"]
        lines.append(f"SavedModel vs numpy on the {sm['decisions']} recorded observations: "
                     f"{sm['mismatches']} different decisions, max |logit difference| "
                     f"{sm['max_abs_logit_difference']:.3g} ({sm['seconds']:.0f} s)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("policies", nargs="+", metavar="POLICY")
    ap.add_argument("--saved-model", action="store_true",
                    help="also check the exported SavedModel (TensorFlow) against numpy")
    ap.add_argument("--max-modules", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    corpus = Corpus.load(args.corpus)
    modules = corpus.modules[:args.max_modules] if args.max_modules else corpus.modules
    results = []
    for policy in args.policies:
        results.append(run_policy(corpus, policy, modules, args.saved_model))
    version = process.run([toolchain.clang().path, "--version"], what="asking clang its version",
                          timeout=60).stdout.splitlines()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"compiler: {version}; corpus {args.corpus}: {len(modules)} modules")
    for result in results:
        print()
        print("\n".join(summary(result)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if any(sum(r["mismatches"] for r in res["modules"]) or res["failures"] for res in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
