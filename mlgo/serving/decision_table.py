"""Decision tables: the inlining decisions a search found best, per module and call site, for
the plugin to serve as they are (plugin_decisions.h), the policy answering everywhere else.

A table file is JSON:

    {"format": "mlgo-decision-table", "version": 1,
     "modules": {"lib/a.c": [["caller", "callee", 0, 1, 3, 1, 45], ...], ...}}

Each module's key is its source file's path relative to the tuned project's source root; each
entry names a call site as the plugin's training channel does (caller, callee, ordinal: how many
decisions about that caller and callee came before it in the module), says inline (1) or
not (0), and may give the site's shape when it was decided (LLVM's caller_basic_block_count,
callee_basic_block_count and cost_estimate), which the site must still have for the entry to
answer it (plugin_decisions.h). The plugin matches a key against the trailing path components of a module's
source_filename (plugin_decisions.h has the rule), so a build in another directory, or of a
later release unpacked elsewhere, still finds its modules' entries.

`table_c_source` turns a table into C data appended to the policy's C source
(mlgo/serving/plugin.py): the table is part of the plugin library, with no file to find at
compile time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from mlgo.serving.build import c_string
from mlgo_base.errors import MlgoError

FORMAT = "mlgo-decision-table"
VERSION = 1
# (caller, callee, ordinal, inline) or the same and the shape (caller blocks, callee blocks,
# cost estimate).
Entry = tuple[Any, ...]
SHAPE_FEATURES = ("caller_basic_block_count", "callee_basic_block_count", "cost_estimate")


class DecisionTableError(MlgoError):
    """A decision table file that cannot be served (the message names the file and the
    problem)."""


def check_key(key: str) -> str | None:
    """Why `key` cannot be a module's key (a relative path with no '..' or empty parts), or
    None."""
    if not key or key.startswith("/"):
        return "is not a relative path"
    parts = key.split("/")
    if any(p in ("", "..") for p in parts) or all(p == "." for p in parts):
        return "is not a plain relative path (no empty or '..' components)"
    if "\0" in key:
        return "holds a NUL character"
    return None


def make_table(modules: Mapping[str, Sequence[Entry]], **about: Any) -> dict[str, Any]:
    """A table document (checked as load_table checks a file); `about`: what it was made
    from, kept beside the entries."""
    doc = {"format": FORMAT, "version": VERSION, **about,
           "modules": {k: [list(e) for e in v] for k, v in sorted(modules.items())}}
    _check(doc, "the decision table")
    return doc


def write_table(path: Path, doc: dict[str, Any]) -> None:
    from mlgo_base.files import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=None, separators=(",", ":")) + "\n")


def load_table(path: Path) -> dict[str, list[Entry]]:
    """The modules of the table file `path`: key -> entries. DecisionTableError (one line
    naming the file) for anything but a well-formed table."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise DecisionTableError(f"{path}: cannot read the decision table: "
                                 f"{e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DecisionTableError(f"{path}: not a decision table (not JSON: {e})") from None
    return _check(doc, str(path))


def _check(doc: Any, where: str) -> dict[str, list[Entry]]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DecisionTableError(f"{where}: not a decision table (a JSON object with "
                                 f"\"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise DecisionTableError(f"{where}: decision table version {doc.get('version')!r}; "
                                 f"this mlgo reads version {VERSION}")
    modules = doc.get("modules")
    if not isinstance(modules, dict):
        raise DecisionTableError(f"{where}: \"modules\" is not an object of module paths")
    out: dict[str, list[Entry]] = {}
    for key, entries in modules.items():
        why = check_key(key)
        if why:
            raise DecisionTableError(f"{where}: module key {key!r} {why}")
        if not isinstance(entries, list):
            raise DecisionTableError(f"{where}: module {key}: its entries are not a list")
        seen: set[tuple[str, str, int]] = set()
        rows: list[Entry] = []
        for i, e in enumerate(entries):
            if (not isinstance(e, list) or len(e) not in (4, 7) or not isinstance(e[0], str)
                    or not isinstance(e[1], str) or type(e[2]) is not int
                    or not 0 <= e[2] < 2**32 or e[3] not in (0, 1) or type(e[3]) is not int
                    or "\0" in e[0] + e[1]
                    or any(type(x) is not int or not -2**63 < x < 2**63 for x in e[4:])):
                raise DecisionTableError(
                    f"{where}: module {key}, entry {i}: {json.dumps(e)[:120]} is not "
                    "[caller, callee, ordinal >= 0, inline 0 or 1] with or without the three "
                    "whole numbers of its shape")
            site = (e[0], e[1], e[2])
            if site in seen:
                raise DecisionTableError(f"{where}: module {key}: call site {e[0]} -> {e[1]} "
                                         f"#{e[2]} is listed twice")
            seen.add(site)
            rows.append(tuple(e))
        out[key] = rows
    return out


def table_c_source(modules: Mapping[str, Sequence[Entry]]) -> str:
    """C defining the table's data for plugin_decisions.h (modules with no entries are left
    out: C has no empty arrays, and they would answer nothing)."""
    lines = ["/* mlgo decision table (mlgo/serving/decision_table.py): the layout of",
             "   plugin_decisions.h */",
             "#include <stddef.h>", "#include <stdint.h>",
             "struct mlgo_table_decision { const char *caller; const char *callee; "
             "uint32_t ordinal; uint32_t inline_site; uint32_t has_shape; int64_t shape[3]; };",
             "struct mlgo_table_module { const char *path; "
             "const struct mlgo_table_decision *decisions; size_t num_decisions; };"]
    rows = []
    for n, (key, entries) in enumerate(sorted(modules.items())):
        if not entries:
            continue
        lines.append(f"static const struct mlgo_table_decision mlgo_table_module_{n}[] = {{")
        lines += [f"  {{{c_string(e[0])}, {c_string(e[1])}, {e[2]}u, {e[3]}u, "
                  + (f"1u, {{{', '.join(f'{x}LL' for x in e[4:])}}}}}," if len(e) == 7
                     else "0u, {0, 0, 0}},") for e in entries]
        lines.append("};")
        rows.append(f"  {{{c_string(key)}, mlgo_table_module_{n}, {len(entries)}}},")
    if rows:
        lines += ["const struct mlgo_table_module mlgo_decision_table[] = {", *rows, "};"]
    else:  # a table naming no decision: the plugin then finds no module in it
        lines.append("const struct mlgo_table_module mlgo_decision_table[1] = {{0, 0, 0}};")
    lines.append(f"const size_t mlgo_decision_table_modules = {len(rows)};")
    return "\n".join(lines) + "\n"


def module_key(path: str | PurePosixPath) -> str:
    """A source path relative to the project's root as a table key ('./' parts dropped)."""
    return "/".join(p for p in PurePosixPath(path).parts if p != ".")
