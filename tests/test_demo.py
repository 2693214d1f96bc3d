"""The demo's pipeline end to end on a small project instead of lua5.4: its corpus extracted
from sources, test modules set aside, search + imitation on the training split, three policies
evaluated on the test modules, the policy best on validation exported and served by its pass plugin to a build
of the project's program, which must still print what an unoptimized build prints.

Sized to run in a few minutes: 6 generated modules and a main, 6 compiles per module, 1 round."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from corpus_fixtures import generated_source

from mlgo.cli.demo import run_demo
from mlgo.lua_demo import DemoProject

pytestmark = pytest.mark.slow

MODULES = 6


def _sources(src: Path) -> None:
    """Unsigned arithmetic: the program's output is defined at every level."""
    src.mkdir(parents=True)
    decls = []
    for i in range(MODULES):
        text = generated_source("inlining", i).replace("int ", "unsigned ")
        (src / f"gen{i}.c").write_text(text)
        decls += [f"unsigned api{i}_{c}(unsigned);" for c in range(10)]
    calls = " + ".join(f"api{i}_{c}(a)" for i in range(MODULES) for c in range(10))
    (src / "main.c").write_text(
        "#include <stdio.h>\n" + "\n".join(decls) +
        "\nint main(void) { unsigned s = 0; for (unsigned a = 0; a < 100; a++) s ^= "
        f"{calls}; printf(\"%u\\n\", s); return 0; }}\n")


def _build(src: Path, build: Path, flags: list[str], level: str = "-Oz") -> Path:
    build.mkdir(parents=True, exist_ok=True)
    objs = []
    for c in sorted(src.glob("*.c")):
        obj = build / (c.stem + ".o")
        subprocess.run(["clang-19", level, "-c", *flags, str(c), "-o", str(obj)], check=True)
        objs.append(str(obj))
    subprocess.run(["clang-19", *objs, "-o", str(build / "prog")], check=True)
    return build / "prog"


@pytest.mark.usefixtures("isolated_cache")
def test_the_demo_runs_end_to_end_on_a_small_project(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    _sources(src)
    builds: list[list[str]] = []
    reference = _build(src, tmp_path / "reference", [], level="-O0")
    expected = subprocess.run([str(reference)], capture_output=True, text=True,
                              check=True).stdout.strip()
    project = DemoProject(
        name="gen",
        corpus_command=lambda out: ["corpus", "extract", "--sources", str(src), "--project",
                                    "gen", "--opt-level", "Oz", "-o", str(out)],
        build=lambda build, flags: builds.append(flags) or _build(src, build, flags),
        run_args=(), expected_output=expected)
    out = tmp_path / "demo"

    changes = run_demo(out, project, workers=2, search_budget=6, rounds=1, epochs=4)

    test = json.loads((out / "test" / "corpus_description.json").read_text())["modules"]
    trainval = json.loads((out / "trainval" / "corpus_description.json").read_text())["modules"]
    assert test and trainval and not set(test) & set(trainval)
    assert len(test) + len(trainval) == MODULES + 1
    # Training saw only trainval: its split lists no test module.
    split = json.loads((out / "imitation" / "split.json").read_text())
    assert set(split["train"]) | set(split["validation"]) == set(trainval)
    # The search ran on the training split only.
    searched = {str(p.relative_to(out / "imitation" / "search" / "round-0" / "modules"))[:-4]
                for p in (out / "imitation" / "search" / "round-0" / "modules").rglob("*.npz")}
    assert searched and searched <= set(split["train"])
    # LLVM's own decisions served through the environment change nothing.
    assert changes["llvm-default"] == 0.0
    assert set(changes) == {"llvm-default", "cost-threshold", "imitation", "binary"}
    assert all(math.isfinite(v) for v in changes.values())
    assert (out / "export" / "manifest.json").is_file()
    # The policy is LLVM's rule plus learned flips: before cloning it was the rule.
    structure = json.loads((out / "imitation" / "structure" / "policy.json").read_text())
    assert structure["network"]["config"]["residual"] is True
    # Its flip margin was chosen on the validation modules alone, and that policy exported.
    val = json.loads((out / "validation" / "corpus_description.json").read_text())["modules"]
    assert sorted(val) == sorted(split["validation"])
    reports = [json.loads((out / "margin" / f"eval-margin-{m}.json").read_text()) for m in (0, 1, 2, 4)]
    assert all(sorted(r["module"] for r in rep["modules"]) == sorted(val) for rep in reports)
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert Path(manifest["policy"]).parent == (out / "margin").resolve()
    assert manifest["validation"]["relative_change"] == min(r["relative_change"] for r in reports)
    for plot in ("demo.png", "eval-imitation.png"):
        assert (out / plot).stat().st_size > 0
    # Built plain and with the exported policy's plugin (each printed `expected`, or run_demo
    # would have raised).
    assert builds[0] == [] and len(builds) == 2
    [plugin_flag] = builds[1]
    assert plugin_flag.startswith("-fpass-plugin=") and Path(plugin_flag.split("=", 1)[1]).is_file()
