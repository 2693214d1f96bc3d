"""mlgo-clang's native program: `mlgo_clang.cpp` with its parts (SOURCES), the regalloc
policy's C source and the configuration (compiler, inliner plugin, the compiler's feature
header) built into one executable per configuration, cached under `<cache>/launchers/<hash>/`.

    CC="$(mlgo-clang --print-launcher)" CXX="$(mlgo-clang++ --print-launcher)" make -j2

The Python `mlgo-clang` finds (or builds) the same program and executes it. It is a snapshot of
the configuration when it was made: after retraining a policy directory or upgrading clang-19,
ask for it again (the cache key then differs).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlgo.serving.build import (
    SOURCE_DIR,
    BuildError,
    c_string,
    cached_artifact,
    content_key,
    file_identity,
    find_artifact,
    label_source,
    packaged_source,
    run_build,
)
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

if TYPE_CHECKING:
    from pathlib import Path

    from mlgo.protocol.training_log import Header

SOURCE = "mlgo_clang.cpp"  # main(): what to do with an invocation
# Compiled together: SOURCE and its parts by job, the headers they share, and BINDING_HEADER.
SOURCES = (SOURCE, "mlgo_clang_args.cpp", "mlgo_clang_process.cpp", "mlgo_clang_channel.cpp",
           "mlgo_clang_common.cpp")
CONFIGURED_SOURCES = (SOURCE, "mlgo_clang_channel.cpp")  # those including CONFIG_HEADER
HEADERS = ("mlgo_clang_args.h", "mlgo_clang_process.h", "mlgo_clang_channel.h",
           "mlgo_clang_common.h")
CONFIG_HEADER = "mlgo_clang_config.h"
PARTS_OBJECT = "mlgo_clang_parts.o"
CXXFLAGS = ("-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror")
BINDING_HEADER = "policy_binding.h"  # binds the policy's inputs by name, as the inliner plugin does
# LLVM's binutils, linked beside the program under the names build systems derive from the
# compiler's: CMake's LTO support looks for `<prefix>llvm-ar` next to a `<prefix>clang` (here
# `mlgo-llvm-ar` next to `mlgo-clang`) and otherwise builds silently without LTO; autotools and
# plain Makefiles look for `llvm-ar` on PATH or beside CC.
COMPANION_TOOLS = ("llvm-ar", "llvm-ranlib", "llvm-nm")
DRIVERS = ("clang", "clang++")
# Served when MLGO_REGALLOC_POLICY is unset or empty: LLVM's default eviction restated over the
# features.
# On the five training programs of benchmarks/regalloc_reward.py it is never above plain
# clang-19 and 1.40% below it in total, where the proxy (the earlier default) is +0.73% on bzip2
# and 0.44% below in total (benchmarks/RESULTS.md, "Regalloc").
DEFAULT_REGALLOC_POLICY = "default-rule"
# A function the greedy allocator runs on, so the compiler opens the channel and sends its header.
_PROBE_C = "int mlgo_probe(int x) { return x * 3; }\n"


@dataclass(frozen=True)
class LauncherConfig:
    """What one program serves. `regalloc_source` is the policy's C (None: nothing linked in);
    `*_unavailable` is why a policy asked for cannot be served (the program then refuses
    compile jobs, or with MLGO_FALLBACK=1 warns, but still passes everything else through)."""

    driver: str  # "clang" or "clang++"
    compiler: str  # clang-19 / clang++-19 (MLGO_CLANG / MLGO_CLANG__ override it at run time)
    regalloc_policy: str  # as MLGO_REGALLOC_POLICY names it ("default": not served)
    regalloc_source: str | None = None
    regalloc_label: str | None = None
    inline_policy: str | None = None  # as MLGO_INLINE_POLICY names it
    plugin: str | None = None
    regalloc_unavailable: str | None = None
    plugin_unavailable: str | None = None

    @property
    def filename(self) -> str:
        return "mlgo-" + self.driver


def resolve_config(driver: str, *, strict: bool = True) -> LauncherConfig:
    """The configuration for the current MLGO_REGALLOC_POLICY and MLGO_INLINE_POLICY, building
    the inliner plugin if needed. With strict=False a policy that cannot be had is recorded in
    the configuration instead of raised (the program reports it per compile job)."""
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, not {driver!r}")
    # Empty is unset (the default), as for MLGO_INLINE_POLICY: never the path "" (".").
    regalloc_policy = os.environ.get("MLGO_REGALLOC_POLICY") or DEFAULT_REGALLOC_POLICY
    inline_policy = os.environ.get("MLGO_INLINE_POLICY") or None
    from mlgo.serving.plugin import plugin_for, policy_source

    fields: dict = {}
    if regalloc_policy != "default":
        try:
            source, label = policy_source(regalloc_policy, "regalloc")
            fields.update(regalloc_source=source, regalloc_label=label)
        except MlgoError as e:
            if strict:
                raise
            fields["regalloc_unavailable"] = str(e)
    if inline_policy:
        try:
            fields["plugin"] = str(plugin_for(inline_policy))
        except MlgoError as e:
            if strict:
                raise
            fields["plugin_unavailable"] = str(e)
    return LauncherConfig(driver, toolchain.locate(driver, override=False), regalloc_policy,
                          inline_policy=inline_policy, **fields)


def fnv1a64(path: str) -> int:
    """FNV-1a (64 bit) of a file's bytes: the check the program repeats on the plugin before
    each compile (mlgo_clang.cpp's pluginDamage), cheap enough to do there."""
    h = 0xCBF29CE484222325
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0  # the program reports the file as gone before it compares hashes
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def probe_header(clang: str) -> tuple[str, Header]:
    """The header line `clang` sends on the eviction advisor's channel (what the program
    compares whole with the live compiler's), from one compile of a small function."""
    from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
    from mlgo_base.errors import CompileError

    workdir = make_workdir("mlgo-probe-")
    try:
        (workdir / "probe.c").write_text(_PROBE_C)
        base = workdir / "channel"
        argv = [clang, "-O2", "-c", str(workdir / "probe.c"), "-o", str(workdir / "probe.o"),
                "-mllvm", "-regalloc-enable-advisor=release",
                "-mllvm", f"-regalloc-evict-interactive-channel-base={base}"]
        try:
            with InteractiveCompile(argv, "<header probe>", workdir, channel_base=base,
                                    timeout=120) as c:
                header = c.header
                if c.next_observation() is not None:
                    raise BuildError(f"{clang}: the header probe made an eviction decision")
                c.finish()
        except CompileError as e:
            raise BuildError(f"{clang}: cannot read the eviction advisor's header: {e}") from e
    finally:
        remove_workdir(workdir)
    advice = header.advice
    if advice is None or advice.type != "int64_t" or advice.num_elements != 1:
        raise BuildError(f"{clang}: the eviction advice is {advice}, expected one int64_t")
    # LLVM's json::OStream writes compact JSON, keys in the order Header.to_json keeps them.
    return json.dumps(header.to_json(), separators=(",", ":")) + "\n", header


def config_header(config: LauncherConfig, header: tuple[str, Header] | None) -> str:
    """mlgo_clang_config.h: what the program serves, and the header it expects."""
    compiler_env = "MLGO_" + config.driver.replace("+", "_").upper()
    plugin_hash = fnv1a64(config.plugin) if config.plugin else 0
    lines = [
        "/* Generated by mlgo/serving/launcher.py: what this program serves. */",
        f"#define CONFIG_SERVES_REGALLOC {int(config.regalloc_source is not None)}",
        f"static const char CONFIG_DRIVER[] = {c_string(config.driver)};",
        f"static const char CONFIG_COMPILER_ENV[] = {c_string(compiler_env)};",
        f"static const char CONFIG_COMPILER[] = {c_string(config.compiler)};",
        f"static const char CONFIG_REGALLOC_POLICY[] = {c_string(config.regalloc_policy)};",
        "static const char *const CONFIG_REGALLOC_UNAVAILABLE = "
        f"{c_string(config.regalloc_unavailable)};",
        f"static const char *const CONFIG_INLINE_POLICY = {c_string(config.inline_policy)};",
        f"static const char *const CONFIG_PLUGIN = {c_string(config.plugin)};",
        f"static const char *const CONFIG_PLUGIN_UNAVAILABLE = "
        f"{c_string(config.plugin_unavailable)};",
        f"static const unsigned long long CONFIG_PLUGIN_FNV1A64 = {plugin_hash:#x}ULL;",
    ]
    if header is not None:
        line, parsed = header
        features = ",\n  ".join(
            f"{{{c_string(f.name)}, {c_string(f.type)}, {f.num_elements}, {f.num_bytes}}}"
            for f in parsed.features)
        lines += [
            "/* The compiler's header line and its features in stream order (a probe compile). */",
            f"static const char CONFIG_HEADER_LINE[] = {c_string(line)};",
            "struct CompilerFeature { const char *Name, *Type; size_t Elements, Bytes; };",
            f"static const CompilerFeature CONFIG_FEATURES[] = {{\n  {features}\n}};",
            f"static const size_t CONFIG_NUM_FEATURES = {len(parsed.features)};",
        ]
    return "\n".join(lines) + "\n"


def _key(config: LauncherConfig, source: str, cc: str, cxx: str, companions: list[str]) -> str:
    plugin = file_identity(config.plugin) if config.plugin and os.path.exists(config.plugin) \
        else ""
    return content_key("mlgo-clang", source, repr(config), plugin, file_identity(cc),
                       file_identity(cxx), *companions)


def _compile(cxx: str, tmp: Path, name: str) -> str:
    """One part of the program compiled to an object in `tmp`, where its headers are."""
    obj = str(tmp / f"{name}.o")
    run_build([cxx, *CXXFLAGS, "-I", str(tmp), "-c", str(tmp / name), "-o", obj],
              os.path.join(SOURCE_DIR, name), "the mlgo-clang program")
    return obj


def parts_object(cxx: str) -> str:
    """The parts of the program that no configuration changes (arguments, processes, helpers)
    as one relocatable object, compiled once per source and compiler and shared by every
    configuration's program: compiling them is most of a program's build."""
    names = [name for name in SOURCES if name not in CONFIGURED_SOURCES]
    sources = {name: packaged_source(name) for name in (*names, *HEADERS, BINDING_HEADER)}
    key = content_key("mlgo-clang-parts", *(f"{name}\0{text}" for name, text in sources.items()),
                      " ".join(CXXFLAGS), file_identity(cxx))

    def build(tmp: Path) -> dict:
        for name, text in sources.items():
            (tmp / name).write_text(text)
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            objects = list(pool.map(lambda name: _compile(cxx, tmp, name), names))
        run_build([cxx, "-r", *objects, "-o", str(tmp / PARTS_OBJECT)],
                  os.path.join(SOURCE_DIR, SOURCE), "the mlgo-clang program's parts")
        for name in (*sources, *(f"{name}.o" for name in names)):
            (tmp / name).unlink()
        return {}

    return str(cached_artifact("launcher-objects", key, PARTS_OBJECT, build))


def build_launcher(config: LauncherConfig) -> str:
    """Path of the program for `config`, built and cached on first use."""
    # The real clang-19 builds it even when the program is pointed at another compiler.
    cc = toolchain.locate("clang", override=False)
    cxx = toolchain.locate("clang++", override=False)
    sources = {name: packaged_source(name) for name in (*SOURCES, *HEADERS, BINDING_HEADER)}
    companions = {tool: toolchain.companion_tool(tool) for tool in COMPANION_TOOLS}
    key = _key(config, "".join(f"{name}\0{text}\0" for name, text in sources.items()), cc, cxx,
               list(companions.values()))
    found = find_artifact("launchers", key, config.filename)
    if found:
        return found

    def build(tmp: Path) -> dict:
        for name, path in (("clang", cc), ("clang++", cxx)):
            version = toolchain._version_of(path)
            if not version.startswith(f"{toolchain.LLVM_MAJOR}."):
                raise MlgoError(f"{path} is version {version or 'unknown'}; mlgo-clang is "
                                f"built with clang {toolchain.LLVM_MAJOR} ({name})")
        configured = [name for name in SOURCES if name in CONFIGURED_SOURCES]
        for name in (*configured, *HEADERS, BINDING_HEADER):
            (tmp / name).write_text(sources[name])

        def compile_policy() -> str:
            policy_c = tmp / "policy.c"
            policy_c.write_text(config.regalloc_source + label_source(config.regalloc_label))
            run_build([cc, "-O2", "-c", str(policy_c), "-o", str(tmp / "policy.o")],
                      policy_c, f"the {config.regalloc_label} eviction policy")
            return str(tmp / "policy.o")

        # The policy compiles during the header probe, the configured parts after it.
        with ThreadPoolExecutor(max_workers=len(configured) + 1) as pool:
            policy = pool.submit(compile_policy) if config.regalloc_source is not None else None
            header = probe_header(cc) if config.regalloc_source is not None else None
            (tmp / CONFIG_HEADER).write_text(config_header(config, header))
            objects = list(pool.map(lambda name: _compile(cxx, tmp, name), configured))
            if policy is not None:
                objects.append(policy.result())
        run_build([cxx, *objects, parts_object(cxx), "-o", str(tmp / config.filename)],
                  os.path.join(SOURCE_DIR, SOURCE), f"the {config.filename} program")
        for name in (*configured, *(f"{name}.o" for name in configured), *HEADERS,
                     BINDING_HEADER, CONFIG_HEADER, "policy.c", "policy.o"):
            (tmp / name).unlink(missing_ok=True)
        for tool, path in companions.items():
            for name in (tool, "mlgo-" + tool):
                os.symlink(path, tmp / name)
        return {"driver": config.driver, "regalloc_policy": config.regalloc_policy,
                "inline_policy": config.inline_policy}

    return str(cached_artifact("launchers", key, config.filename, build))


def launcher_for(driver: str, *, strict: bool = True) -> str:
    """The program serving the current environment's policies with `driver`."""
    return build_launcher(resolve_config(driver, strict=strict))
