"""The documentation's shape: a short README that links every page of docs/, and citations of
the results pages that name a section heading that exists (a renamed or moved section fails
here instead of leaving a reader at a dead end)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = "tests/test_docs.py"
RESULT_PAGES = {"RESULTS.md": ROOT / "benchmarks" / "RESULTS.md",
                "results-archive-2026.md": ROOT / "benchmarks" / "results-archive-2026.md"}
# A page name, then one or more quoted section titles: `RESULTS.md, "A"` or `RESULTS.md ("A")`
# or `..., "A" and "B"`.
CITATION = re.compile(r'(RESULTS\.md|results-archive-2026\.md),? \(?"([^"]+)"((?:(?:,| and) "[^"]+")*)')


def _headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text().splitlines()
            if line.startswith("#")]


def _flatten(text: str) -> str:
    """Text with line breaks and comment leaders removed, so a citation wrapped over comment
    lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#+(?!#)|//|\*)?\s*", " ", text)


def citations(text: str) -> list[tuple[str, str]]:
    """(page, title) of every section citation in `text`."""
    found = []
    for m in CITATION.finditer(_flatten(text)):
        titles = [m.group(2), *re.findall(r'"([^"]+)"', m.group(3))]
        found += [(m.group(1), t) for t in titles]
    return found


def _cites_a_heading(page: str, title: str) -> bool:
    title = title.rstrip(".").replace("...", "").strip()
    return any(h.startswith(title) for h in _headings(RESULT_PAGES[page]))


def test_citation_parser_reads_wrapped_and_joined_titles():
    text = ('# see benchmarks/RESULTS.md, "The environment measures the real\n'
            '# build" and "Regalloc"; results-archive-2026.md ("Interactive environment overhead")')
    assert citations(text) == [("RESULTS.md", "The environment measures the real build"),
                               ("RESULTS.md", "Regalloc"),
                               ("results-archive-2026.md", "Interactive environment overhead")]
    assert not _cites_a_heading("RESULTS.md", "A section nobody wrote")


def test_every_results_citation_names_an_existing_heading():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    bad, seen = [], 0
    for name in files:
        # This file's own examples are not citations.
        if not name.endswith((".py", ".md", ".gin", ".sh", ".cpp", ".h")) or name == THIS:
            continue
        for page, title in citations((ROOT / name).read_text(errors="replace")):
            seen += 1
            if not _cites_a_heading(page, title):
                bad.append(f"{name}: {page}, {title!r}")
    assert seen > 10 and not bad, bad


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for command in ("scripts/demo.sh", "scripts/test.sh"):
        assert command in readme
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, pages - linked


def test_docs_name_no_tracker_numbers():
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *RESULT_PAGES.values(),
                 *(ROOT / "mlgo" / "shipped_policies").rglob("*.md")]:
        text = page.read_text()
        assert not re.search(r"\bissue\s*#?\d|#\d{1,4}\b", text, re.IGNORECASE), page
