"""The layers of the code, bottom to top, and the rule that keeps them: a module imports only
from its own layer or the ones below. Every import counts, including one inside a function,
under `if TYPE_CHECKING:` or in a try block: a late import still ties the two layers together.

The command line is the top layer: library modules and the benchmarks import neither the CLI's
modules nor argparse, so everything the CLI does is callable with typed parameters."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mlgo_base", "corpus_tools", "mlgo")  # the top-level packages the wheel installs

# Bottom to top. An entry names a module or a package (and everything in it); each module of
# PACKAGES belongs to exactly one layer, the one of its longest matching entry.
LAYERS: list[tuple[str, ...]] = [
    # Generic: exceptions a user can act on, atomic writes and hashes, finding LLVM's tools.
    ("mlgo_base",),
    # The corpus on disk: format, module names, splits (pure Python, no llvmlite).
    ("corpus_tools.corpus",),
    # Making and analysing corpora: the extraction pipeline, then the extractors, checking and
    # merging; llvmlite IR analysis.
    ("corpus_tools.extract_pipeline",),
    ("corpus_tools.extract", "corpus_tools.check", "corpus_tools.merge",
     "corpus_tools.ir_liveness", "corpus_tools.ir_analysis"),
    ("corpus_tools.debian_recipe", "corpus_tools.debian", "corpus_tools.report"),
    # mlgo proper starts here: the wire format and LLVM 19's facts (features, advice names),
    # argument checks, running the compiler.
    ("mlgo.protocol", "mlgo.checks"),
    ("mlgo.compiler",),
    # Policies know only the protocol: operations, networks, built-in heuristics, their C.
    ("mlgo.policies",),
    # The problems compile modules and decide with policies.
    ("mlgo.problems",),
    # Serving builds policies into the plugin and mlgo-clang; nothing below needs it.
    ("mlgo.serving",),
    ("mlgo.env", "mlgo.configurables", "mlgo.export"),
    ("mlgo.workers",),
    ("mlgo.evaluate", "mlgo.traces"),
    ("mlgo.search", "mlgo.search_store", "mlgo.search_strategy", "mlgo.search_schedule"),
    ("mlgo.training", "mlgo.lua_demo"),
    # One project's own build tuned end to end (`mlgo tune`).
    ("mlgo.tune",),
    ("mlgo.cli",),
]
CLI_MODULES = ("mlgo.cli",)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {_module_name(root, f): f for p in packages for f in sorted((root / p).rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the file, relative ones resolved; for
    `from X import Y` both X and X.Y (Y may be a submodule)."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*package, *([base] if base else [])])
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
    return out


def _rank(module: str, layers: list[tuple[str, ...]], packages: tuple[str, ...]) -> int | None:
    """The layer of `module`, or None if no entry covers it. A top-level package's own
    __init__ sits in its package's lowest layer."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for i, layer in enumerate(layers):
        for entry in layer:
            if module == entry or module.startswith(entry + "."):
                if best is None or len(entry) > best[0]:
                    best = (len(entry), i)
    if best is not None:
        return best[1]
    if module in packages:
        return min(i for i, layer in enumerate(layers)
                   for e in layer if e.split(".")[0] == module)
    return None


def _ours(imported: str, packages: tuple[str, ...]) -> bool:
    return imported.split(".")[0] in packages


def unplaced_modules(root: Path = ROOT, layers: list[tuple[str, ...]] = LAYERS,
                     packages: tuple[str, ...] = PACKAGES) -> list[str]:
    return [m for m in _modules(root, packages) if _rank(m, layers, packages) is None]


def upward_imports(root: Path = ROOT, layers: list[tuple[str, ...]] = LAYERS,
                   packages: tuple[str, ...] = PACKAGES) -> list[str]:
    found: dict[tuple[str, int], str] = {}  # one report per import statement
    for name, path in _modules(root, packages).items():
        own = _rank(name, layers, packages)
        where = str(path.relative_to(root))
        for line, imported in _imports(name, path):
            if not _ours(imported, packages) or (where, line) in found:
                continue
            target = _rank(imported, layers, packages)
            if target is not None and own is not None and target > own:
                found[where, line] = (f"{where}:{line} imports {imported} (layer {target} "
                                      f"{layers[target]}) from layer {own} {layers[own]}")
    return [found[k] for k in sorted(found)]


