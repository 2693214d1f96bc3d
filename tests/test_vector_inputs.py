"""Vector inputs (LLVM 22's callee_embedding and caller_embedding, float [D]) in the inlining
network: numpy, TensorFlow and the generated C compute the same logits and decisions, a fresh
residual network is still the rule, the embeddings are read, a policy directory keeps them, and
a scalar-only policy builds and decides as it did before vectors existed."""

from __future__ import annotations

import numpy as np
import pytest
from test_networks import inlining_specs, make_vocab, random_inlining_batch, random_params
from test_ops import CC, all_backends, c_backend

from mlgo.policies import ops
from mlgo.policies import vocab as V
from mlgo.policies.c_source import graph_c_source
from mlgo.policies.policy_dir import load_policy, save_policy
from mlgo.policies.shipped import resolve, shipped_names
from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig, build_network
from mlgo.protocol.llvm22 import EMBEDDING_FEATURES
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

D = 6
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def embedding_specs(dim: int = D) -> list[TensorSpec]:
    """LLVM 22's inliner header with an IR2Vec vocabulary: the scalars, then the embeddings."""
    return inlining_specs() + [TensorSpec(n, "float", (dim,)) for n in EMBEDDING_FEATURES]


def embedding_batch(rng: np.random.Generator, b: int, dim: int = D) -> dict[str, np.ndarray]:
    """Scalars as in test_networks; embeddings as IR2Vec's: sums over a function's
    instructions, so their magnitude grows with its size (a heavy tail), some of either sign."""
    batch = random_inlining_batch(rng, b)
    for name in EMBEDDING_FEATURES:
        size = np.exp(rng.uniform(0, 6, (b, 1)))
        batch[name] = (rng.standard_normal((b, dim)) * size).astype(np.float32)
    batch[EMBEDDING_FEATURES[0]][0, :3] = [np.inf, -np.inf, 3e38]
    batch[EMBEDDING_FEATURES[1]][1, :] = 0.0
    batch[EMBEDDING_FEATURES[1]][2, :2] = [np.nan, -3e38]
    return batch


def embedding_vocab(rng: np.random.Generator, dim: int = D) -> dict[str, np.ndarray]:
    """The scalars' vocab plus, per vector, one boundary list per component (as `mlgo vocab`
    builds it from a trace)."""
    vocab = make_vocab(rng)
    sample = embedding_batch(rng, 500, dim)
    for name in EMBEDDING_FEATURES:
        vocab.update(V.feature_boundaries(name, dim, sample[name][3:], 50))
    return vocab


def embedding_net(**config) -> InliningNetwork:
    return InliningNetwork(embedding_specs(), InliningNetworkConfig(hidden_sizes=(16, 8), **config),
                           embedding_vocab(np.random.default_rng(0)))


def balanced_params(net: InliningNetwork, seed: int) -> np.ndarray:
    """Random parameters whose output biases are shifted so about half of the random call sites
    go each way (the decisions compared then vary)."""
    flat = random_params(net, seed)
    logits = net.logits_numpy(flat, embedding_batch(np.random.default_rng(seed + 1000), 500))
    lead = np.nanmedian(logits[:, 0] - logits[:, 1])
    if net.config.residual:  # the MLP's [keep, flip]: the rule places them, so shift the keep
        lead = np.nanmedian(np.abs(logits[:, 0] - logits[:, 1]))
        flat[net.flip_margin_position()] -= lead
    else:
        flat[-1] += lead  # the bias of logit 1
    return flat


