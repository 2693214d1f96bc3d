"""`mlgo profile`: the block profiles regalloc's trace-cost reward reads
(`--gin_bindings "regalloc.RegallocEviction.profile='FILE'"`; mlgo/problems/regalloc/profile.py).

    mlgo profile make --program EXE --callgrind OUT.cg [--callgrind ...] \\
        --module PROJECT/src/a.c=build/a.o [--module ...] -o profile.json
    mlgo profile merge a.json b.json -o profile.json
    mlgo profile programs -o profile.json --corpus CORPUS     # the training programs

`make` takes a program linked from objects compiled with -fbasic-block-address-map, the output
of its run under `valgrind --tool=callgrind --dump-instr=yes`, and which object each corpus
module became; the module names must be the corpus's (`mlgo corpus` names them PROJECT/PATH).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgo_base import toolchain
from mlgo_base.errors import MlgoError


def _module_object(text: str) -> tuple[str, Path]:
    name, sep, obj = text.partition("=")
    if not sep or not name or not obj:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODULE=OBJECT")
    return name, Path(obj)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", description=__doc__.split("\n\n")[0],
                       help="regalloc block profiles (trace-cost reward): from a callgrind run, "
                       "from the training programs, or merged")
    actions = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    make = actions.add_parser(
        "make", help="a profile from a program's run under callgrind",
        description="The block profile of each corpus module from one profiled run of the "
        "program its objects were linked into.")
    make.add_argument("--program", required=True, type=Path,
                      help="the program, linked from objects compiled with "
                      "-fbasic-block-address-map")
    make.add_argument("--callgrind", required=True, type=Path, action="append", metavar="FILE",
                      help="callgrind output of its run (--dump-instr=yes); repeat for a workload "
                      "of several runs")
    make.add_argument("--module", required=True, type=_module_object, action="append",
                      metavar="MODULE=OBJECT", dest="modules",
                      help="a corpus module and the object the program's build made of it")
    make.add_argument("-o", "--output", required=True, type=Path,
                      help="the profile file to write")
    make.set_defaults(func=run_make)
    merge = actions.add_parser("merge", help="several profiles in one file",
                               description="The modules of several profiles in one file; a "
                               "module in two of them must have the same profile in both.")
    merge.add_argument("inputs", nargs="+", type=Path, metavar="PROFILE",
                       help="profiles to merge (a module may be in only one of them)")
    merge.add_argument("-o", "--output", required=True, type=Path,
                       help="the merged profile file to write")
    merge.set_defaults(func=run_merge)
    progs = actions.add_parser(
        "programs", help="the profile and corpus of regalloc's training programs",
        description="Build each training program (mlgo/problems/regalloc/programs.py) plain from "
        "its Debian package's recorded compile commands (run `mlgo corpus debian PACKAGE` "
        "first), run its workload under callgrind, check the output, and write the block "
        "profile of every module; with --corpus, also extract the compiles profiled into a "
        "corpus whose module names are the profile's.")
    progs.add_argument("--program", action="append", dest="programs", metavar="PROGRAM",
                       help="a training program (default: all of them); --list shows them")
    progs.add_argument("--list", action="store_true", help="list the programs and exit")
    progs.add_argument("-o", "--output", type=Path, help="the profile file to write")
    progs.add_argument("--corpus", type=Path, help="also extract the compiles into this corpus")
    progs.add_argument("--workdir", type=Path,
                       help="keep the builds and callgrind files here (default: temporary)")
    progs.add_argument("--cache", type=Path, default=None,
                       help="`mlgo corpus debian`'s cache (default: ~/.cache/mlgo/debian)")
    progs.set_defaults(func=run_programs)


def run_make(args: argparse.Namespace) -> int:
    from mlgo.problems.regalloc.profile import program_profile, write_profile

    objects = dict(args.modules)
    if len(objects) != len(args.modules):
        raise MlgoError("a module is given twice with --module")
    for name, obj in objects.items():
        if not obj.is_file():
            raise MlgoError(f"{obj}: no such object file (module {name})")
    if not args.program.is_file():
        raise MlgoError(f"{args.program}: no such program")
    profile = program_profile(args.program, args.callgrind, objects)
    write_profile(args.output, profile,
                  f"mlgo profile make: {args.program} run under callgrind "
                  f"({', '.join(str(f) for f in args.callgrind)})")
    ran = sum(1 for fns in profile.values() if fns)
    print(f"{args.output}: {len(profile)} modules, {ran} of them executed")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from mlgo.problems.regalloc.profile import merge_profiles, write_profile

    if args.output.resolve() in {p.resolve() for p in args.inputs}:
        raise MlgoError(f"{args.output}: the output is also an input")
    profile = merge_profiles(args.inputs)
    write_profile(args.output, profile,
                  "mlgo profile merge of " + ", ".join(str(p) for p in args.inputs))
    print(f"{args.output}: {len(profile)} modules from {len(args.inputs)} profiles")
    return 0


def run_programs(args: argparse.Namespace) -> int:
    from mlgo.problems.regalloc.profile import write_profile
    from mlgo.problems.regalloc.program_profiles import profile_programs
    from mlgo.problems.regalloc.programs import EXTRA_TRAINING, HELD_OUT, TRAINING, VALIDATION

    if args.list:
        for kind, names in (("training", TRAINING + EXTRA_TRAINING), ("validation", VALIDATION),
                            ("held out", HELD_OUT)):
            for name in names:
                print(f"{name:20s} {kind}")
        return 0
    if args.output is None:
        raise MlgoError("mlgo profile programs: -o/--output is required")
    programs = args.programs or list(TRAINING + EXTRA_TRAINING)
    profile = profile_programs(programs, corpus=args.corpus, workdir=args.workdir,
                               cache=args.cache)
    write_profile(args.output, profile,
                  f"mlgo profile programs: plain clang-{toolchain.llvm_major()} builds of "
                  + ", ".join(programs) + " running their workloads (mlgo/problems/regalloc/programs.py)")
    print(f"{args.output}: {len(profile)} modules of {len(programs)} programs"
          + (f"; corpus: {args.corpus}" if args.corpus else ""))
    return 0
