"""What stock LLVM 19 sends and expects on its channels: each problem's advice (the output's
name) and the features the built-in heuristics declare, as (name, element type, element count)
in the compiler's header order. Tests check them against the live compiler's header
(tests/test_plugin.py); policies trained on a header keep their own copy of it.

Pure data, no numpy: the compiler wrapper's per-compile path imports it."""

from __future__ import annotations

FeatureDecl = tuple[str, str, int]  # name, element type, element count

ADVICE = {"inlining": "inlining_decision", "regalloc": "index_to_evict"}

# Where LLVM 19 puts its default advisor's decision under -inliner-interactive-include-default:
# MLInlineAdvisor::getAdviceImpl writes it to tensor index InlineCostFeatureIndex::
# NumberOfFeatures, the first feature after the InlineCost ones, instead of the extra
# `inlining_default` tensor at the end (which stays 0). That slot is callee_basic_block_count,
# whose real value is then lost for the whole compile.
DEFAULT_DECISION_SLOT = "callee_basic_block_count"

INLINE_FEATURES: tuple[str, ...] = (  # every one an int64 scalar
    "sroa_savings", "sroa_losses", "load_elimination", "call_penalty", "call_argument_setup",
    "load_relative_intrinsic", "lowered_call_arg_setup", "indirect_call_penalty",
    "jump_table_penalty", "case_cluster_penalty", "switch_default_dest_penalty",
    "switch_penalty", "unsimplified_common_instructions", "num_loops", "dead_blocks",
    "simplified_instructions", "constant_args", "constant_offset_ptr_args", "callsite_cost",
    "cold_cc_penalty", "last_call_to_static_bonus", "is_multiple_blocks", "nested_inlines",
    "nested_inline_cost_estimate", "threshold", "callee_basic_block_count", "callsite_height",
    "node_count", "nr_ctant_params", "cost_estimate", "edge_count", "caller_users",
    "caller_conditionally_executed_blocks", "caller_basic_block_count",
    "callee_conditionally_executed_blocks", "callee_users", "is_callee_avail_external",
    "is_caller_avail_external",
)

_I, _F = "int64_t", "float"
REGALLOC_FEATURES: tuple[FeatureDecl, ...] = tuple(
    (name, typ, 33) for name, typ in (  # one element per eviction candidate (32 + the range)
        ("mask", _I), ("is_free", _I), ("nr_urgent", _F), ("nr_broken_hints", _F),
        ("is_hint", _I), ("is_local", _I), ("nr_rematerializable", _F),
        ("nr_defs_and_uses", _F), ("weighed_reads_by_max", _F), ("weighed_writes_by_max", _F),
        ("weighed_read_writes_by_max", _F), ("weighed_indvars_by_max", _F),
        ("hint_weights_by_max", _F), ("start_bb_freq_by_max", _F), ("end_bb_freq_by_max", _F),
        ("hottest_bb_freq_by_max", _F), ("liverange_size", _F), ("use_def_density", _F),
        ("max_stage", _I), ("min_stage", _I),
    )
) + (("progress", _F, 1),)

FEATURES: dict[str, tuple[FeatureDecl, ...]] = {
    "inlining": tuple((n, _I, 1) for n in INLINE_FEATURES),
    "regalloc": REGALLOC_FEATURES,
}
