"""MLGO_DECISION_SUMMARY: what the plugin and mlgo-clang served in a build.

Set MLGO_DECISION_SUMMARY=FILE for a build; each served compile (and each LTO link the plugin
runs in) appends one tab-separated line, in a single write so concurrent compiles keep lines
whole:

    PROBLEM  POLICY  MODULE  DECISIONS  YES  NOTES

PROBLEM is `inlining` or `regalloc`; POLICY the label the plugin or host was built with (a
built-in heuristic's name or a policy directory); MODULE the module the inliner ran on (`-`
for regalloc); YES how many decisions said inline (`-` for regalloc); NOTES `-` or a comma list
of: `not-size` (functions compiled without -Os/-Oz), `lto-prelink` (the compile step of an -flto
build), `lto-postlink` (the inliner at an LTO link), `lto-not-served` / `lto-link-not-served`
(an -flto compile or link whose register allocation mlgo did not serve), `table=N` (a
decision table named the module: N of its decisions were the table's, the others the
policy's). `mlgo summary FILE` adds them up.

FILE must be a regular file (a FIFO would block the reader, /dev/zero never ends), is read a
line at a time with lines up to MAX_LINE bytes, and its counts are ASCII digits (Python's
str.isdigit also takes '²', which int() then refuses).
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mlgo_base.errors import MlgoError

PROBLEMS = ("inlining", "regalloc")
# A line holds two labels (policy, module: paths up to PATH_MAX each) and short fields.
MAX_LINE = 64 * 1024
_COUNT = re.compile(r"[0-9]{1,18}")  # a whole number of decisions, in ASCII digits
_TABLE_NOTE = re.compile(r"table=([0-9]{1,18})")
NOTES = ("not-size", "lto-prelink", "lto-postlink", "lto-not-served", "lto-link-not-served")
# Where the decisions were (not) made, from the notes.
_WHERE = (("lto-link-not-served", "LTO link, not served"),
          ("lto-not-served", "-flto compile, not served"),
          ("lto-postlink", "LTO link"),
          ("lto-prelink", "-flto compile"))


@dataclass
class Group:
    runs: int = 0
    decisions: int = 0
    yes: int | None = None
    notes: Counter = field(default_factory=Counter)
    table_runs: int = 0  # runs on modules a decision table named
    table_decisions: int = 0  # decisions the table answered


def where(notes: set[str]) -> str:
    for note, text in _WHERE:
        if note in notes:
            return text
    return "compile"


def read_summary(path: Path) -> dict[tuple[str, str, str], Group]:
    """Lines of `path` added up per (problem, policy, where); MlgoError naming the file and line
    for anything malformed."""
    try:
        # Non-blocking, so that opening a FIFO returns (and is then refused) instead of waiting
        # for a writer; reads from a regular file are not affected.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise MlgoError(f"{path}: cannot read the decision summary: {e.strerror}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MlgoError(f"{path}: not a regular file (a decision summary is the file "
                        "MLGO_DECISION_SUMMARY named for a build)")
    groups: dict[tuple[str, str, str], Group] = {}
    with os.fdopen(fd, "rb") as f:
        number = 0
        try:
            for raw in iter(lambda: f.readline(MAX_LINE + 1), b""):
                number += 1
                _add_line(groups, _decode(path, number, raw), path, number)
        except OSError as e:
            raise MlgoError(f"{path}: cannot read the decision summary: {e.strerror}") from e
    return groups


def _decode(path: Path, number: int, raw: bytes) -> str:
    line = raw[:-1] if raw.endswith(b"\n") else raw
    if len(line) > MAX_LINE:
        raise MlgoError(f"{path}:{number}: not a decision summary line (longer than {MAX_LINE} "
                        "bytes)")
    try:
        return line.decode()
    except UnicodeDecodeError as e:
        raise MlgoError(f"{path}:{number}: not a decision summary line (not UTF-8 text: {e})") \
            from e


def _add_line(groups: dict[tuple[str, str, str], Group], line: str, path: Path,
              number: int) -> None:
    fields = line.split("\t")
    bad = None
    if len(fields) != 6:
        bad = f"{len(fields)} tab-separated fields, expected 6"
    elif fields[0] not in PROBLEMS:
        bad = f"unknown problem {fields[0]!r}"
    elif not _COUNT.fullmatch(fields[3]) or not (fields[4] == "-" or _COUNT.fullmatch(fields[4])):
        bad = "decision counts are not whole numbers of at most 18 digits 0-9"
    notes = set() if bad or fields[5] == "-" else set(fields[5].split(","))
    table = [m for m in map(_TABLE_NOTE.fullmatch, notes) if m]
    notes -= {m.group(0) for m in table}
    if not bad and len(table) > 1:
        bad = "two table= notes"
    if not bad and notes - set(NOTES):
        bad = f"unknown notes {sorted(notes - set(NOTES))}"
    if bad:
        raise MlgoError(f"{path}:{number}: not a decision summary line ({bad}): {line[:200]!r}")
    group = groups.setdefault((fields[0], fields[1], where(notes)), Group())
    group.runs += 1
    group.decisions += int(fields[3])
    if fields[4] != "-":
        group.yes = (group.yes or 0) + int(fields[4])
    group.notes.update(notes)
    if table:
        group.table_runs += 1
        group.table_decisions += int(table[0].group(1))


def format_summary(groups: dict[tuple[str, str, str], Group]) -> str:
    """A table, one line per policy and place, then one line per thing to know."""
    if not groups:
        return "no decisions recorded (was MLGO_DECISION_SUMMARY set for the build?)\n"
    rows = [("problem", "policy", "where", "runs", "decisions", "yes")]
    for (problem, policy, place), g in sorted(groups.items()):
        rows.append((problem, policy, place, str(g.runs), str(g.decisions),
                     "-" if g.yes is None else str(g.yes)))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    out = []
    for r in rows:
        left = "  ".join(r[i].ljust(widths[i]) for i in range(3))
        right = "  ".join(r[i].rjust(widths[i]) for i in range(3, 6))
        out.append(f"{left}  {right}")
    tabled = [g for g in groups.values() if g.table_runs]
    if tabled:
        out.append(f"decision tables: {sum(g.table_runs for g in tabled)} inliner runs on modules "
                   f"a table named; the table answered {sum(g.table_decisions for g in tabled)} "
                   f"of the decisions, the policy the rest")
    not_size = sum(g.notes["not-size"] for g in groups.values())
    if not_size:
        out.append(f"note: {not_size} inliner runs had functions not compiled for size "
                   "(-Os/-Oz): a later -O2/-O3 overrode -Oz (see `mlgo cmake-flags`)")
    prelink = sum(g.runs for (p, _, w), g in groups.items() if p == "inlining"
                  and w == "-flto compile")
    postlink = sum(g.runs for (p, _, w), g in groups.items() if p == "inlining"
                   and w == "LTO link")
    if prelink and not postlink:
        out.append(f"note: {prelink} -flto compile steps, and no LTO link ran the inliner "
                   "policy: the link's inlining was LLVM's own (link with -fuse-ld=lld "
                   "-Wl,--load-pass-plugin=PLUGIN)")
    unserved = sum(g.runs for (p, _, w), g in groups.items() if p == "regalloc"
                   and w.endswith("not served"))
    if unserved:
        out.append(f"note: {unserved} -flto compiles or links: their register allocation "
                   "(at the link) was LLVM's own, not the regalloc policy")
    return "\n".join(out) + "\n"
