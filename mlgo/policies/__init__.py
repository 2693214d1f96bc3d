"""Policies: networks as functions of a flat parameter vector (numpy and TensorFlow twins),
the Policy seam that serves decisions, the policy directory format, and SavedModel export.

Import submodules directly; nothing here imports TensorFlow at module level:
    mlgo.policies.network      PolicyNetwork, MLP, INVALID_LOGIT, FeatureMismatchError
    mlgo.policies.vocab        quantile boundaries (<feature>.buckets) and normalization
    mlgo.policies.policy       Policy, NumpyPolicy, SavedModelPolicy
    mlgo.policies.policy_dir   save_policy, load_policy
    mlgo.policies.loading      numpy_policy (for workers)
    mlgo.policies.saved_model  export_saved_model
"""
