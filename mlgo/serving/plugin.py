"""The inliner pass plugin: `inliner_plugin.cpp` + a policy's C source -> libmlgo_inliner.so,
built against llvm-19-dev and cached under `<cache>/plugins/<hash>/`.

    so = build_plugin(c_source.heuristic_c_source("inlining", "cost-threshold"))
    clang-19 -Oz -fpass-plugin=<so> -c x.c
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlgo.policies import c_source
from mlgo.policies.builtins import RULES
from mlgo.policies.shipped import policy_choices, resolve
from mlgo.serving.build import (
    SOURCE_DIR,
    BuildError,
    cache_root,
    cached_artifact,
    content_key,
    file_identity,
    label_source,
    packaged_source,
    run_build,
)
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError, ToolchainError
from mlgo_base.files import atomic_write_text

PLUGIN_SOURCE = "inliner_plugin.cpp"
BINDING_HEADER = "policy_binding.h"  # included by the plugin: binds the policy's inputs by name
PLUGIN_FILE = "libmlgo_inliner.so"
PLUGIN_OBJECT = "inliner_plugin.o"

# Flags that must not reach the plugin's link: the plugin's LLVM symbols are resolved from
# libLLVM inside clang's process, so "no undefined symbols" would make the link fail.
_FORBIDDEN_LINK_FLAGS = ("-Wl,--no-undefined", "-Wl,-z,defs", "-Wl,-no-undefined")

# A module with a call site worth deciding on: the build's smoke test checks that the plugin
# loads into clang-19 and that the inliner really asks it.
_SMOKE_C = """
static int mlgo_square(int x) { return x * x; }
int mlgo_smoke(int y) { return mlgo_square(y) + mlgo_square(y + 1); }
"""


@dataclass(frozen=True)
class LlvmDev:
    llvm_config: str
    version: str
    cxxflags: tuple[str, ...]


@functools.cache
def llvm_dev() -> LlvmDev:
    """llvm-config-19's version and C++ flags (ToolchainError if llvm-19-dev is missing)."""
    tool = toolchain.find_tool("llvm-config", check_version=False)

    def ask(flag: str) -> str:
        try:
            out = subprocess.run([tool.path, flag], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolchainError(f"{tool.path} {flag} failed: {e}") from e
        if out.returncode != 0:
            raise ToolchainError(f"{tool.path} {flag} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    version = ask("--version")
    if not version.startswith(f"{toolchain.LLVM_MAJOR}."):
        raise ToolchainError(
            f"{tool.path} is LLVM {version}; the plugin must be built against LLVM "
            f"{toolchain.LLVM_MAJOR} (the clang that loads it): " + toolchain.INSTALL_HINT
        )
    flags = tuple(f for f in ask("--cxxflags").split() if f not in _FORBIDDEN_LINK_FLAGS)
    return LlvmDev(tool.path, version, flags)


def plugin_object() -> Path:
    """inliner_plugin.cpp compiled against llvm-19-dev: the slow part of every plugin build
    (LLVM's headers), shared by all policies and cached by source, LLVM version and flags."""
    llvm = llvm_dev()
    cxx = toolchain.clangxx()
    source, header = packaged_source(PLUGIN_SOURCE), packaged_source(BINDING_HEADER)
    flags = ["-O2", "-fPIC", *llvm.cxxflags]
    key = content_key("inliner-plugin-object", source, header, llvm.version, " ".join(flags),
                      file_identity(cxx.path))

    def build(tmp: Path) -> dict:
        src = tmp / PLUGIN_SOURCE
        src.write_text(source)
        (tmp / BINDING_HEADER).write_text(header)
        run_build([cxx.path, *flags, "-c", str(src), "-o", str(tmp / PLUGIN_OBJECT)],
                  Path(SOURCE_DIR) / PLUGIN_SOURCE, "the inliner plugin")
        return {"llvm_version": llvm.version}

    return cached_artifact("plugin-objects", key, PLUGIN_OBJECT, build)


def build_plugin(policy_c_source: str, *, policy_label: str = "policy") -> Path:
    """Path of libmlgo_inliner.so serving `policy_c_source` (mlgo/policies/c_source.py's ABI),
    building it on first use. The cache key covers the plugin's and the policy's sources, the
    LLVM version and flags, and the compilers, so a plugin built for another LLVM is never
    reused (and the plugin itself refuses to load into a different LLVM)."""
    llvm = llvm_dev()
    cc, cxx = toolchain.clang(), toolchain.clangxx()
    obj = plugin_object()
    key = content_key("inliner-plugin", obj.parent.name, policy_c_source, policy_label,
                      llvm.version, file_identity(cc.path), file_identity(cxx.path))

    def build(tmp: Path) -> dict:
        policy_c = tmp / "policy.c"
        policy_c.write_text(policy_c_source + label_source(policy_label))
        run_build([cc.path, "-O2", "-fPIC", "-c", str(policy_c), "-o", str(tmp / "policy.o")],
                  policy_c, f"the {policy_label} policy")
        out = tmp / PLUGIN_FILE
        # Link nothing: LLVM's symbols resolve against the libLLVM already in clang's process.
        run_build([cxx.path, "-shared", "-fPIC", str(obj), str(tmp / "policy.o"), "-o", str(out)],
                  policy_c, f"the inliner plugin for the {policy_label} policy")
        _smoke_test(out, cc.path, policy_label)
        (tmp / "policy.o").unlink()
        return {"llvm_version": llvm.version, "policy": policy_label}

    return cached_artifact("plugins", key, PLUGIN_FILE, build)


def _smoke_test(plugin: Path, clang: str, policy_label: str) -> None:
    """Compile a two-function module with the plugin and check it made the inlining decision."""
    with tempfile.TemporaryDirectory(prefix="mlgo-plugin-check-") as d:
        src, log = Path(d) / "smoke.c", Path(d) / "decisions.txt"
        src.write_text(_SMOKE_C)
        env = dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log))
        proc = subprocess.run([clang, "-Oz", "-c", str(src), "-o", str(Path(d) / "smoke.o"),
                               f"-fpass-plugin={plugin}"], capture_output=True, text=True,
                              env=env, timeout=120)
        if proc.returncode != 0:
            raise BuildError(f"inliner plugin for the {policy_label} policy: it does not work in "
                             f"{clang}:\n"
                             f"{proc.stderr.strip()[-3000:]}")
        if not log.is_file() or not log.read_text().strip():
            raise BuildError(f"inliner plugin for the {policy_label} policy: clang loaded {plugin}"
                             " but its inliner never consulted it (no decision logged)")


