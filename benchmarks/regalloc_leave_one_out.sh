#!/usr/bin/env bash
# Do learned eviction flips carry over to a program they were not learned from? Leave one
# training program out: imitation (as policies/regalloc/train.sh, margin 0) from the other
# programs' searched flips, then the left-out program under callgrind (whole program) with that
# policy, with default-rule and plain clang-19. Uses only training programs.
# Run in the directory where policies/regalloc/train.sh ran (hot11, s3, c7, profile7.json);
# the repository root is REPO (default: this script's parent). Results: lopo/*/measure.log.
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
PROFILE="regalloc.RegallocEviction.profile='$PWD/profile7.json'"
for pair in "lua5.4|lua5.4" "bzip2|bzip2" "zlib|zlib (minigzip)" "lz4|lz4" \
            "libpng1.6|libpng (pngtest)" "jsonnet|jsonnet"; do
  prefix=${pair%%|*}; prog=${pair#*|}
  d=lopo/$prefix
  rm -rf "$d" && mkdir -p "$d"
  # The other programs' hot modules and their search results (no new compiles: the search
  # below only writes the trace of the kept modules, so the run's feature vocabulary, read from
  # that trace, never sees the program left out), and a split whose training part leaves the
  # program out (validation: libyaml, as in train.sh).
  mlgo corpus merge hot11 --exclude-projects "$prefix" -o "$d/hot" > /dev/null
  cp -r s3 "$d/s"
  rm -rf "$d/s/modules/$prefix"
  python3 - "$prefix" "$d" <<'PY'
import json, sys
from pathlib import Path
prefix, d = sys.argv[1], Path(sys.argv[2])
c7 = json.loads(Path("c7/corpus_description.json").read_text())
yaml = [m for m in c7["modules"] if m.startswith("libyaml/")]
(d / "r").mkdir()
(d / "r" / "split.json").write_text(json.dumps(
    {"train": [m for m in c7["modules"] if m not in yaml and not m.startswith(prefix + "/")],
     "validation": yaml}))
PY
  mlgo search --problem regalloc --corpus "$d/hot" -o "$d/s" --budget 60 --passes 1 --workers 2 \
    --per-module --gin_bindings "$PROFILE" > "$d/search.log" 2>&1
  mlgo train --problem regalloc --algorithm imitation --corpus c7 -o "$d/r" --search "$d/s" \
    --workers 2 --gin_bindings "$PROFILE" \
    --gin_bindings "regalloc.RegallocNetworkConfig.residual = True" \
    --gin_bindings "imitation.ImitationConfig.rounds = 1" \
    --gin_bindings "imitation.ImitationConfig.epochs = 40" \
    --gin_bindings "imitation.ImitationConfig.flip_weight = 100.0" > "$d/train.log" 2>&1
  mlgo margin --policy "$d/r/policy" -o "$d/m" --margins 0 > /dev/null
  python "$REPO/benchmarks/regalloc_programs.py" --no-shipped --program "$prog" \
    --policy "$PWD/$d/m/margin-0" --policy default-rule > "$d/measure.log" 2>&1
  echo "== $prog"; grep -A1 "^program" "$d/measure.log" | tail -1
done
