"""Policies: every policy (the networks and the built-in heuristics) is a composition of the
operations in `ops`, which run in numpy, TensorFlow and C alike; networks are functions of a
flat parameter vector; the Policy seam serves decisions; policy directories and SavedModels.

Import submodules directly; nothing here imports TensorFlow at module level:
    mlgo.policies.ops          Graph, the operations and their numpy, TensorFlow and C backends
    mlgo.policies.builtins     the built-in heuristics (cost-threshold, proxy, ...) as graphs
    mlgo.policies.network      PolicyNetwork, MLP, INVALID_LOGIT, FeatureMismatchError
    mlgo.policies.vocab        quantile boundaries (<feature>.buckets) and normalization
    mlgo.policies.policy       Policy, NumpyPolicy, SavedModelPolicy
    mlgo.policies.policy_dir   save_policy, load_policy
    mlgo.policies.loading      numpy_policy (for workers)
    mlgo.policies.saved_model  export_saved_model
    mlgo.policies.c_source     policies as C in the serving binaries' ABI (graphs, heuristics,
                               policy directories)
"""
