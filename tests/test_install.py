"""The product as a user installs it: a wheel (not an editable install) in a fresh virtual
environment, run from a directory outside the checkout, lists and serves the shipped policies and
lists the Debian corpus recipes (both are package data, not files of the source tree)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_fixtures import llvm_tool

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    # Without PYTHONPATH: the suite runs with the checkout on it, which would hide what the
    # wheel lacks.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as git sees them (tracked or new, not ignored), so build artefacts
    and caches of the working tree do not reach the wheel and the build writes nothing here."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_symlink() and not src.exists():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    _copy_checkout(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(dist), str(src)], cwd=tmp)
    [wheel] = dist.glob("mlgo-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    # mlgo's dependencies come from this interpreter's environment, appended after the new
    # environment's own site-packages (a .pth adds paths, it does not run their .pth files, so
    # an editable mlgo there stays inactive): nothing is downloaded.
    [new_site] = (venv / "lib").glob("python3*/site-packages")
    (new_site / "mlgo-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp)
    return venv


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def test_installed_mlgo_is_the_wheel_not_the_checkout(venv: Path, elsewhere: Path) -> None:
    out = _run([str(venv / "bin" / "python"), "-c",
                "import corpus_tools, mlgo, mlgo_base; "
                "print(mlgo.__file__, corpus_tools.__file__, mlgo_base.__file__)"],
               cwd=elsewhere).stdout.split()
    for path in out:
        assert Path(path).is_relative_to(venv), path


def test_installed_mlgo_lists_the_debian_recipes(venv: Path, elsewhere: Path) -> None:
    out = _run([str(venv / "bin" / "mlgo"), "corpus", "debian", "--list"], cwd=elsewhere).stdout
    packages = [line.split()[0] for line in out.splitlines() if line.strip()]
    shipped = sorted(f.stem for f in (ROOT / "corpus_tools" / "debian_recipes").glob("*.toml"))
    assert sorted(packages) == shipped, out


def test_installed_mlgo_lists_and_resolves_shipped_policies(venv: Path, elsewhere: Path) -> None:
    helptext = _run([str(venv / "bin" / "mlgo"), "plugin", "--help"], cwd=elsewhere).stdout
    assert "inlining-oz" in helptext and "regalloc" in helptext, helptext
    # `mlgo eval --policy regalloc` resolves the name with PolicySpec.named.
    spec = _run([str(venv / "bin" / "python"), "-c",
                 "from mlgo.workers.tasks import PolicySpec; "
                 "print(PolicySpec.named('regalloc').policy_dir)"], cwd=elsewhere).stdout.strip()
    assert Path(spec).is_relative_to(venv) and (Path(spec) / "policy.json").is_file(), spec


def test_installed_mlgo_serves_a_shipped_policy_in_clang(venv: Path, elsewhere: Path) -> None:
    # The user's plugin cache (keyed by content) is shared with tests/test_plugin.py.
    so = _run([str(venv / "bin" / "mlgo"), "plugin", "inlining-oz"], cwd=elsewhere).stdout.strip()
    assert Path(so).is_file(), so
    (elsewhere / "x.c").write_text(
        "static int sq(int x) { return x * x; }\nint f(int a) { return sq(a) + sq(a + 1); }\n")
    _run([llvm_tool("clang"), "-Oz", f"-fpass-plugin={so}", "-c", "x.c", "-o", "x.o"], cwd=elsewhere)
    assert (elsewhere / "x.o").stat().st_size > 0