@needs_cc
def test_concat_agrees_in_numpy_tensorflow_and_c(tmp_path):
    g = ops.Graph([("s", "int64_t", 1), ("v", "float", 4), ("m", "int64_t", 3)])
    row = g.stack(["s"], rows=1)
    column = g.stack(["v"], rows=4)
    pair = g.interleave(column, g.apply("mul", column, column))
    g.outputs["joined"] = g.concat(row, pair, g.const(-2.5, "f64"))
    g.outputs["ints"] = g.concat(g.input("m"), g.const(7), g.input("s"))
    rng = np.random.default_rng(3)
    batch = {"s": rng.integers(-9, 9, (20, 1)), "v": rng.standard_normal((20, 4)).astype(np.float32),
             "m": rng.integers(-9, 9, (20, 3))}
    got_np, got_tf, got_c = all_backends(g, {}, batch, tmp_path)
    v = batch["v"].astype(np.float64)
    want = np.concatenate([batch["s"], np.stack([v, v * v], axis=-1).reshape(20, 8),
                           np.full((20, 1), -2.5)], axis=1).reshape(20, 1, 10)
    want_ints = np.concatenate([batch["m"], np.full((20, 1), 7), batch["s"]], axis=1).reshape(20, 1, 5)
    for got in (got_np, got_tf, got_c):
        np.testing.assert_array_equal(got["joined"], want)
        np.testing.assert_array_equal(got["ints"], want_ints)
    with pytest.raises(MlgoError, match="concat: operands of one dtype"):
        g.concat(row, g.input("m"))


@needs_cc
@pytest.mark.parametrize("config", [{}, {"log_features": True, "activation": "tanh"},
                                    {"log_features": True, "residual": True}],
                         ids=["relu", "tanh-log", "residual"])
def test_embedding_network_agrees_in_numpy_tensorflow_and_c(config, tmp_path):
    net = embedding_net(**config)
    per_column = 4 if config.get("log_features") else 3
    assert net.mlp.sizes[0] == (38 + 2 * D) * per_column
    flat = balanced_params(net, 3)
    batch = embedding_batch(np.random.default_rng(9), 200)
    params = net.unflatten_numpy(flat)
    got_np, got_tf, got_c = all_backends(net.graph, params, batch, tmp_path)
    advice = net.advice.name
    decisions = got_np[advice].reshape(-1)
    np.testing.assert_array_equal(got_c["logits"], got_np["logits"])  # bit for bit
    assert np.isfinite(got_np["logits"]).all()  # NaN and infinite components too
    np.testing.assert_allclose(got_tf["logits"], got_np["logits"], rtol=1e-6, atol=1e-6)
    assert got_c[advice].reshape(-1).tolist() == decisions.tolist()
    assert got_tf[advice].reshape(-1).tolist() == decisions.tolist()
    assert decisions.tolist() == np.argmax(net.logits_numpy(flat, batch), axis=1).tolist()
    np.testing.assert_allclose(net.logits_tf(flat, batch).numpy(), net.logits_numpy(flat, batch),
                               rtol=1e-5, atol=1e-5)
    assert len(set(decisions.tolist())) > 1


def test_the_embeddings_are_read():
    net = embedding_net()
    flat = random_params(net, 4)
    batch = embedding_batch(np.random.default_rng(5), 300)
    logits = net.logits_numpy(flat, batch)
    for name in EMBEDDING_FEATURES:
        other = dict(batch, **{name: batch[name][::-1].copy()})
        changed = np.abs(net.logits_numpy(flat, other) - logits).max(axis=1) > 1e-6
        assert changed.mean() > 0.5, name
    # one component alone moves the logits too (each is its own input, not a pooled summary)
    one = dict(batch, **{EMBEDDING_FEATURES[0]: batch[EMBEDDING_FEATURES[0]].copy()})
    one[EMBEDDING_FEATURES[0]][:, D - 1] *= -3
    assert (np.abs(net.logits_numpy(flat, one) - logits).max(axis=1) > 1e-6).mean() > 0.3


def test_fresh_residual_embedding_network_is_the_rule():
    net = embedding_net(residual=True, log_features=True)
    batch = embedding_batch(np.random.default_rng(11), 2000)
    batch["threshold"][:100] = batch["cost_estimate"][:100]  # equal: not below, not inlined
    rule = (batch["cost_estimate"] < batch["threshold"]).astype(int).reshape(-1)
    for seed in range(3):
        logits = net.logits_numpy(net.init_params(seed), batch)
        assert np.isfinite(logits).all()
        np.testing.assert_array_equal(np.argmax(logits, axis=1), rule)


