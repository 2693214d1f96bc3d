"""`mlgo export`: SavedModel + XLA AOT artifacts + manifest from a policy directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a policy for LLVM (SavedModel, XLA AOT, manifest)")
    p.add_argument("--policy", required=True,
                   help="policy directory (e.g. RUN/best) or shipped policy name (policies/NAME)")
    p.add_argument("--output", "-o", required=True, type=Path,
                   help="directory for the SavedModel, the AOT artifacts and the manifest")
    p.add_argument("--no-aot", action="store_true", help="skip XLA AOT compilation")
    p.add_argument("--force", action="store_true",
                   help="export even if the policy is worse than the default on validation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlgo.export.bundle import export_policy
    from mlgo.policies.shipped import resolve

    m = export_policy(Path(resolve(args.policy)), args.output, aot=not args.no_aot, force=args.force)
    print(f"exported {m['problem']} policy to {args.output}: {', '.join(m['artifacts'])}")
    if m["validation"] is not None:
        flag = "  (WORSE than the default: exported with --force)" if m["worse_than_default"] else ""
        print(f"validation: {100 * m['validation']['relative_change']:+.2f}% vs default{flag}")
    else:
        print("validation: none recorded for this policy")
    print(f"LLVM release build: cmake {m['llvm_cmake']} ...")
    return 0
