#!/usr/bin/env bash
# How policies/inlining-oz was trained, on -Oz IR: every module as `clang-19 -Oz -c` emits it with
# its package's own flags (the default of `mlgo corpus debian` for inlining corpora; the level is
# recorded in each corpus_description.json and checked by eval/trace/train).
# 12 Debian source packages (7 C, 5 C++), split by project with --seed 5 (chosen before
# training: validation is one C and one C++ project, lua5.4 and re2); jq, libpng1.6 and libzstd
# are the test projects, used for nothing but the report.
set -euo pipefail
mlgo corpus debian lua5.4 re2 zlib lz4 libyaml pcre2 bzip2 expat tinyxml2 double-conversion \
  gflags libjsoncpp -o corpora/c12-Oz
mlgo train --problem inlining --algorithm bc --corpus corpora/c12-Oz -o runs/c12oz-bc --workers 2 --seed 5
mlgo train --problem inlining --algorithm ppo --corpus corpora/c12-Oz -o runs/c12oz-ppo --workers 2 --seed 5 \
  --warmstart runs/c12oz-bc/best \
  --gin_bindings "ppo.PPOConfig.warmstart_temperature = 4.0" \
  --gin_bindings "ppo.PPOConfig.iterations = 15"
# The test on projects that played no part in training or in any choice:
mlgo corpus debian jq libpng1.6 libzstd -o corpora/heldout3-Oz
for p in runs/c12oz-ppo/best runs/c12oz-bc/best cost-threshold llvm-default; do
  mlgo eval --problem inlining --corpus corpora/heldout3-Oz --policy "$p" --json "heldout3-$(basename "$(dirname "$p")")-$(basename "$p").json"
done
