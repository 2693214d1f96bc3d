"""Export a policy as a TensorFlow SavedModel with LLVM's signature.

The serving signature (key `action`, also `serving_default`) takes one input per header
feature, named exactly as in the compiler's header, with the header's dtype and fully static
shape (e.g. `callee_basic_block_count` int64 [1], regalloc `mask` int64 [1, 33]) and returns
the greedy advice under LLVM's name (`inlining_decision` / `index_to_evict`, int64 [1]).
This is what `saved_model_cli aot_compile_cpu --signature_def_key action` (and so an LLVM
release build's embedded model) consumes. A second signature, `logits`, returns the
[1, num_actions] logits for parity tests and sampling.

Both evaluate the network's graph (mlgo/policies/ops.py) with its TensorFlow backend, the same
operations the numpy workers and the generated C run. Weights are a variable holding the flat
parameter vector (frozen to constants by AOT compilation); vocab boundaries are graph constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlgo.policies.network import PolicyNetwork
from mlgo.policies.ops import run_tf
from mlgo_base.files import write_dir

ACTION_SIGNATURE = "action"
LOGITS_SIGNATURE = "logits"


def export_saved_model(network: PolicyNetwork, flat_params: np.ndarray, out_dir: Path | str) -> Path:
    """Write the SavedModel to `out_dir` (replaced if it exists); returns the path."""
    import tensorflow as tf

    out_dir = Path(out_dir)
    network.unflatten_numpy(flat_params)  # refuses a vector of the wrong size
    module = tf.Module()
    module.params = tf.Variable(np.asarray(flat_params, np.float32).reshape(-1), trainable=False,
                                name="params")
    signature = [{f.name: tf.TensorSpec(shape=f.shape, dtype=tf.as_dtype(f.dtype), name=f.name)
                  for f in network.features}]

    # autograph off: the graph's Python only builds operations (no control flow on tensors).
    def outputs(features):
        # LLVM hands over one observation; the graph works on batches of one.
        batch = {name: tf.expand_dims(x, 0) for name, x in features.items()}
        return run_tf(network.graph, batch, network.unflatten_tf(module.params))

    @tf.function(input_signature=signature, autograph=False)
    def action(features):
        decision = outputs(features)[network.advice.name]
        return {network.advice.name: tf.reshape(decision, network.advice.shape)}

    @tf.function(input_signature=signature, autograph=False)
    def logits(features):
        return {"logits": tf.reshape(outputs(features)["logits"], [1, network.num_actions])}

    module.action, module.logits = action, logits
    signatures = {ACTION_SIGNATURE: action.get_concrete_function(),
                  "serving_default": action.get_concrete_function(),
                  LOGITS_SIGNATURE: logits.get_concrete_function()}
    return write_dir(out_dir, lambda tmp: tf.saved_model.save(module, str(tmp), signatures))
