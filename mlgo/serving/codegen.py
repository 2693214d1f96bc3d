"""C sources for policies, in the ABI that the inliner plugin and the regalloc host link against.

Every policy source defines, with C linkage, its inputs as LLVM's release-mode model runner
sees a compiled model's (by name; the element type and count of each):

    const char *const mlgo_policy_feature_names[];
    const char *const mlgo_policy_feature_types[];    // "int64_t", "float", ... as in the header
    const size_t mlgo_policy_feature_elements[];      // element count of each tensor
    const size_t mlgo_policy_num_features;
    const char mlgo_policy_output_name[];             // the advice: LLVM's name for the output

    // inputs[j] points at the elements of input j (in the order above); returns the decision
    int64_t mlgo_policy_run(const void *const *inputs);
    void mlgo_policy_eval(const void *const *inputs, void *output);  // the same, into *output

and one of these two, the same function with the arguments as each consumer holds them:

    // inlining: every input is one int64, features[j] is input j; returns 0 or 1
    int64_t mlgo_inline_policy(const int64_t *features, size_t num_features);
    // regalloc: one pointer per input (int64_t* or float* per its type); returns the position
    // to evict among those whose mask is 1
    int64_t mlgo_regalloc_policy(const void *const *features, size_t num_features);

A consumer binds each input to the compiler's feature of the same name at start-up and refuses
to run when one is missing or has another type or count (mlgo/serving/policy_binding.h); the
compiler's other features are ignored. The inliner plugin and mlgo-clang both do so. The function body is generated from the policy's graph
(mlgo/policies/ops.py), the built-in heuristics' from mlgo/policies/builtins.py.

This module is imported on the compiler wrapper's per-compile path: nothing heavy (numpy, the
policy code) is imported until a source is generated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

ADVICE = {"inlining": "inlining_decision", "regalloc": "index_to_evict"}

# (name, type, element count) as stock LLVM 19 sends them: the inputs the built-in heuristics
# declare; tests check these against the compiler's own header.
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


def feature_table(features: Sequence[FeatureDecl]) -> str:
    """The C definitions of the input declaration arrays (shared by every policy source)."""
    for name, _, count in features:
        if not name.isidentifier() or count <= 0:
            raise ValueError(f"input {name!r} x{count}: not an identifier with elements")
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


def policy_source(graph: Any, params: Any, problem: str, doc: str) -> str:
    """The C of a policy graph (mlgo/policies/ops.py) with `params` (name -> array) baked in."""
    from mlgo.policies.ops import c_function

    out = graph.nodes[graph.outputs[ADVICE[problem]]]
    if (out.dtype, out.shape) != ("i64", (1, 1)):
        raise ValueError(f"the policy's {ADVICE[problem]} is {out.dtype} {list(out.shape)}, not one int64")
    inputs = [(i.name, i.type, i.elements) for i in graph.inputs]
    n = max(len(inputs), 1)
    if problem == "inlining":
        odd = [f"{name} ({t} x{c})" for name, t, c in inputs if (t, c) != ("int64_t", 1)]
        if odd:
            raise ValueError(f"the C inliner ABI passes one int64 per input; not so: {', '.join(odd)}")
        entry = ("int64_t mlgo_inline_policy(const int64_t *features, size_t num_features) {\n"
                 f"  const void *in[{n}] = {{0}};\n  (void)num_features;\n"
                 f"  for (size_t i = 0; i < {len(inputs)}; ++i)\n    in[i] = &features[i];\n"
                 "  return mlgo_policy_run(in);\n}\n")
    elif problem == "regalloc":
        entry = ("int64_t mlgo_regalloc_policy(const void *const *features, size_t num_features) {\n"
                 "  (void)num_features;\n  return mlgo_policy_run(features);\n}\n")
    else:
        raise ValueError(f"no C ABI for problem {problem!r}")
    return (f"/* {doc} Generated by mlgo.serving.codegen. */\n" + feature_table(inputs)
            + f'const char mlgo_policy_output_name[] = "{ADVICE[problem]}";\n\n'
            + c_function(graph, params, "mlgo_policy_eval", ADVICE[problem])
            + "\nint64_t mlgo_policy_run(const void *const *inputs) {\n  int64_t decision = 0;\n"
            "  mlgo_policy_eval(inputs, &decision);\n  return decision;\n}\n\n" + entry)


def heuristic_source(problem: str, name: str, features: Sequence[Any] | None = None) -> str:
    """The C of a built-in heuristic declaring `features` (default: LLVM 19's) as inputs."""
    from mlgo.policies import builtins

    return policy_source(builtins.graph(problem, name, features), {}, problem,
                         f"The built-in {problem} heuristic {name}.")


# The names of the built-in heuristics (mlgo/policies/builtins.py defines them).
INLINE_HEURISTICS: dict[str, Callable[..., str]] = {
    name: functools.partial(heuristic_source, "inlining", name)
    for name in ("cost-threshold", "never", "always")}
REGALLOC_HEURISTICS: dict[str, Callable[..., str]] = {
    name: functools.partial(heuristic_source, "regalloc", name)
    for name in ("proxy", "default-rule", "never", "first-valid")}
inline_cost_threshold = INLINE_HEURISTICS["cost-threshold"]
regalloc_eviction_proxy = REGALLOC_HEURISTICS["proxy"]