def policy_source(policy: str, problem: str) -> tuple[str, str]:
    """(C source, label) of a built-in heuristic's name, a shipped policy's name or a trained
    policy directory, for `problem`'s consumer (the plugin: inlining; mlgo-clang: regalloc)."""
    if not policy:  # as a path, "" is the current directory
        raise MlgoError(f"the {problem} policy is an empty name: give a built-in heuristic "
                        f"({', '.join(RULES[problem])}), a shipped policy or a policy directory")
    if policy in RULES[problem]:
        return _generated(_source_key(problem, policy, generator_files()),
                          lambda: c_source.heuristic_c_source(problem, policy)), policy
    path = Path(resolve(policy))
    if path.is_dir():
        return trained_policy_source(path, problem)
    if problem == "inlining" and policy in ("default", "llvm-default"):
        raise MlgoError(f"{policy}: LLVM's own inliner needs no plugin: plain clang-19 -Oz is it")
    raise MlgoError(f"unknown {problem} policy {policy!r}: give "
                    f"{policy_choices(RULES[problem])}")


def trained_policy_source(path: Path, problem: str) -> tuple[str, str]:
    """C source (and label) of a trained policy directory (mlgo.policies.c_source)."""
    key = _source_key(problem, path, generator_files())
    return _generated(key, lambda: c_source.policy_c_source(path, problem)), str(path.resolve())


def _generated(key: str, generate: Callable[[], str]) -> str:
    """The C `generate` makes, cached under `key`. Generating imports numpy and may load a
    policy (~0.2 s), and mlgo-clang asks for its policy's C on every compile."""
    cached = os.path.join(cache_root(), "policy-c", key[:32] + ".c")
    try:
        with open(cached) as f:
            return f.read()
    except OSError:
        pass
    source = generate()
    atomic_write_text(cached, source)  # concurrent compiles write the same text: any rename wins
    return source


def generator_files() -> list[Path]:
    """The modules whose code decides a policy's C: the policy package (graphs, operations,
    heuristics, loading, the C ABI), the problems' networks and LLVM 19's facts."""
    mlgo = Path(SOURCE_DIR).parent
    return sorted([*mlgo.glob("policies/*.py"), *mlgo.glob("problems/*/network.py"),
                   mlgo / "protocol" / "llvm19.py"])


def _source_key(problem: str, policy: Path | str, generator: list[Path]) -> str:
    """Hash of the generator's files and of the policy: a built-in heuristic's name, or every
    file of a policy directory (names and bytes)."""
    h = hashlib.sha256(f"{problem}\0".encode())
    files = list(generator)
    if isinstance(policy, Path):
        files = sorted(p for p in policy.rglob("*") if p.is_file()) + files
    else:
        h.update(f"built-in {policy}\0".encode())
    for f in files:
        name = f.relative_to(policy) if isinstance(policy, Path) and f.is_relative_to(policy) \
            else f.name
        h.update(str(name).encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0\1")
    return h.hexdigest()


def plugin_for(policy: str) -> Path:
    """A ready plugin for `policy` (built-in heuristic name or policy directory)."""
    source, label = policy_source(policy, "inlining")
    return build_plugin(source, policy_label=label)
