"""The tables of benchmarks/plugin_transfer.sh, from the `mlgo eval --json` reports and search
directories the script wrote into DATA.

    python benchmarks/plugin_transfer_table.py DATA [VARIANT...]
    python benchmarks/plugin_transfer_table.py DATA --all-heldout

The first: per variant, the margin chosen on validation, the linked validation total, the linked
held-out total and the worst held-out project (the shipped policy's from its baseline).

With --all-heldout: the same chosen policies (and the rule, and the shipped policy) over every
held-out package, the first ones (DATA/heldout) and those added later (DATA/heldout-added, the
addendum of benchmarks/plugin_transfer_rule.md): linked totals of each part and of all, each
package, the worst package; and the search's reach on the same modules (DATA/search-heldout and
DATA/search-added, per package as linking keeps it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VARIANTS = ("llvm38", "use", "size", "loop", "all")
# every policy chosen on validation by the rule, with seeds 1 and 2 of `all`
CHOSEN = (*VARIANTS, "all-seed1", "all-seed2")


def linked(report: dict) -> tuple[float, str, float]:
    """Linked total change and the worst project's (name, change), in percent."""
    per_project = {p: v["relative_change"] for p, v in report["linked"].items()}
    worst = max(per_project, key=per_project.get)
    return 100 * report["linked_relative_change"], worst, 100 * per_project[worst]


def chosen_margin(data: Path, variant: str) -> str | None:
    """The margin chosen on validation: the one whose policy records its validation figure."""
    chosen = [d.name.removeprefix("margin-")
              for d in sorted((data / f"margins-{variant}").glob("margin-*"))
              if "validation" in json.loads((d / "policy.json").read_text()).get("meta", {})]
    if len(chosen) > 1:
        raise SystemExit(f"{data}/margins-{variant}: {len(chosen)} margins record a validation "
                         "figure, not one")
    return chosen[0] if chosen else None


def row(name: str, margin: str, valid: Path, heldout: Path) -> str:
    cells = [name, margin]
    v = linked(json.loads(valid.read_text())) if valid.exists() else None
    h = linked(json.loads(heldout.read_text())) if heldout.exists() else None
    cells.append(f"{v[0]:+.3f}%" if v else "not measured")
    cells.append(f"{h[0]:+.3f}%" if h else "not measured")
    cells.append(f"{h[1]} {h[2]:+.3f}%" if h else "")
    return "| " + " | ".join(cells) + " |"


def first_table(data: Path, variants: list[str]) -> None:
    print("| variant | margin | validation linked | held-out linked | worst held-out project |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(row("shipped `inlining-oz`", "", data / "shipped-valid.json", data / "shipped-heldout.json"))
    for v in variants:
        m = chosen_margin(data, v)
        if m is None:
            continue
        print(row(v, m, data / f"margins-{v}" / f"eval-margin-{m}.json", data / f"heldout-{v}.json"))


def _pct(policy: float, default: float) -> str:
    return f"{100 * (policy - default) / default:+.3f}%"


def _linked_of(path: Path) -> dict[str, tuple[float, float]] | None:
    """{package: (policy, default)} linked bytes of an eval report, or None if not measured."""
    if not path.exists():
        return None
    return {p: (v["policy"], v["default"]) for p, v in json.loads(path.read_text())["linked"].items()}


def search_linked(search_dir: Path, corpus_dir: Path) -> dict[str, tuple[float, float]]:
    """{package: (best, default)} linked bytes of a search's best decisions per module."""
    from corpus_tools.corpus import Corpus
    from mlgo.evaluate import linked_totals
    from mlgo.search import load_result, result_path

    corpus = Corpus.load(corpus_dir)
    results = []
    for m in corpus.modules:
        r = load_result(result_path(search_dir, m.name))
        results.append({"module": m.name, "project": m.project, "policy": r.policy_total,
                        "default": r.default_total, "comdat": r.extra.get("comdat", {})})
    return {p: (v["policy"], v["default"]) for p, v in linked_totals(results).items()}


def all_heldout_table(data: Path) -> None:
    first_pkgs = sorted(json.loads((data / "heldout-llvm38.json").read_text())["linked"])
    added_pkgs = sorted(json.loads((data / "added-cost-threshold.json").read_text())["linked"])
    pkgs = first_pkgs + added_pkgs
    rows: list[tuple[str, str, Path | None, dict | None]] = [
        ("shipped `inlining-oz`", "", data / "shipped-valid.json",
         _merge(_linked_of(data / "shipped-heldout.json"), _linked_of(data / "added-inlining-oz.json"))),
        ("the rule (`cost-threshold`)", "", data / "rule-valid.json",
         _merge(_linked_of(data / "rule-heldout.json"), _linked_of(data / "added-cost-threshold.json"))),
    ]
    for v in CHOSEN:
        m = chosen_margin(data, v)
        if m is None:
            continue
        rows.append((v, m, data / f"margins-{v}" / f"eval-margin-{m}.json",
                     _merge(_linked_of(data / f"heldout-{v}.json"), _linked_of(data / f"added-{v}.json"))))
    reach = _merge(search_linked(data / "search-heldout", data / "heldout"),
                   search_linked(data / "search-added", data / "heldout-added")
                   if (data / "search-added").is_dir() else None)
    rows.append(("search reach (budget 15, comdat-aware; chose nothing)", "", None, reach))

    added = " + ".join(added_pkgs)
    print(f"| policy | margin | validation linked | first {len(first_pkgs)} held out | added: {added} "
          f"| all {len(pkgs)} held out | worst package | " + " | ".join(pkgs) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(pkgs))
    for name, margin, valid, held in rows:
        cells = [name, margin]
        cells.append(f"{linked(json.loads(valid.read_text()))[0]:+.3f}%"
                     if valid is not None and valid.exists() else "")
        if held is None or set(held) != set(pkgs):
            cells += ["not measured"] * 4 + [""] * len(pkgs)
        else:
            for part in (first_pkgs, added_pkgs, pkgs):
                cells.append(_pct(sum(held[p][0] for p in part), sum(held[p][1] for p in part)))
            worst = max(pkgs, key=lambda p: held[p][0] / held[p][1])
            cells.append(f"{worst} {_pct(*held[worst])}")
            cells += [_pct(*held[p]) for p in pkgs]
        print("| " + " | ".join(cells) + " |")


def _merge(a: dict | None, b: dict | None) -> dict | None:
    return None if a is None or b is None else {**a, **b}


def main(argv: list[str]) -> int:
    data = Path(argv[0])
    if argv[1:] == ["--all-heldout"]:
        all_heldout_table(data)
    else:
        first_table(data, argv[1:] or list(VARIANTS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
