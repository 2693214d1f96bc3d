"""The table of benchmarks/plugin_transfer.sh: per variant, the margin chosen on validation, the
linked validation total, the linked held-out total and the worst held-out project, each from the
`mlgo eval --json` reports the script wrote into DATA (the shipped policy's from its baseline).

    python benchmarks/plugin_transfer_table.py DATA [VARIANT...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VARIANTS = ("llvm38", "use", "size", "loop", "all")


def linked(report: dict) -> tuple[float, str, float]:
    """Linked total change and the worst project's (name, change), in percent."""
    per_project = {p: v["relative_change"] for p, v in report["linked"].items()}
    worst = max(per_project, key=per_project.get)
    return 100 * report["linked_relative_change"], worst, 100 * per_project[worst]


def chosen_margin(data: Path, variant: str) -> str | None:
    log = data / f"margins-{variant}.log"
    if not log.exists():
        return None
    return log.read_text().strip().splitlines()[-1].split("/margin-")[-1]


def row(name: str, margin: str, valid: Path, heldout: Path) -> str:
    cells = [name, margin]
    v = linked(json.loads(valid.read_text())) if valid.exists() else None
    h = linked(json.loads(heldout.read_text())) if heldout.exists() else None
    cells.append(f"{v[0]:+.3f}%" if v else "not measured")
    cells.append(f"{h[0]:+.3f}%" if h else "not measured")
    cells.append(f"{h[1]} {h[2]:+.3f}%" if h else "")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    data = Path(argv[0])
    variants = argv[1:] or VARIANTS
    print("| variant | margin | validation linked | held-out linked | worst held-out project |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(row("shipped `inlining-oz`", "", data / "shipped-valid.json", data / "shipped-heldout.json"))
    for v in variants:
        m = chosen_margin(data, v)
        if m is None:
            continue
        print(row(v, m, data / f"margins-{v}" / f"eval-margin-{m}.json", data / f"heldout-{v}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