def test_policy_directory_keeps_an_embedding_network(tmp_path):
    net = embedding_net(residual=True)
    flat = random_params(net, 6)
    save_policy(tmp_path / "p", net, flat, {})
    loaded, params, _ = load_policy(tmp_path / "p", problem="inlining")
    assert [(f.name, f.type, f.shape) for f in loaded.inputs] == [
        (f.name, f.type, f.shape) for f in net.inputs]
    batch = embedding_batch(np.random.default_rng(2), 100)
    np.testing.assert_array_equal(loaded.logits_numpy(params, batch), net.logits_numpy(flat, batch))
    # the inliner plugin's ABI holds one int64 per feature: a clear refusal, naming the inputs
    with pytest.raises(MlgoError, match=r"callee_embedding \(float x6\).*inliner plugin"):
        graph_c_source(loaded.graph, loaded.unflatten_numpy(params), "inlining", "test")


def _scalar_reference(net: InliningNetwork, flat: np.ndarray, batch: dict) -> np.ndarray:
    """The scalar network of the module docstring, computed here without the graph: the
    quantile columns of each feature side by side, then the MLP."""
    cols = []
    for f in net.inputs:
        x = np.asarray(batch[f.name], np.float64).reshape(-1)
        b = net.vocab[f.name]
        q = (np.searchsorted(b, x, side="right") / max(len(b), 1)).astype(np.float32)
        parts = [q, np.sqrt(q), q * q]
        if net.config.log_features:
            parts.append((np.sign(x) * np.log1p(np.abs(x))).astype(np.float32))
        cols.append(np.stack(parts, axis=1))
    h = np.concatenate(cols, axis=1)
    p = net.unflatten_numpy(flat)
    layers = len(net.mlp.sizes) - 1
    for i in range(layers):
        h = (h.astype(np.float64) @ p[f"mlp/{i}/w"].astype(np.float64) + p[f"mlp/{i}/b"]).astype(np.float32)
        if i < layers - 1:
            h = np.maximum(h, 0) if net.config.activation == "relu" else np.tanh(h.astype(np.float64)).astype(np.float32)
    if net.config.residual:
        r = (np.asarray(batch["cost_estimate"]) < np.asarray(batch["threshold"])).reshape(-1)
        h = np.where(r[:, None], h[:, ::-1], h)
    return h


@pytest.mark.parametrize("name", [n for n in shipped_names() if load_policy(resolve(n))[0].problem == "inlining"])
def test_scalar_policy_builds_and_decides_as_before(name):
    net, flat, _ = load_policy(resolve(name))
    assert all(f.num_elements == 1 for f in net.inputs)
    assert "concat" not in {n.op for n in net.graph.nodes}  # the graph of before
    batch = random_inlining_batch(np.random.default_rng(7), 400)
    logits = net.logits_numpy(flat, batch)
    np.testing.assert_allclose(logits, _scalar_reference(net, flat, batch), rtol=1e-6, atol=1e-6)
    # offered LLVM 22's embeddings too, it binds and decides the same: it does not read them
    net.check_features(embedding_specs(64))
    more = dict(batch, **{n: np.ones((400, 64), np.float32) for n in EMBEDDING_FEATURES})
    np.testing.assert_array_equal(net.logits_numpy(flat, more), logits)


def test_ignored_embeddings_give_the_scalar_network():
    vocab = embedding_vocab(np.random.default_rng(0))
    ignored = ("inlining_default", *EMBEDDING_FEATURES)
    with_vectors = InliningNetwork(embedding_specs(), InliningNetworkConfig(
        hidden_sizes=(16, 8), ignored_features=ignored), vocab)
    scalars = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(16, 8)), vocab)
    assert with_vectors.num_params == scalars.num_params
    flat = random_params(scalars, 1)
    batch = embedding_batch(np.random.default_rng(1), 300)
    np.testing.assert_array_equal(with_vectors.logits_numpy(flat, batch), scalars.logits_numpy(flat, batch))
    np.testing.assert_array_equal(scalars.logits_numpy(flat, batch), _scalar_reference(scalars, flat, batch))


