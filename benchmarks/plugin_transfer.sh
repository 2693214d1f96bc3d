#!/usr/bin/env bash
# Do residual policies cloned from a search carry to held-out projects once they see the inliner
# plugin's own features (docs/plugin-features.md)? One search of the training modules under
# --env plugin, then the same imitation run (same seed, same search, same settings) in variants
# that differ only in which plugin features the network ignores; each variant's flip margin is
# chosen on the validation corpus; the held-out corpus is measured once per variant, after the
# rule written in benchmarks/plugin_transfer_rule.md.
#
# usage: benchmarks/plugin_transfer.sh DATA STEP...
#   DATA holds the corpora train/, valid/, heldout/ (made with `mlgo corpus merge`, see
#   benchmarks/RESULTS.md); STEP is one of: search, baseline, VARIANT (train + margins),
#   heldout-VARIANT, reach, table; VARIANT is one of llvm38, use, size, loop, all.
#   Held-out packages added after the first measurement (the addendum of
#   benchmarks/plugin_transfer_rule.md), in the corpus DATA/heldout-added/: added-baseline (the
#   shipped policy and the rule), added-VARIANT (the policy each variant already chose on
#   validation, unchanged; e.g. added-all-seed1), added-reach (the search, as in reach),
#   added-table (every chosen policy over all held-out packages, and the search's reach).
# Niced and at two workers: the machine is shared. SEED=N (default 0) trains and chooses another
# seed's policy into DATA/run-VARIANT-seedN and DATA/margins-VARIANT-seedN.
set -euo pipefail
DATA=${1:?usage: plugin_transfer.sh DATA STEP...}
shift
MLGO=(nice -n 15 "${PYTHON:-python}" -m mlgo.cli.main)
WORKERS=${WORKERS:-2}
SEED=${SEED:-0}
RUN_SUFFIX=$([[ $SEED == 0 ]] || echo "-seed$SEED")  # another seed: its own directories

PLUGIN_FEATURES=(callee_linkage callee_in_comdat callee_discardable callee_inline_hint callee_uses
  callee_call_sites callsite_is_last_use caller_instruction_count callee_instruction_count
  callee_block_count callee_max_loop_depth callsite_loop_depth callsite_relative_freq_x1000
  callee_is_recursive callee_in_caller_scc)
declare -A KEEP=(
  [llvm38]=""
  [use]="callee_uses callsite_is_last_use callee_call_sites callee_linkage callee_in_comdat callee_discardable"
  [size]="caller_instruction_count callee_instruction_count callee_block_count callee_inline_hint"
  [loop]="callee_max_loop_depth callsite_loop_depth callsite_relative_freq_x1000 callee_is_recursive callee_in_caller_scc"
  [all]="${PLUGIN_FEATURES[*]}"
)

# The gin value of ignored_features for a variant: LLVM 19's always-zero inlining_default plus
# every plugin feature the variant does not keep.
ignored() {
  local keep=" ${KEEP[$1]} " out="'inlining_default'"
  for f in "${PLUGIN_FEATURES[@]}"; do
    [[ $keep == *" $f "* ]] || out+=", '$f'"
  done
  echo "($out,)"  # the trailing comma: a tuple even of one name
}

# The margin policy `mlgo margin --choose-on` chose on validation in margins directory $1: the
# chosen margin's policy is the only one recording a validation figure.
chosen_policy() {
  "${PYTHON:-python}" -c '
import sys
from pathlib import Path
from mlgo.policies.policy_dir import read_policy_json
chosen = [d for d in sorted(Path(sys.argv[1]).glob("margin-*"))
          if "validation" in read_policy_json(d).get("meta", {})]
if len(chosen) != 1:
    sys.exit(f"{sys.argv[1]}: {len(chosen)} margins record a validation figure, not one")
print(chosen[0])' "$1"
}

