"""Policies shipped with mlgo, found by name: `mlgo/shipped_policies/<name>/policy`, package data
(so a wheel install has them too; `policies/` at the top of the checkout links to the same folder).

`mlgo eval --policy inlining-oz`, `mlgo plugin inlining-oz` and `MLGO_INLINE_POLICY=inlining-oz`
all resolve the name here, so a shipped policy works wherever a policy directory does. Each
shipped policy sits beside its REPORT.md (how it was trained, measured results on held-out
projects) and its manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

from mlgo_base.errors import MlgoError


def _package_dir(name: str) -> Path:
    # The compiler and the plugin builder need real files; pip always installs packages as
    # directories, so a non-directory resource means a zipped install that cannot work.
    d = files("mlgo") / name
    if not isinstance(d, Path):
        raise MlgoError(f"mlgo is installed as {d}, not as a directory: shipped policies need "
                        "files on disk (install with pip)")
    return d


SHIPPED_DIR = _package_dir("shipped_policies")


def shipped_names() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "policy" / "policy.json").is_file())


def resolve(policy: str) -> str:
    """The policy directory of a shipped policy name; any other string unchanged."""
    if "/" not in policy and (SHIPPED_DIR / policy / "policy" / "policy.json").is_file():
        return str(SHIPPED_DIR / policy / "policy")
    return policy


def policy_choices(builtins: Iterable[str]) -> str:
    """What a policy name may be, for errors about one that is none of them."""
    shipped = ", ".join(shipped_names()) or "none installed"
    return (f"a built-in policy ({', '.join(builtins)}), a shipped policy ({shipped}) or a "
            "policy directory")