@needs_cc
def test_c_of_an_embedding_network_decides_one_call_site_at_a_time(tmp_path):
    """The C's mlgo_policy_eval reads each input through its own pointer (a float* of D
    elements for an embedding), as a release-mode model runner passes them."""
    net = embedding_net(log_features=True)
    flat = random_params(net, 8)
    batch = embedding_batch(np.random.default_rng(4), 60)
    decide = c_backend(net.graph, net.unflatten_numpy(flat), [net.advice.name], tmp_path)
    want = np.argmax(net.logits_numpy(flat, batch), axis=1)
    assert decide(batch)[net.advice.name].reshape(-1).tolist() == want.tolist()


def test_each_component_has_its_own_boundaries(tmp_path):
    """Components of different scales each spread over [0, 1]: one list for all of them would
    map the narrow one into a few middle buckets."""
    rng = np.random.default_rng(12)
    values = rng.standard_normal((1000, 2)) * [0.01, 100.0]
    vocab = V.feature_boundaries("v", 2, values, 100)
    assert sorted(vocab) == ["v.0", "v.1"] and V.vocab_names("s", 1) == ["s"]
    for c in range(2):
        q = np.searchsorted(vocab[f"v.{c}"], values[:, c], side="right") / len(vocab[f"v.{c}"])
        assert np.quantile(q, 0.1) < 0.15 and np.quantile(q, 0.9) > 0.85
    # a vocab directory without the components' lists (one built before them): a clear error
    full = embedding_vocab(np.random.default_rng(0))
    V.save_vocab(tmp_path, {k: v for k, v in full.items() if not k.startswith("caller_embedding.")}
                 | {"caller_embedding": np.arange(5.0)})
    with pytest.raises(V.VocabError, match=r"caller_embedding\.0.*rebuild it with `mlgo vocab`"):
        build_network(embedding_specs(), tmp_path, InliningNetworkConfig())
    with pytest.raises(V.VocabError, match=r"v\.0, .*, v\.7 \.\.\. \(64 in all\)") as e:
        V.load_vocab(tmp_path, V.vocab_names("v", 64))
    assert "v.8," not in str(e.value)  # one readable line, not every component's name


def test_mlgo_vocab_builds_each_components_list_from_a_trace(tmp_path):
    """A trace with a vector feature (as clang-22 records the embeddings) gives one boundary
    list per component, and the network built on that vocab directory reads them."""
    from mlgo.protocol.training_log import Header
    from mlgo.traces import TraceWriter, build_vocab
    from mlgo.workers.tasks import ModuleOutcome

    specs = embedding_specs()
    rng = np.random.default_rng(13)
    writer = TraceWriter(tmp_path / "trace", Header(tuple(specs)), {"problem": "inlining"})
    modules = []
    for m in range(3):
        batch = {k: v[3:] for k, v in embedding_batch(rng, 43).items()}
        batch[EMBEDDING_FEATURES[0]][:, 1] *= 1000.0  # one component on another scale
        modules.append(batch)
        writer.add(ModuleOutcome(f"m{m}.c", True, features=batch, actions=np.zeros(40, np.int64)))
    writer.close({})
    counts = build_vocab(tmp_path / "trace", tmp_path / "vocab", 20)
    assert "callee_embedding" not in counts and counts["callee_embedding.1"] == 21
    for c in (0, 1):
        values = np.concatenate([b[EMBEDDING_FEATURES[0]][:, c] for b in modules]).astype(np.float64)
        got = V.load_vocab(tmp_path / "vocab", [f"callee_embedding.{c}"])[f"callee_embedding.{c}"]
        np.testing.assert_array_equal(got, V.quantile_boundaries(values, 20))
    net = build_network(embedding_specs(), tmp_path / "vocab", InliningNetworkConfig())
    assert net.mlp.sizes[0] == (38 + 2 * D) * 3