for step in "$@"; do
  case $step in
    search)
      "${MLGO[@]}" search --problem inlining --env plugin --corpus "$DATA/train" -o "$DATA/search" \
        --workers "$WORKERS" --passes 1 --budget 15 --flips inlined --per-module ;;
    baseline)
      for c in valid heldout; do
        "${MLGO[@]}" eval --problem inlining --env plugin --corpus "$DATA/$c" --policy inlining-oz \
          --workers "$WORKERS" --json "$DATA/shipped-$c.json"
      done ;;
    llvm38|use|size|loop|all)
      # validation fraction 0: the validation corpus is lua5.4, not a share of the training modules
      [[ -f $DATA/run-$step$RUN_SUFFIX/policy/policy.json ]] || "${MLGO[@]}" train --problem inlining --algorithm imitation --env plugin --corpus "$DATA/train" \
        -o "$DATA/run-$step$RUN_SUFFIX" --search "$DATA/search" --workers "$WORKERS" --seed "$SEED" \
        --validation-fraction 0 \
        --gin_bindings "inlining.InliningNetworkConfig.residual = True" \
        --gin_bindings "inlining.InliningNetworkConfig.ignored_features = $(ignored "$step")" \
        --gin_bindings "inlining.InliningNetworkConfig.log_features = True" \
        --gin_bindings "imitation.ImitationConfig.rounds = 1" \
        --gin_bindings "imitation.ImitationConfig.epochs = 30" \
        --gin_bindings "imitation.ImitationConfig.flip_weight = 3.0" \
        --gin_bindings "imitation.ImitationConfig.batch_size = 256" \
        --gin_bindings "imitation.ImitationConfig.final_lr_fraction = 0.1"
      "${MLGO[@]}" margin --policy "$DATA/run-$step$RUN_SUFFIX/policy" -o "$DATA/margins-$step$RUN_SUFFIX" --margins 0 1 2 4 \
        --choose-on "$DATA/valid" --workers "$WORKERS" --env plugin \
        | tee "$DATA/margins-$step$RUN_SUFFIX.log" ;;
    heldout-*)
      v=${step#heldout-}
      chosen=$(chosen_policy "$DATA/margins-$v$RUN_SUFFIX")
      "${MLGO[@]}" eval --problem inlining --env plugin --corpus "$DATA/heldout" \
        --policy "$chosen" --workers "$WORKERS" --json "$DATA/heldout-$v$RUN_SUFFIX.json" ;;
    added-baseline)
      for p in inlining-oz cost-threshold; do
        "${MLGO[@]}" eval --problem inlining --env plugin --corpus "$DATA/heldout-added" --policy "$p" \
          --workers "$WORKERS" --json "$DATA/added-$p.json"
      done ;;
    added-reach)
      "${MLGO[@]}" search --problem inlining --env plugin --corpus "$DATA/heldout-added" -o "$DATA/search-added" \
        --workers "$WORKERS" --passes 1 --budget 15 --flips inlined --comdat-aware ;;
    added-table)
      "${PYTHON:-python}" "$(dirname "$0")/plugin_transfer_table.py" "$DATA" --all-heldout ;;
    added-*)  # after added-baseline, added-reach and added-table
      v=${step#added-}$RUN_SUFFIX
      chosen=$(chosen_policy "$DATA/margins-$v")
      "${MLGO[@]}" eval --problem inlining --env plugin --corpus "$DATA/heldout-added" \
        --policy "$chosen" --workers "$WORKERS" --json "$DATA/added-$v.json" ;;
    reach)
      "${MLGO[@]}" search --problem inlining --env plugin --corpus "$DATA/heldout" -o "$DATA/search-heldout" \
        --workers "$WORKERS" --passes 1 --budget 15 --flips inlined --comdat-aware ;;
    table)
      "${PYTHON:-python}" "$(dirname "$0")/plugin_transfer_table.py" "$DATA" ;;
    *) echo "plugin_transfer.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
