"""`mlgo margin`: a residual policy at flip margins, each written as a policy directory of its
own (OUT/margin-M); optionally the margin chosen on validation modules, or a measured report
recorded as one margin's validation figure (what `mlgo export` checks).

    mlgo margin --policy RUN/policy -o OUT --margins 0 1 4
    mlgo margin --policy RUN/policy -o OUT --margins 0 1 4 --choose-on VALIDATION_CORPUS
    mlgo margin --policy RUN/policy -o OUT --margins 0 1 4 --choose-on VALIDATION_CORPUS --env plugin
    mlgo margin --policy RUN/policy -o OUT --margins 0 1 4 \
        --choose-on-programs "libyaml (parser)" --choose-on-programs "giflib (gif2rgb)" \
        --max-program-change 0.05
    mlgo margin --policy RUN/policy -o OUT --margins 0 --validation EVAL.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlgo.checks import MAX_TIMEOUT, MAX_WORKERS
from mlgo.cli.args import timeout_arg, workers_arg
from mlgo.compiler.plugin_env import DEFAULT_ENVIRONMENT, ENVIRONMENTS
from mlgo_base.errors import MlgoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "margin", help="write a residual policy at flip margins; choose one on validation modules",
        description="A margin m lets the residual policy leave its rule (inlining's cost "
        "threshold, regalloc's default-rule) only where another action leads by more than m. "
        "Each margin's policy is written to OUT/margin-M. With --choose-on, each is evaluated "
        "on that corpus (validation modules only: never the test set) and the one with the "
        "lowest relative change (on a tie, the larger margin) gets the measurement recorded "
        "as its validation figure.")
    p.add_argument("--policy", required=True, type=Path, help="a residual policy directory")
    p.add_argument("--output", "-o", required=True, type=Path,
                   help="directory for OUT/margin-M, one policy per margin")
    p.add_argument("--margins", required=True, type=float, nargs="+", metavar="M",
                   help="the flip margins to write (finite; may be negative)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--choose-on", type=Path, metavar="CORPUS",
                     help="evaluate every margin on this corpus of validation modules and choose")
    how.add_argument("--choose-on-programs", action="append", metavar="PROGRAM",
                     help="regalloc: build this program (mlgo/problems/regalloc/programs.py; not "
                     "a held-out one) through mlgo-clang with each margin's policy, run its "
                     "workload under callgrind, and choose by the change in instructions "
                     "executed over all such programs (`mlgo profile programs --list`)")
    how.add_argument("--validation", type=Path, metavar="EVAL_JSON",
                     help="with one margin: record this `mlgo eval --json` report of its policy "
                     "as the policy's validation figure")
    p.add_argument("--max-program-change", type=float, default=None, metavar="PERCENT",
                   help="with --choose-on-programs: only margins under which no program "
                   "executes more than PERCENT more instructions than plain clang qualify")
    p.add_argument("--workdir", type=Path, default=None,
                   help="with --choose-on-programs: keep the builds here (default: temporary)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help=f"with --choose-on: local worker processes, 1 to {MAX_WORKERS}")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="with --choose-on: run workers on a Ray cluster")
    p.add_argument("--gin_file", action="append", default=[], type=Path,
                   help="with --choose-on: gin files for the evaluation (e.g. a profile)")
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="with --choose-on: gin bindings for the evaluation")
    p.add_argument("--timeout", type=timeout_arg, default=300.0,
                   help=f"with --choose-on: per-compile limit in seconds, at most {MAX_TIMEOUT:g}")
    # No default: a policy reading the plugin's features must be evaluated through the plugin,
    # so an --env that nothing would use is refused rather than ignored.
    p.add_argument("--env", choices=ENVIRONMENTS, default=None,
                   help="with --choose-on: how the compiler asks for decisions, LLVM's "
                   "interactive mode (the default) or mlgo's inliner plugin, which also sends "
                   "its own features (inlining only; docs/plugin-features.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.policies.margin import (
        check_margins,
        margin_policy_dir,
        validation_from_report,
        write_margin_policy,
    )
    from mlgo.policies.policy_dir import load_policy

    margins = check_margins(args.margins)
    if args.env is not None and args.choose_on is None:
        raise MlgoError("--env goes with --choose-on: it says how the validation modules are "
                        "compiled, and nothing else here compiles through it")
    net, params, _ = load_policy(args.policy)
    try:
        net.with_flip_margin(params, 0.0)
    except MlgoError as e:
        raise MlgoError(f"{args.policy}: {e}") from e
    if args.validation is not None:
        if len(margins) != 1:
            raise MlgoError("--validation takes one margin: the report is of one policy")
        try:
            report = json.loads(args.validation.read_text())
        except ValueError as e:
            raise MlgoError(f"{args.validation}: not JSON: {e}") from e
        val = validation_from_report(report, args.validation, net.problem)
        print(write_margin_policy(args.policy, margin_policy_dir(args.output, margins[0]),
                                  margins[0], val))
        return 0
    if args.choose_on_programs:
        return _choose_on_programs(args, net.problem, margins)
    if args.max_program_change is not None:
        raise MlgoError("--max-program-change goes with --choose-on-programs")
    if args.choose_on is None:
        for m in margins:
            print(write_margin_policy(args.policy, margin_policy_dir(args.output, m), m))
        return 0
    return _choose(args, net.problem, margins)


def _choose(args: argparse.Namespace, problem: str, margins: list[float]) -> int:
    from corpus_tools.corpus import Corpus
    from mlgo.cli.common import setup_gin
    from mlgo.evaluate import evaluate_policy, write_json
    from mlgo.policies.margin import choose_flip_margin, margin_policy_dir
    from mlgo.problems import get_problem
    from mlgo.workers.pool import make_pool

    gin_config = setup_gin(argparse.Namespace(
        gin_file=args.gin_file, gin_bindings=args.gin_bindings, problem=problem,
        env=args.env or DEFAULT_ENVIRONMENT))
    corpus = Corpus.load(args.choose_on)
    if len(corpus) == 0:
        raise MlgoError(f"{args.choose_on}: the corpus has no modules")
    get_problem(problem).check_corpus(corpus)
    pool = make_pool(args.workers or None, args.ray)

    def evaluate(policy: Path) -> dict:
        rep = evaluate_policy(problem, str(policy), corpus, pool, gin_config=gin_config,
                              timeout=args.timeout, label=policy.name)
        if rep.failures:
            first = rep.failures[0]
            raise MlgoError(f"{policy}: {len(rep.failures)} module(s) of {args.choose_on} failed "
                            f"(first: {first['module']}: {first['error'].splitlines()[0]}); a "
                            "margin chosen on part of the validation modules would not be "
                            "comparable")
        write_json(rep, args.output / f"eval-margin-{policy.name.removeprefix('margin-')}.json")
        return rep.to_json()

    try:
        chosen, reports = choose_flip_margin(args.policy, args.output, margins, evaluate, problem)
    finally:
        pool.close()
    print(f"\n{'flip margin':>11s} {'policy total':>14s} {'change':>9s}")
    for m, r in reports.items():
        mark = "  <- chosen" if m == chosen else ""
        print(f"{m:11g} {r['policy_total']:14.0f} {100 * r['relative_change']:+8.3f}%{mark}")
    print(f"flip margin {chosen:g} chosen on the {len(corpus)} modules of {args.choose_on}: "
          f"{margin_policy_dir(args.output, chosen)}")
    return 0


def _choose_on_programs(args: argparse.Namespace, problem: str, margins: list[float]) -> int:
    import tempfile

    from mlgo.policies.margin import choose_margin, margin_policy_dir, write_margin_policy
    from mlgo.serving.program_runs import (
        check_choice_programs,
        plain_instructions,
        policy_instructions,
        program_changes,
    )

    if problem != "regalloc":
        raise MlgoError(f"{args.policy}: --choose-on-programs measures eviction policies "
                        f"(regalloc), not {problem}")
    programs = list(dict.fromkeys(args.choose_on_programs))
    check_choice_programs(programs)
    limit = None if args.max_program_change is None else args.max_program_change / 100
    changes: dict[float, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlgo-margin-") as tmp:
        work = args.workdir or Path(tmp)
        plain = plain_instructions(programs, work)
        for m in margins:
            policy = write_margin_policy(args.policy, margin_policy_dir(args.output, m), m)
            changes[m] = program_changes(plain, policy_instructions(str(policy.resolve()),
                                                                    programs, work))
    print(f"\n{'flip margin':>11s}" + "".join(f"{p[:18]:>20s}" for p in programs)
          + f"{'total':>10s}")
    for m, c in changes.items():
        print(f"{m:11g}" + "".join(f"{100 * c[p]:+19.3f}%" for p in programs)
              + f"{100 * c['total']:+9.3f}%")
    chosen = choose_margin({m: c["total"] for m, c in changes.items()},
                           {m: max(c[p] for p in programs) for m, c in changes.items()}, limit)
    print(f"flip margin {chosen:g} chosen on {', '.join(programs)} (instructions executed): "
          f"{margin_policy_dir(args.output, chosen)}")
    return 0