def package_cycles(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Cycles between top-level packages, from the imports themselves (not from LAYERS, so
    editing the list cannot hide one): each as 'a -> b -> a' with one import of each step."""
    edges: dict[str, dict[str, str]] = {p: {} for p in packages}
    for name, path in _modules(root, packages).items():
        src = name.split(".")[0]
        for line, imported in _imports(name, path):
            dst = imported.split(".")[0]
            if dst in packages and dst != src:
                edges[src].setdefault(dst, f"{path.relative_to(root)}:{line} imports {imported}")
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt == start:
                steps = [*path, start]
                why = "; ".join(edges[a][b] for a, b in zip(steps, steps[1:], strict=False))
                cycles.append(f"{' -> '.join(steps)} ({why})")
            elif nxt not in path and nxt > start:  # each cycle once, from its least package
                walk(start, nxt, [*path, nxt])

    for p in packages:
        walk(p, p, [p])
    return cycles


def mutual_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Pairs of modules that import each other (a late import counts): one of the two holds a
    piece both need, which belongs in a module below them."""
    modules = _modules(root, packages)
    edges: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        for line, imported in _imports(name, path):
            if imported in modules and imported != name:
                edges.setdefault(name, {}).setdefault(
                    imported, f"{path.relative_to(root)}:{line} imports {imported}")
    return [f"{a} <-> {b} ({edges[a][b]}; {edges[b][a]})"
            for a in sorted(edges) for b in sorted(edges[a]) if a < b and a in edges.get(b, {})]


def test_every_module_has_a_layer() -> None:
    assert not unplaced_modules(), (
        "modules in no layer of tests/test_layers.py LAYERS (add them where they belong): "
        + ", ".join(unplaced_modules()))


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    found = upward_imports()
    assert not found, "\n".join(found)


def test_no_two_top_level_packages_import_each_other() -> None:
    found = package_cycles()
    assert not found, "\n".join(found)


def test_no_two_modules_import_each_other() -> None:
    found = mutual_imports()
    assert not found, "\n".join(found)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    # A tiny tree shaped like ours: `low` must not import `high`, even from inside a function.
    for rel, text in {
        "low/__init__.py": "",
        "low/files.py": "def f():\n    from high.tool import g\n    return g\n",
        "high/__init__.py": "",
        "high/tool.py": "from low import files\n\ndef g():\n    return files\n",
        "high/sub/__init__.py": "from ..tool import g\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    layers = [("low",), ("high.tool",)]
    packages = ("low", "high")
    assert unplaced_modules(tmp_path, layers, packages) == ["high.sub"]
    assert upward_imports(tmp_path, layers, packages) == [
        "low/files.py:2 imports high.tool (layer 1 ('high.tool',)) from layer 0 ('low',)"]
    assert package_cycles(tmp_path, packages) == [
        "high -> low -> high (high/tool.py:1 imports low; low/files.py:2 imports high.tool)"]
    assert mutual_imports(tmp_path, packages) == [
        "high.tool <-> low.files (high/tool.py:1 imports low.files; low/files.py:2 imports "
        "high.tool)"]


def test_nothing_below_the_cli_imports_it_or_parses_arguments() -> None:
    files = [*_modules(ROOT, PACKAGES).items(),
             *((f"benchmarks.{f.stem}", f) for f in ROOT.glob("benchmarks/*.py"))]
    offenders = []
    for name, f in files:
        if name.startswith(CLI_MODULES):
            continue
        imported = {m for _, m in _imports(name, f)}
        cli = sorted(m for m in imported if m.startswith(CLI_MODULES))
        if cli:
            offenders.append(f"{f.relative_to(ROOT)} imports {', '.join(cli)}")
        if "argparse" in imported and not f.is_relative_to(ROOT / "benchmarks"):
            offenders.append(f"{f.relative_to(ROOT)} imports argparse")
    assert not offenders, "\n".join(offenders)


def test_the_compiler_wrappers_modules_import_no_numpy() -> None:
    """`mlgo-clang` imports these on every compile (and serving a policy directory generates
    nothing): numpy would add ~0.1 s to each. The LLVM 19 facts live in the protocol layer and
    the heuristics' names in builtins, both pure data at import."""
    import subprocess
    import sys

    modules = ("mlgo.cli.wrapper", "mlgo.serving.launcher", "mlgo.serving.plugin",
               "mlgo.policies.builtins", "mlgo.policies.c_source", "mlgo.protocol.llvm19")
    code = (f"import sys\nfor m in {modules!r}:\n    __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True).stdout
    assert out.strip() == "[]", out
