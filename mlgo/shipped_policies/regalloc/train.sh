#!/usr/bin/env bash
# How policies/regalloc was trained: a residual network (LLVM's default eviction restated as
# `default-rule`, plus learned per-candidate scores that overturn it only where they lead by the
# anchor) cloned from a flip search scored by the basic-block trace cost.
# benchmarks/results-archive-2026.md, "A residual eviction policy" and "A residual policy from
# seven programs". Run from the repository root; the times of each step are in the latter
# (on 2 cores: the search about 25 min, most of it jsonnet's vm.cpp, the training under two
# minutes).
set -euo pipefail
# 1. The training programs built at their own flags and run under callgrind: the block profile
#    of their plain builds and a corpus of exactly the compiles profiled (each at its build's
#    level). lua5.4, bzip2, zlib, lz4 and libyaml (libyaml: validation, never searched), then
#    jsonnet and libpng (regalloc_reward.py's EXTRA_TRAINING). Merged into one profile and corpus.
python benchmarks/regalloc_reward.py --policy default-rule --workdir wt \
  --write-profile profile5.json --write-corpus c5
python benchmarks/regalloc_reward.py --program jsonnet --program "libpng (pngtest)" \
  --policy default-rule --workdir wt2 --write-profile profile-extra.json --write-corpus c-extra
mlgo corpus merge c5 c-extra -o c7
# 2. The profiles merged; subsets of c7: the 11 hot modules searched (at least 5% of their
#    program's instructions; libyaml is not searched) and libyaml's 9 modules; the run's split
#    (validation: libyaml's modules).
python - <<'PY'
import json, os
from pathlib import Path
from mlgo.problems.regalloc.profile import load_profile, write_profile
write_profile("profile7.json", {**load_profile("profile5.json"), **load_profile("profile-extra.json")},
              "profile5.json and profile-extra.json (benchmarks/regalloc_reward.py)")
c7 = json.loads(Path("c7/corpus_description.json").read_text())
yaml = [m for m in c7["modules"] if m.startswith("libyaml/")]
hot = ["lua5.4/src/lvm.c", "lua5.4/src/ldo.c", "lua5.4/src/ltablib.c", "bzip2/blocksort.c",
       "bzip2/compress.c", "bzip2/decompress.c", "bzip2/bzlib.c", "zlib/deflate.c", "lz4/lib/lz4hc.c",
       "jsonnet/core/vm.cpp", "libpng1.6/pngwutil.c"]
for name, modules in (("hot11", hot), ("yaml", yaml)):
    for m in modules:
        for ext in (".bc", ".cmd"):
            (Path(name) / (m + ext)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path("c7").resolve() / (m + ext), Path(name) / (m + ext))
    Path(name, "corpus_description.json").write_text(json.dumps({**c7, "modules": modules}))
Path("r4").mkdir()
Path("r4/split.json").write_text(json.dumps(
    {"train": [m for m in c7["modules"] if m not in yaml], "validation": yaml}))
PY
PROFILE="regalloc.RegallocEviction.profile='profile7.json'"
# 3. The flip search from default-rule (1 pass, at most 60 compiles per module).
mlgo search --problem regalloc --corpus hot11 -o s3 --budget 60 --passes 1 --workers 2 \
  --per-module --gin_bindings "$PROFILE"
# 4. One imitation round of the search's best: a fresh residual network is default-rule itself.
mlgo train --problem regalloc --algorithm imitation --corpus c7 -o r4 --search s3 --workers 2 \
  --gin_bindings "$PROFILE" \
  --gin_bindings "regalloc.RegallocNetworkConfig.residual = True" \
  --gin_bindings "imitation.ImitationConfig.rounds = 1" \
  --gin_bindings "imitation.ImitationConfig.epochs = 40" \
  --gin_bindings "imitation.ImitationConfig.flip_weight = 100.0"
# 5. The flip margin, chosen on the validation programs alone (libyaml and giflib, whole
#    programs under callgrind): the lowest total with neither above +0.05%; ties: the larger
#    margin. It was 0. The trace-cost figure on libyaml's modules is recorded for the export gate.
python benchmarks/flip_margin.py r4/policy m-r4 0 1 4
python benchmarks/regalloc_programs.py --no-shipped --program "libyaml (parser)" \
  --program "giflib (gif2rgb)" --policy m-r4/margin-0 --policy m-r4/margin-1 --policy m-r4/margin-4
mlgo eval --problem regalloc --corpus yaml --policy m-r4/margin-0 --workers 2 \
  --gin_bindings "$PROFILE" --json m-r4/eval-0.json
python benchmarks/flip_margin.py r4/policy cand 0 --validation m-r4/eval-0.json
