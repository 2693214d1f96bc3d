"""The command line is the top layer: library modules and the benchmarks import neither the
CLI's modules nor argparse, so everything the CLI does is callable with typed parameters."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_MODULES = {"mlgo/cli", "corpus_tools/cli.py"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _below_the_cli() -> list[Path]:
    files = [*ROOT.glob("mlgo/**/*.py"), *ROOT.glob("corpus_tools/**/*.py"),
             *ROOT.glob("benchmarks/*.py")]
    return [f for f in files
            if not any(f.relative_to(ROOT).as_posix().startswith(c) for c in CLI_MODULES)]


def test_nothing_below_the_cli_imports_it_or_parses_arguments() -> None:
    offenders = []
    for f in _below_the_cli():
        names = _imports(f)
        cli = sorted(n for n in names if n.startswith(("mlgo.cli", "corpus_tools.cli")))
        if cli:
            offenders.append(f"{f.relative_to(ROOT)} imports {', '.join(cli)}")
        if "argparse" in names and not f.is_relative_to(ROOT / "benchmarks"):
            offenders.append(f"{f.relative_to(ROOT)} imports argparse")
    assert not offenders, "\n".join(offenders)
