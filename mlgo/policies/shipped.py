"""Policies shipped with mlgo, found by name: `policies/<name>/policy` in the source tree.

`mlgo eval --policy inlining-oz`, `mlgo plugin inlining-oz` and `MLGO_INLINE_POLICY=inlining-oz`
all resolve the name here, so a shipped policy works wherever a policy directory does. Each
shipped policy sits beside its REPORT.md (how it was trained, measured results on held-out
projects) and its manifest.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent.parent / "policies"


def shipped_names() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "policy" / "policy.json").is_file())


def resolve(policy: str) -> str:
    """The policy directory of a shipped policy name; any other string unchanged."""
    if "/" not in policy and (SHIPPED_DIR / policy / "policy" / "policy.json").is_file():
        return str(SHIPPED_DIR / policy / "policy")
    return policy
