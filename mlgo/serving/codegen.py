"""C sources for policies, in the ABI that the inliner plugin and the regalloc host link against.

Every policy source defines, with C linkage:

    // the features the policy was trained on, in the order the compiler sends them
    const char *const mlgo_policy_feature_names[];
    const char *const mlgo_policy_feature_types[];    // "int64_t", "float", ... as in the header
    const size_t mlgo_policy_feature_elements[];      // element count of each tensor
    const size_t mlgo_policy_num_features;

and one of

    // inlining: one int64 per feature (llvm::FeatureMap order); returns 0 or 1
    int64_t mlgo_inline_policy(const int64_t *features, size_t num_features);
    // regalloc: one pointer per feature tensor (int64_t* or float* per its type), returns the
    // position to evict among those whose mask is 1
    int64_t mlgo_regalloc_policy(const void *const *features, size_t num_features);

The binaries compare the declared features with the compiler's at start-up and refuse to run
on a mismatch, so a policy can index its features by position. This module generates sources
for the built-in heuristics; trained policies provide theirs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# (name, type, element count) as stock LLVM 19 sends them; tests check these against the
# compiler's own header, and the binaries check them again against the live compiler.
INLINE_FEATURES_LLVM19: tuple[str, ...] = (
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

FeatureDecl = tuple[str, str, int]  # name, element type, element count

_I, _F = "int64_t", "float"
REGALLOC_FEATURES_LLVM19: tuple[FeatureDecl, ...] = tuple(
    (name, typ, 33) for name, typ in (
        ("mask", _I), ("is_free", _I), ("nr_urgent", _F), ("nr_broken_hints", _F),
        ("is_hint", _I), ("is_local", _I), ("nr_rematerializable", _F),
        ("nr_defs_and_uses", _F), ("weighed_reads_by_max", _F), ("weighed_writes_by_max", _F),
        ("weighed_read_writes_by_max", _F), ("weighed_indvars_by_max", _F),
        ("hint_weights_by_max", _F), ("start_bb_freq_by_max", _F), ("end_bb_freq_by_max", _F),
        ("hottest_bb_freq_by_max", _F), ("liverange_size", _F), ("use_def_density", _F),
        ("max_stage", _I), ("min_stage", _I),
    )
) + (("progress", _F, 1),)

_C_TYPES = {"int64_t", "float", "double", "int32_t", "int8_t", "uint8_t", "int16_t",
            "uint16_t", "uint32_t", "uint64_t"}


def feature_table(features: Sequence[FeatureDecl]) -> str:
    """The C definitions of the feature declaration arrays (shared by every policy source)."""
    for name, typ, count in features:
        if not name.isidentifier():
            raise ValueError(f"feature name {name!r} is not a C identifier")
        if typ not in _C_TYPES:
            raise ValueError(f"feature {name!r}: unsupported element type {typ!r}")
        if count <= 0:
            raise ValueError(f"feature {name!r}: element count must be positive, got {count}")
    names = ",\n  ".join(f'"{n}"' for n, _, _ in features)
    types = ",\n  ".join(f'"{t}"' for _, t, _ in features)
    counts = ", ".join(str(c) for _, _, c in features)
    return (
        "#include <stddef.h>\n#include <stdint.h>\n\n"
        f"const char *const mlgo_policy_feature_names[] = {{\n  {names}\n}};\n"
        f"const char *const mlgo_policy_feature_types[] = {{\n  {types}\n}};\n"
        f"const size_t mlgo_policy_feature_elements[] = {{{counts}}};\n"
        f"const size_t mlgo_policy_num_features = {len(features)};\n"
    )


def _index(features: Sequence[FeatureDecl], name: str, typ: str) -> int:
    for i, (n, t, _) in enumerate(features):
        if n == name:
            if t != typ:
                raise ValueError(f"feature {name!r} has type {t}, this heuristic needs {typ}")
            return i
    raise ValueError(f"this heuristic needs feature {name!r}, which is not in the feature list")


def _inline_decls(feature_names: Sequence[str]) -> list[FeatureDecl]:
    return [(n, "int64_t", 1) for n in feature_names]


# -- inlining -----------------------------------------------------------------------------------

def _inline_source(feature_names: Sequence[str], doc: str, body: str) -> str:
    decls = _inline_decls(feature_names)
    return (
        f"/* {doc} Generated by mlgo.serving.codegen. */\n"
        + feature_table(decls)
        + "\nint64_t mlgo_inline_policy(const int64_t *features, size_t num_features) {\n"
        "  (void)features;\n  (void)num_features;\n"
        f"{body}"
        "}\n"
    )


def inline_cost_threshold(feature_names: Sequence[str] = INLINE_FEATURES_LLVM19) -> str:
    """The default inliner's rule: inline when cost_estimate < threshold (the same rule as
    mlgo.problems.inlining.problem.cost_threshold)."""
    decls = _inline_decls(feature_names)
    cost = _index(decls, "cost_estimate", "int64_t")
    threshold = _index(decls, "threshold", "int64_t")
    return _inline_source(
        feature_names, "Inline when the estimated cost is below the threshold.",
        f"  return features[{cost}] < features[{threshold}] ? 1 : 0;\n",
    )


def inline_never(feature_names: Sequence[str] = INLINE_FEATURES_LLVM19) -> str:
    return _inline_source(feature_names, "Never inline (beyond mandatory inlining).",
                          "  return 0;\n")


def inline_always(feature_names: Sequence[str] = INLINE_FEATURES_LLVM19) -> str:
    return _inline_source(feature_names, "Inline every call site the compiler offers.",
                          "  return 1;\n")


INLINE_HEURISTICS: dict[str, Callable[..., str]] = {
    "cost-threshold": inline_cost_threshold,
    "never": inline_never,
    "always": inline_always,
}


# -- regalloc eviction --------------------------------------------------------------------------

def _regalloc_source(features: Sequence[FeatureDecl], doc: str, body: str) -> str:
    mask = _index(features, "mask", "int64_t")
    positions = features[mask][2]
    return (
        f"/* {doc} Generated by mlgo.serving.codegen. */\n"
        + feature_table(features)
        + f"\n/* The last position is the live range being allocated: evicting it means\n"
        f"   evicting nothing. */\nenum {{ NUM_POSITIONS = {positions}, NO_EVICTION = {positions - 1} }};\n"
        "\nint64_t mlgo_regalloc_policy(const void *const *features, size_t num_features) {\n"
        "  (void)num_features;\n"
        f"  const int64_t *mask = (const int64_t *)features[{mask}];\n"
        "  (void)mask;\n"
        f"{body}"
        "}\n"
    )


def regalloc_eviction_proxy(features: Sequence[FeatureDecl] = REGALLOC_FEATURES_LLVM19) -> str:
    """mlgo.problems.regalloc.problem.eviction_cost_proxy in C: among the evictable candidates,
    the lowest `use_def_density` (first one on ties, a NaN wins as in numpy's argmin), taken only
    if lower than the density of the range being allocated or if evicting nothing is masked."""
    density = _index(features, "use_def_density", "float")
    return _regalloc_source(
        features, "Evict the candidate with the lowest spill weight if it is below the new range's.",
        f"  const float *weight = (const float *)features[{density}];\n"
        "  int best = -1;\n"
        "  for (int i = 0; i < NO_EVICTION; ++i) {\n"
        "    if (mask[i] == 0)\n      continue;\n"
        "    if (best < 0) {\n      best = i;\n      continue;\n    }\n"
        "    if (weight[best] != weight[best])  /* a NaN minimum stays the minimum */\n"
        "      continue;\n"
        "    if (weight[i] != weight[i] || weight[i] < weight[best])\n      best = i;\n"
        "  }\n"
        "  if (best < 0)\n    return NO_EVICTION;\n"
        "  if (mask[NO_EVICTION] == 0)  /* LLVM must evict someone here */\n    return best;\n"
        "  return weight[best] < weight[NO_EVICTION] ? best : NO_EVICTION;\n",
    )


def regalloc_never(features: Sequence[FeatureDecl] = REGALLOC_FEATURES_LLVM19) -> str:
    """Evict nothing when allowed, else the last valid candidate (as never_evict in Python)."""
    return _regalloc_source(
        features, "Evict nothing when allowed.",
        "  if (mask[NO_EVICTION] != 0)\n    return NO_EVICTION;\n"
        "  for (int i = NO_EVICTION - 1; i >= 0; --i)\n    if (mask[i] != 0)\n      return i;\n"
        "  return NO_EVICTION;\n",
    )


def regalloc_first_valid(features: Sequence[FeatureDecl] = REGALLOC_FEATURES_LLVM19) -> str:
    return _regalloc_source(
        features, "Evict the first valid candidate.",
        "  for (int i = 0; i < NUM_POSITIONS; ++i)\n    if (mask[i] != 0)\n      return i;\n"
        "  return NO_EVICTION;\n",
    )


REGALLOC_HEURISTICS: dict[str, Callable[..., str]] = {
    "proxy": regalloc_eviction_proxy,
    "never": regalloc_never,
    "first-valid": regalloc_first_valid,
}
