"""`mlgo corpus ...`: extract, debian, merge, check, report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from corpus_tools.corpus import EXTRACT_LEVELS, KEEP_LEVEL, level_flag
from mlgo.cli.args import timeout_arg, workers_arg
from mlgo.cli.common import add_llvm_version_arg
from mlgo_base.errors import CorpusError


def _default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def register(subparsers: argparse._SubParsersAction) -> None:
    corpus = subparsers.add_parser("corpus", help="build, merge, check and describe corpora")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND", required=True)

    ex = sub.add_parser(
        "extract", help="extract bitcode + commands from a build into a corpus",
        description="Extract modules from one source. Re-running resumes: modules already "
        "present are skipped.")
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--compile-db", type=Path, metavar="FILE",
                     help="compile_commands.json: every compile is re-run to bitcode")
    src.add_argument("--objects", type=Path, metavar="DIR",
                     help="objects built with -Xclang -fembed-bitcode=all")
    src.add_argument("--sources", type=Path, metavar="DIR",
                     help="a source tree: every .c/.cc/.cpp/.cxx is compiled")
    ex.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                    help="include directory (with --sources)")
    ex.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                    help="macro definition (with --sources)")
    ex.add_argument("--codegen-flags", default="-O2", metavar="FLAGS",
                    help="flags for compiling and for each module's .cmd, with --sources "
                    "(default: %(default)s; --opt-level replaces its level)")
    ex.add_argument("--root", type=Path, help="with --compile-db: module names are source "
                    "paths relative to this (default: the common directory of the sources)")
    ex.add_argument("--project", help="project name, the first component of module names "
                    "(default: the directory name; required with --compile-db)")
    _level_args(ex)
    _common(ex)
    ex.set_defaults(func=_cmd_extract)

    deb = sub.add_parser("debian", help="build Debian source packages with the chosen clang into "
                         "one corpus (one project per package)")
    deb.add_argument("packages", nargs="*", metavar="PKG",
                     help="source package names with a recipe in corpus_tools/debian_recipes")
    deb.add_argument("--all", action="store_true", help="every package with a recipe")
    deb.add_argument("--recipe", type=Path, action="append", default=[], metavar="FILE",
                     help="build the package a recipe file of your own describes (same format "
                     "as corpus_tools/debian_recipes/*.toml); may be repeated")
    deb.add_argument("--list", action="store_true", help="list the recipes and exit")
    deb.add_argument("--cache", type=Path, default=None,
                     help="download/build cache (default: ~/.cache/mlgo/debian)")
    deb.add_argument("--rebuild", action="store_true",
                     help="rebuild even if the cache holds a finished build")
    deb.add_argument("-o", "--output", type=Path, help="corpus directory")
    deb.add_argument("-j", "--jobs", type=workers_arg, default=_default_jobs(),
                     help="parallel compiles (default: cores)")
    deb.add_argument("--no-progress", action="store_true",
                     help="no progress bar")
    deb.add_argument("--timeout", type=timeout_arg, default=600.0, help="seconds per compile")
    deb.add_argument("--verify", action="store_true",
                     help="recompile each newly extracted module with its .cmd afterwards")
    _level_args(deb)
    deb.set_defaults(func=_cmd_debian)

    merge = sub.add_parser("merge", help="merge corpora into one (dedupes identical bitcode)")
    merge.add_argument("inputs", nargs="+", type=Path, metavar="CORPUS",
                       help="corpus directories to merge")
    merge.add_argument("-o", "--output", type=Path, required=True,
                       help="the merged corpus's directory")
    merge.add_argument("--copy", action="store_true", help="copy files instead of hard links")
    merge.add_argument("--projects", type=_project_list, metavar="P,Q",
                       help="keep only these projects of the inputs")
    merge.add_argument("--exclude-projects", type=_project_list, default=[], metavar="P,Q",
                       help="drop these projects of the inputs (e.g. the held-out ones)")
    kept = merge.add_mutually_exclusive_group()
    kept.add_argument("--modules", type=_module_list, metavar="M,N",
                      help="keep only these modules of the inputs (names as in "
                      "corpus_description.json, e.g. lua5.4/src/lvm.c)")
    kept.add_argument("--modules-from", type=Path, metavar="FILE",
                      help="keep only the modules named in FILE, one a line (# starts a comment)")
    merge.set_defaults(func=_cmd_merge)

    check = sub.add_parser("check", help="recompile every module with its .cmd")
    check.add_argument("corpus", type=Path, help="corpus directory")
    check.add_argument("-j", "--jobs", type=workers_arg, default=_default_jobs(),
                     help="parallel compiles (default: cores)")
    check.add_argument("--timeout", type=timeout_arg, default=600.0, help="seconds per module")
    check.add_argument("--no-progress", action="store_true",
                     help="no progress bar")
    check.set_defaults(func=_cmd_check)

    report = sub.add_parser("report", help="statistics of a corpus's IR")
    report.add_argument("corpus", type=Path, help="corpus directory")
    report.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the report as JSON")
    report.add_argument("-j", "--jobs", type=workers_arg, default=_default_jobs(),
                     help="parallel compiles (default: cores)")
    report.add_argument("--decisions", type=Path, default=None, metavar="TRACE_OR_SEARCH",
                        help="also join the decisions of a trace or search directory made with "
                             "--env plugin to the call graph of each module before optimization, "
                             "and tabulate where they and their flips fall")
    report.set_defaults(func=_cmd_report)


# The build a corpus serves: inlining-for-size policies serve -Oz builds, whose frontend marks
# every function minsize/optsize; regalloc policies serve the build's own level.
_DEFAULT_LEVEL = {"inlining": "Oz", "regalloc": KEEP_LEVEL}


def _level_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", choices=sorted(_DEFAULT_LEVEL), default="inlining",
                   help="the problem the corpus is for; sets the default --opt-level "
                   "(default: %(default)s)")
    p.add_argument("--opt-level", choices=[*EXTRACT_LEVELS, KEEP_LEVEL], default=None,
                   help="optimization level the IR is emitted at, as `clang -<level> -c` "
                   "emits it; 'keep': each compile's own (default: Oz for inlining, keep for "
                   "regalloc)")
    add_llvm_version_arg(p)


def _opt_level(args: argparse.Namespace) -> str | None:
    return level_flag(args.opt_level or _DEFAULT_LEVEL[args.problem])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="corpus directory")
    p.add_argument("-j", "--jobs", type=workers_arg, default=_default_jobs(),
                     help="parallel compiles (default: cores)")
    p.add_argument("--timeout", type=timeout_arg, default=600.0, help="seconds per compile")
    p.add_argument("--no-progress", action="store_true",
                     help="no progress bar")
    p.add_argument("--verify", action="store_true",
                   help="recompile each newly extracted module with its .cmd afterwards")


def _verify(out: Path, summary, args: argparse.Namespace) -> int:
    """Recompile the modules this run added; 1 if any fails."""
    from corpus_tools.check import check_corpus

    if not summary.extracted:
        return 0
    check = check_corpus(out, modules=summary.extracted, jobs=args.jobs,
                                 timeout=args.timeout, progress=not args.no_progress)
    print(check.format())
    return 1 if check.failed else 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from corpus_tools import extract

    common = dict(jobs=args.jobs, timeout=args.timeout, progress=not args.no_progress,
                  opt_level=_opt_level(args))
    if (args.include_dirs or args.defines) and not args.sources:
        raise CorpusError("-I/-D only apply with --sources (a compile database or an "
                          "object's embedded command carries its own)")
    if args.compile_db:
        if not args.project:
            raise CorpusError("--compile-db needs --project NAME")
        summary = extract.extract_compile_db(args.compile_db, args.output,
                                             project=args.project, root=args.root, **common)
    elif args.objects:
        summary = extract.extract_objects(args.objects, args.output, project=args.project,
                                          **common)
    else:
        flags = [f"-I{d}" for d in args.include_dirs] + [f"-D{d}" for d in args.defines]
        summary = extract.extract_sources(args.sources, args.output, project=args.project,
                                          flags=flags,
                                          codegen_flags=shlex.split(args.codegen_flags),
                                          **common)
    print(summary.format())
    verify_failed = _verify(args.output, summary, args) if args.verify else 0
    return 1 if summary.failed or verify_failed else 0


def _cmd_debian(args: argparse.Namespace) -> int:
    from corpus_tools import debian
    from corpus_tools.debian_recipe import all_recipes, parse_recipe

    if args.list:
        for r in all_recipes():
            tested = r.tested
            print(f"{r.package:20} {r.language:4} {r.build:13} "
                  f"modules={tested.get('modules', '?')} "
                  f"build_seconds={tested.get('build_seconds', '?')}")
        return 0
    own = {}
    for path in args.recipe:
        recipe = parse_recipe(path)
        if recipe.package in own:
            raise CorpusError(f"{path}: package {recipe.package!r} is also described by "
                              f"{own[recipe.package].source}")
        own[recipe.package] = recipe
    packages = [r.package for r in all_recipes()] if args.all else args.packages
    packages = [*packages, *(p for p in own if p not in packages)]
    if not packages:
        raise CorpusError("name at least one package (or --all, --recipe FILE or --list)")
    if args.output is None:
        raise CorpusError("-o CORPUS is required")
    cache = args.cache or debian.DEFAULT_CACHE
    failed = []
    for pkg in packages:
        try:
            res = debian.build_package(pkg, args.output, cache=cache, jobs=args.jobs,
                                       progress=not args.no_progress, rebuild=args.rebuild,
                                       timeout=args.timeout, opt_level=_opt_level(args),
                                       recipe=own.get(pkg))
        except CorpusError as e:
            # One package failing to build should not lose the others.
            message = str(e)
            named = message.startswith(f"{pkg}:")
            print(f"mlgo: {message}" if named else f"mlgo: {pkg}: {message}", file=sys.stderr)
            failed.append(pkg)
            continue
        if res.build_seconds:
            print(f"{pkg}: built in {res.build_seconds:.0f} s")
        else:
            print(f"{pkg}: reused the cached build")
        print(res.extract.format())
        if res.build_failure:
            # The compiles it ran are extracted; what failed afterwards is said, and the
            # package counts as failed, since a build stopped early may have compiled less.
            print(f"mlgo: {res.build_failure}; the modules of the compiles it ran are kept",
                  file=sys.stderr)
        verify_failed = _verify(args.output, res.extract, args) if args.verify else 0
        if res.extract.failed or verify_failed or res.build_failure:
            failed.append(pkg)
    if failed:
        print(f"packages with failures: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _project_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated project names")
    return names


def _module_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated module names")
    return names


def _read_module_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: cannot read the module list: {e}") from None
    names = [n for n in (line.split("#", 1)[0].strip() for line in lines) if n]
    if not names:
        raise CorpusError(f"{path}: names no module (expected one module name a line)")
    return names


def _cmd_merge(args: argparse.Namespace) -> int:
    from corpus_tools.merge import merge_corpora

    keep_modules = (_read_module_list(args.modules_from) if args.modules_from is not None
                    else args.modules)
    summary = merge_corpora(args.inputs, args.output, link=not args.copy,
                            keep_projects=args.projects, drop_projects=args.exclude_projects,
                            keep_modules=keep_modules)
    print(summary.format())
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from corpus_tools.check import check_corpus

    summary = check_corpus(args.corpus, jobs=args.jobs, timeout=args.timeout,
                           progress=not args.no_progress)
    print(summary.format())
    return 1 if summary.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from corpus_tools.report import run_report

    decisions = None
    if args.decisions is not None:
        from mlgo.traces import trace_decisions

        decisions = (str(args.decisions), trace_decisions(args.decisions))
    return run_report(args.corpus, args.json, args.jobs, decisions)
