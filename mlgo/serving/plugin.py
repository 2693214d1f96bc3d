"""The inliner pass plugin: `inliner_plugin.cpp` + a policy's C source -> libmlgo_inliner.so,
built against the chosen LLVM's headers (llvm-19-dev or llvm-22-dev, mlgo_base/toolchain.py)
and cached under `<cache>/plugins/<hash>/`, the key naming that LLVM version.

    so = build_plugin(c_source.heuristic_c_source("inlining", "cost-threshold"))
    clang-19 -Oz -fpass-plugin=<so> -c x.c     (clang-22 with MLGO_LLVM_VERSION=22)

`channel_plugin()` is the build with no policy, which only decides through its training
channel: the environment of `--env plugin` (mlgo/compiler/plugin_env.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
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
from mlgo_base.process import ProcessError, run

PLUGIN_SOURCE = "inliner_plugin.cpp"
# Included by the plugin: binding the policy's inputs by name, the plugin's own features, its
# decision log and training channel, its advisor computing only the features bound.
BINDING_HEADER = "policy_binding.h"
PLUGIN_HEADERS = (BINDING_HEADER, "plugin_features.h", "plugin_io.h", "plugin_decisions.h",
                  "plugin_advice.h")
PLUGIN_FILE = "libmlgo_inliner.so"
PLUGIN_OBJECT = "inliner_plugin.o"

# Flags that must not reach the plugin's link: the plugin's LLVM symbols are resolved from
# libLLVM inside clang's process, so "no undefined symbols" would make the link fail.
_FORBIDDEN_LINK_FLAGS = ("-Wl,--no-undefined", "-Wl,-z,defs", "-Wl,-no-undefined")

# A module with a call site worth deciding on: the build's smoke test checks that the plugin
# loads into the chosen clang and that the inliner really asks it.
_SMOKE_C = """
static int mlgo_square(int x) { return x * x; }
int mlgo_smoke(int y) { return mlgo_square(y) + mlgo_square(y + 1); }
"""


@dataclass(frozen=True)
class LlvmDev:
    llvm_config: str
    version: str
    cxxflags: tuple[str, ...]


def llvm_dev() -> LlvmDev:
    """The chosen LLVM's llvm-config (llvm-config-19 or -22): its version and C++ flags
    (ToolchainError if llvm-MAJOR-dev is missing)."""
    return _llvm_dev(toolchain.llvm_major())


@functools.cache
def _llvm_dev(major: int) -> LlvmDev:
    tool = toolchain.find_tool("llvm-config", check_version=False)

    def ask(flag: str) -> str:
        try:
            return run([tool.path, flag], what="asking llvm-config", timeout=30).stdout.strip()
        except ProcessError as e:
            raise ToolchainError(str(e)) from e

    version = ask("--version")
    if not version.startswith(f"{major}."):
        raise ToolchainError(
            f"{tool.path} is LLVM {version}; the plugin must be built against LLVM "
            f"{major} (the clang that loads it): " + toolchain.install_hint(major)
        )
    flags = tuple(f for f in ask("--cxxflags").split() if f not in _FORBIDDEN_LINK_FLAGS)
    return LlvmDev(tool.path, version, flags)


def plugin_object() -> Path:
    """inliner_plugin.cpp compiled against the chosen LLVM's headers: the slow part of every plugin build
    (LLVM's headers), shared by all policies and cached by source, LLVM version and flags."""
    llvm = llvm_dev()
    cxx = toolchain.clangxx()
    source = packaged_source(PLUGIN_SOURCE)
    headers = {name: packaged_source(name) for name in PLUGIN_HEADERS}
    flags = ["-O2", "-fPIC", *llvm.cxxflags]
    key = content_key("inliner-plugin-object", _llvm_label(), source, *headers.values(),
                      llvm.version,
                      " ".join(flags), file_identity(cxx.path))

    def build(tmp: Path) -> dict:
        src = tmp / PLUGIN_SOURCE
        src.write_text(source)
        for name, text in headers.items():
            (tmp / name).write_text(text)
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
    key = content_key("inliner-plugin", _llvm_label(), obj.parent.name, policy_c_source,
                      policy_label,
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


# What the plugin without a policy says when asked to decide with no channel: its smoke test
# checks that clang loaded it and that the inliner asked it for an advisor.
_NO_POLICY = "this build links no policy"


def channel_plugin() -> Path:
    """Path of the plugin with no policy linked, which decides only through its training channel
    (`--env plugin`), built on first use and cached like the others."""
    return _channel_plugin(toolchain.llvm_major())


@functools.cache
def _channel_plugin(major: int) -> Path:
    llvm = llvm_dev()
    cc, cxx = toolchain.clang(), toolchain.clangxx()
    obj = plugin_object()
    key = content_key("inliner-plugin-channel", _llvm_label(), obj.parent.name, llvm.version,
                      file_identity(cc.path), file_identity(cxx.path))

    def build(tmp: Path) -> dict:
        out = tmp / PLUGIN_FILE
        run_build([cxx.path, "-shared", "-fPIC", str(obj), "-o", str(out)],
                  Path(SOURCE_DIR) / PLUGIN_SOURCE, "the inliner plugin for --env plugin")
        with tempfile.TemporaryDirectory(prefix="mlgo-plugin-check-") as d:
            src = Path(d) / "smoke.c"
            src.write_text(_SMOKE_C)
            proc = run([cc.path, "-Oz", "-c", str(src), "-o", str(Path(d) / "smoke.o"),
                        f"-fpass-plugin={out}"], env=_without_plugin_variables(), timeout=120,
                       check=False, what=f"trying the inliner plugin for --env plugin in {cc.path}")
        if _NO_POLICY not in proc.stderr:
            raise BuildError(f"inliner plugin for --env plugin: clang did not ask {out} for "
                             f"advice:\n{proc.stderr.strip()[-3000:]}")
        return {"llvm_version": llvm.version, "policy": None}

    return cached_artifact("plugins", key, PLUGIN_FILE, build)


def _llvm_label() -> str:
    """The chosen LLVM and the protocol module describing it, for the cache keys: a plugin built
    for one LLVM is never found for another."""
    major = toolchain.llvm_major()
    protocol = Path(SOURCE_DIR).parent / "protocol" / f"llvm{major}.py"
    return f"llvm-{major}\0" + hashlib.sha256(protocol.read_bytes()).hexdigest()


def _without_plugin_variables() -> dict[str, str]:
    """This process's environment without the plugin's own variables, which would change what
    a smoke test checks."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MLGO_PLUGIN_CHANNEL", "MLGO_PLUGIN_DECISION_LOG", "MLGO_DECISION_SUMMARY")}


def _smoke_test(plugin: Path, clang: str, policy_label: str) -> None:
    """Compile a two-function module with the plugin and check it made the inlining decision."""
    with tempfile.TemporaryDirectory(prefix="mlgo-plugin-check-") as d:
        src, log = Path(d) / "smoke.c", Path(d) / "decisions.txt"
        src.write_text(_SMOKE_C)
        env = dict(_without_plugin_variables(), MLGO_PLUGIN_DECISION_LOG=str(log))
        try:
            run([clang, "-Oz", "-c", str(src), "-o", str(Path(d) / "smoke.o"),
                 f"-fpass-plugin={plugin}"], env=env, timeout=120,
                what=f"trying the inliner plugin for the {policy_label} policy in {clang}")
        except ProcessError as e:
            raise BuildError(str(e)) from e
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
        raise MlgoError(f"{policy}: LLVM's own inliner needs no plugin: plain "
                        f"clang-{toolchain.llvm_major()} -Oz is it")
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
    heuristics, loading, the C ABI), the problems' networks and the LLVM versions' facts."""
    mlgo = Path(SOURCE_DIR).parent
    return sorted([*mlgo.glob("policies/*.py"), *mlgo.glob("problems/*/network.py"),
                   *mlgo.glob("protocol/llvm[0-9]*.py")])


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


def plugin_for(policy: str, decisions: Path | None = None) -> Path:
    """A ready plugin for `policy` (built-in heuristic name or policy directory); with
    `decisions`, a decision table file (mlgo/serving/decision_table.py) linked in too, whose
    answers the plugin serves at the call sites it names."""
    source, label = policy_source(policy, "inlining")
    if decisions is not None:
        from mlgo.serving.decision_table import load_table, table_c_source

        source += "\n" + table_c_source(load_table(decisions))
    return build_plugin(source, policy_label=label)
