"""The native regalloc host: `regalloc_host.cpp` + a policy's C source -> an executable that
serves the policy on an interactive channel, built on first use and cached under
`<cache>/hosts/<hash>/`.

This module is on the per-compile path of `mlgo-clang`: finding an already-built host must
cost no subprocess and no heavy import."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mlgo.errors import MlgoError
from mlgo.serving import codegen
from mlgo.serving.build import (
    SOURCE_DIR,
    cached_artifact,
    content_key,
    file_identity,
    find_artifact,
    label_source,
    packaged_source,
    run_build,
)

if TYPE_CHECKING:
    from pathlib import Path

HOST_SOURCE = "regalloc_host.cpp"
HOST_FILE = "mlgo-regalloc-host"

# Exit statuses of the host (see regalloc_host.cpp).
EXIT_FEATURE_MISMATCH = 3
EXIT_NEVER_CONNECTED = 4
EXIT_PROTOCOL = 5


def _compiler(name: str, *, allow_override: bool = True) -> str:
    """clang-19 / clang++-19 (or its MLGO_CLANG / MLGO_CLANG__ override) without running it."""
    override = allow_override and os.environ.get(
        "MLGO_" + name.replace("+", "_").replace("-", "_").upper())
    path = override or _which(f"{name}-19") or f"/usr/lib/llvm-19/bin/{name}"
    if os.path.sep not in path:
        path = _which(path) or path
    if not os.access(path, os.X_OK):
        raise MlgoError(f"{name}-19 not found; the regalloc host is built with it "
                        "(apt-get install clang-19)")
    return path


def _which(name: str) -> str | None:
    # shutil.which costs an import of shutil (and fnmatch) on every compile.
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def build_host(policy_c_source: str, *, policy_label: str = "policy") -> str:
    """Path of the host executable serving `policy_c_source` (ABI in mlgo.serving.codegen)."""
    # The real clang-19 builds the host even when the wrapper is pointed at another compiler.
    cc = _compiler("clang", allow_override=False)
    cxx = _compiler("clang++", allow_override=False)
    source = packaged_source(HOST_SOURCE)
    key = content_key("regalloc-host", source, policy_c_source, policy_label,
                      file_identity(cc), file_identity(cxx))
    found = find_artifact("hosts", key, HOST_FILE)
    if found:
        return found

    def build(tmp: Path) -> dict:
        from mlgo.compiler import toolchain

        for name, path in (("clang", cc), ("clang++", cxx)):
            version = toolchain._version_of(path)
            if not version.startswith(f"{toolchain.LLVM_MAJOR}."):
                raise MlgoError(f"{path} is version {version or 'unknown'}; the regalloc host "
                                f"is built with clang {toolchain.LLVM_MAJOR} ({name})")
        policy_c = tmp / "policy.c"
        policy_c.write_text(policy_c_source + label_source(policy_label))
        run_build([cc, "-O2", "-c", str(policy_c), "-o", str(tmp / "policy.o")],
                  policy_c, f"the {policy_label} eviction policy")
        host_src = tmp / HOST_SOURCE
        host_src.write_text(source)
        run_build([cxx, "-O2", "-std=c++17", "-Wall", str(host_src), str(tmp / "policy.o"),
                   "-o", str(tmp / HOST_FILE)],
                  os.path.join(SOURCE_DIR, HOST_SOURCE),
                  f"the regalloc host for the {policy_label} policy")
        (tmp / "policy.o").unlink()
        return {"policy": policy_label}

    return str(cached_artifact("hosts", key, HOST_FILE, build))


def policy_source(policy: str) -> tuple[str, str]:
    """(C source, label) for a built-in eviction heuristic name or a trained policy directory."""
    if policy in codegen.REGALLOC_HEURISTICS:
        return codegen.REGALLOC_HEURISTICS[policy](), policy
    from mlgo.policies.shipped import resolve

    policy = resolve(policy)
    if not os.path.isdir(policy):
        raise MlgoError(
            f"{policy}: neither a built-in eviction policy "
            f"({', '.join(codegen.REGALLOC_HEURISTICS)}) nor a policy directory"
        )
    from pathlib import Path

    from mlgo.serving.plugin import trained_policy_source

    return trained_policy_source(Path(policy), "regalloc")


def host_for(policy: str) -> str:
    source, label = policy_source(policy)
    return build_host(source, policy_label=label)
