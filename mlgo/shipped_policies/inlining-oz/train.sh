#!/usr/bin/env bash
# How policies/inlining-oz was trained: 12 Debian source packages (7 C, 5 C++), split by project
# with --seed 5 (chosen before training so that validation is one C and one C++ project whose
# -Oz gap is not dominated by the cost-threshold rule itself: lua5.4 and re2). Measured wall times on a
# 2-core machine shared with other jobs: trace + bc 7.8 min, ppo 15 iterations ~13 min.
set -euo pipefail
mlgo corpus debian lua5.4 zlib lz4 libyaml pcre2 expat bzip2 -o corpora/c7
mlgo corpus debian tinyxml2 double-conversion gflags libjsoncpp re2 -o corpora/cpp5
mlgo corpus merge corpora/c7 corpora/cpp5 -o corpora/c12
mlgo train --problem inlining --algorithm bc --corpus corpora/c12 -o runs/c12-bc --workers 2 --seed 5
mlgo train --problem inlining --algorithm ppo --corpus corpora/c12 -o runs/c12-ppo --workers 2 --seed 5 \
  --warmstart runs/c12-bc/best \
  --gin_bindings "ppo.PPOConfig.warmstart_temperature = 4.0" \
  --gin_bindings "ppo.PPOConfig.iterations = 15"
# The shipped policy is runs/c12-ppo/best; its test on projects that played no part in training:
mlgo corpus debian jq libpng1.6 libzstd -o corpora/heldout3
mlgo eval --problem inlining --corpus corpora/heldout3 --policy runs/c12-ppo/best --json heldout3.json
