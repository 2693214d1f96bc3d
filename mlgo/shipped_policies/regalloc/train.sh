#!/usr/bin/env bash
# How policies/regalloc was trained: a residual network (LLVM's default eviction restated as
# `default-rule`, plus learned per-candidate scores that overturn it only where they lead by the
# anchor) cloned from a flip search scored by the basic-block trace cost.
# benchmarks/results-archive-2026.md, "A residual eviction policy" and "A residual policy from
# seven programs". Run from the repository root; the times of each step are in the latter
# (on 2 cores: the search about 25 min, most of it jsonnet's vm.cpp, the training under two
# minutes).
set -euo pipefail
# 0. The packages' builds, whose recorded compile commands steps 1 and 5 compile again (`mlgo
#    corpus debian` keeps each build in its cache; the corpus it writes is not used here).
mlgo corpus debian lua5.4 bzip2 zlib lz4 libyaml jsonnet libpng1.6 giflib -o packages
# 1. The training programs built at their own flags and run under callgrind: the block profile
#    of their plain builds and a corpus of exactly the compiles profiled (each at its build's
#    level). lua5.4, bzip2, zlib, lz4 and libyaml (libyaml: validation, never searched), then
#    jsonnet and libpng (added to the training programs later; mlgo/problems/regalloc/programs.py).
mlgo profile programs --program lua5.4 --program bzip2 --program "zlib (minigzip)" \
  --program lz4 --program "libyaml (parser)" --program jsonnet --program "libpng (pngtest)" \
  -o profile7.json --corpus c7
# 2. Subsets of c7: libyaml's 9 modules, the 11 hot modules searched (at least 5% of their
#    program's instructions; libyaml is not searched). The run's split (validation: libyaml's
#    modules) is step 4's --validation-projects.
mlgo corpus merge c7 --projects libyaml -o yaml
mlgo corpus merge c7 -o hot11 --modules lua5.4/src/lvm.c,lua5.4/src/ldo.c,lua5.4/src/ltablib.c,\
bzip2/blocksort.c,bzip2/compress.c,bzip2/decompress.c,bzip2/bzlib.c,zlib/deflate.c,\
lz4/lib/lz4hc.c,jsonnet/core/vm.cpp,libpng1.6/pngwutil.c
PROFILE="regalloc.RegallocEviction.profile='profile7.json'"
# 3. The flip search from default-rule (1 pass, at most 60 compiles per module).
mlgo search --problem regalloc --corpus hot11 -o s3 --budget 60 --passes 1 --workers 2 \
  --per-module --gin_bindings "$PROFILE"
# 4. One imitation round of the search's best: a fresh residual network is default-rule itself.
mlgo train --problem regalloc --algorithm imitation --corpus c7 -o r4 --search s3 --workers 2 \
  --validation-projects libyaml \
  --gin_bindings "$PROFILE" \
  --gin_bindings "regalloc.RegallocNetworkConfig.residual = True" \
  --gin_bindings "imitation.ImitationConfig.rounds = 1" \
  --gin_bindings "imitation.ImitationConfig.epochs = 40" \
  --gin_bindings "imitation.ImitationConfig.flip_weight = 100.0"
# 5. The flip margin, chosen on the validation programs alone (libyaml and giflib, whole
#    programs under callgrind): the lowest total with neither above +0.05%; ties: the larger
#    margin. It was 0. The trace-cost figure on libyaml's modules is recorded for the export gate.
mlgo margin --policy r4/policy -o m-r4 --margins 0 1 4 --choose-on-programs "libyaml (parser)" \
  --choose-on-programs "giflib (gif2rgb)" --max-program-change 0.05
mlgo eval --problem regalloc --corpus yaml --policy m-r4/margin-0 --workers 2 \
  --gin_bindings "$PROFILE" --json m-r4/eval-0.json
mlgo margin --policy r4/policy -o cand --margins 0 --validation m-r4/eval-0.json
