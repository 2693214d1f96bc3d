"""Serving on each installed LLVM version beside what the other serving tests check there: the
inliner plugin loads into ld.lld at a ThinLTO link, `mlgo cmake-flags` names that version's clang
and plugin, and the plugin cache keeps the versions apart. The plugin deciding as interactive
mode does (tests/test_plugin.py), `--env plugin` (tests/test_plugin_env.py) and mlgo-clang
(tests/test_wrapper.py) run on each installed version in their own files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import on_each_llvm

from mlgo.serving import plugin
from mlgo_base import toolchain


@pytest.fixture(autouse=True)
def no_policy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLGO_INLINE_POLICY", "MLGO_REGALLOC_POLICY", "MLGO_FALLBACK",
                 "MLGO_PLUGIN_CHANNEL", "MLGO_PLUGIN_DECISION_LOG", "MLGO_DECISION_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


def test_plugins_for_19_and_22_are_kept_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache keys name the LLVM version: a plugin built for 19 is never found for 22."""
    keys = {}
    for major in (19, 22):
        monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(major))
        keys[major] = plugin._llvm_label()
    assert keys[19] != keys[22] and keys[22].startswith("llvm-22\0")


# Calls across modules, which only the link's inliner (after ThinLTO imports) can inline.
CROSS_MODULE = {
    "api.c": "int scale(int x);\nint offset(int x);\n"
             "int api(int y) { return scale(y) + offset(y) + scale(y + 1); }\n",
    "util.c": "int scale(int x) { return 3 * x + 1; }\nint offset(int x) { return x - 7; }\n",
}


@on_each_llvm
def test_thinlto_link_with_lld_serves_the_policy(tmp_path: Path, llvm_version) -> None:
    """ld.lld --load-pass-plugin: the ThinLTO backends' inlining is the policy's (`never`
    here, so the link differs from one with LLVM's own inliner), each module noted as
    lto-postlink in the decision summary."""
    never = plugin.plugin_for("never")
    clang = toolchain.clang().path
    objects = []
    for name, text in CROSS_MODULE.items():
        (tmp_path / name).write_text(text)
        objects.append(str(tmp_path / (name + ".o")))
        subprocess.run([clang, "-Oz", "-fPIC", "-flto=thin", "-c", str(tmp_path / name), "-o",
                        objects[-1]], check=True, capture_output=True, timeout=120)
    lld = toolchain.companion_tool("ld.lld")
    assert lld.endswith(f"ld.lld-{llvm_version.major}")
    summary = tmp_path / "summary.tsv"

    def link(out: str, *extra: str) -> Path:
        proc = subprocess.run([lld, "-shared", *objects, "-o", str(tmp_path / out), *extra],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, MLGO_DECISION_SUMMARY=str(summary)))
        assert proc.returncode == 0, proc.stderr
        return tmp_path / out

    served = link("served.so", f"--load-pass-plugin={never}")
    lines = [line.split("\t") for line in summary.read_text().splitlines()]
    assert [x[5] for x in lines] == ["lto-postlink"] * len(objects)
    assert sum(int(x[3]) for x in lines) > 0 and sum(int(x[4]) for x in lines) == 0
    plain = link("plain.so")
    assert served.read_bytes() != plain.read_bytes()


@on_each_llvm
def test_cmake_flags_name_the_versions_clang_and_its_plugin(capsys: pytest.CaptureFixture,
                                                             llvm_version) -> None:
    from mlgo.cli.main import main as mlgo_main

    assert mlgo_main(["cmake-flags", "never"]) == 0
    text = capsys.readouterr().out
    never = plugin.plugin_for("never")
    assert f'set(CMAKE_C_COMPILER "{toolchain.locate("clang")}"' in text
    assert toolchain.locate("clang").endswith(f"clang-{llvm_version.major}")
    assert f"-fpass-plugin={never}" in text and f"-Wl,--load-pass-plugin={never}" in text
