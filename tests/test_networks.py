"""Networks: numpy and TensorFlow compute the same logits, masks hold, vocab and feature
errors are clear, and the numpy side never imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlgo.policies import vocab as V
from mlgo.policies.network import INVALID_LOGIT, FeatureMismatchError
from mlgo.policies.policy import NumpyPolicy, sample_from_logits
from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig
from mlgo.problems.inlining.network import build_network as build_inlining
from mlgo.problems.regalloc.network import RegallocNetwork, RegallocNetworkConfig
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError

# -- the LLVM 19 headers, as the compiler sends them (tests/test_env.py reads them live) ------
INLINING_FEATURES = (
    "sroa_savings sroa_losses load_elimination call_penalty call_argument_setup "
    "load_relative_intrinsic lowered_call_arg_setup indirect_call_penalty jump_table_penalty "
    "case_cluster_penalty switch_default_dest_penalty switch_penalty "
    "unsimplified_common_instructions num_loops dead_blocks simplified_instructions "
    "constant_args constant_offset_ptr_args callsite_cost cold_cc_penalty "
    "last_call_to_static_bonus is_multiple_blocks nested_inlines nested_inline_cost_estimate "
    "threshold callee_basic_block_count callsite_height node_count nr_ctant_params "
    "cost_estimate edge_count caller_users caller_conditionally_executed_blocks "
    "caller_basic_block_count callee_conditionally_executed_blocks callee_users "
    "is_callee_avail_external is_caller_avail_external inlining_default"
).split()
REGALLOC_FEATURES = [
    ("mask", "int64_t"), ("is_free", "int64_t"), ("nr_urgent", "float"),
    ("nr_broken_hints", "float"), ("is_hint", "int64_t"), ("is_local", "int64_t"),
    ("nr_rematerializable", "float"), ("nr_defs_and_uses", "float"),
    ("weighed_reads_by_max", "float"), ("weighed_writes_by_max", "float"),
    ("weighed_read_writes_by_max", "float"), ("weighed_indvars_by_max", "float"),
    ("hint_weights_by_max", "float"), ("start_bb_freq_by_max", "float"),
    ("end_bb_freq_by_max", "float"), ("hottest_bb_freq_by_max", "float"),
    ("liverange_size", "float"), ("use_def_density", "float"), ("max_stage", "int64_t"),
    ("min_stage", "int64_t"),
]
K = 33


def inlining_specs() -> list[TensorSpec]:
    return [TensorSpec(n, "int64_t", (1,)) for n in INLINING_FEATURES]


def regalloc_specs() -> list[TensorSpec]:
    return [TensorSpec(n, t, (1, K)) for n, t in REGALLOC_FEATURES] + [
        TensorSpec("progress", "float", (1,))]


def random_inlining_batch(rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
    """Heavy-tailed counts, some negative (costs and bonuses can be), occasional zeros."""
    out = {}
    for n in INLINING_FEATURES:
        mag = np.exp(rng.uniform(0, 12, size=b)).astype(np.int64)
        sign = np.where(rng.random(b) < 0.2, -1, 1)
        zero = rng.random(b) < 0.2
        out[n] = np.where(zero, 0, sign * mag).reshape(b, 1).astype(np.int64)
    out["inlining_default"] = np.zeros((b, 1), np.int64)
    return out


def random_regalloc_batch(rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
    out = {}
    for n, t in REGALLOC_FEATURES:
        if t == "int64_t":
            v = rng.integers(0, 2 if n.startswith(("is_", "mask")) else 8, size=(b, 1, K))
            out[n] = v.astype(np.int64)
        elif n.endswith("_by_max"):
            out[n] = rng.random((b, 1, K)).astype(np.float32)
        else:
            out[n] = np.exp(rng.uniform(-3, 10, size=(b, 1, K))).astype(np.float32)
    out["mask"][:, 0, K - 1] = 1  # at least one valid position
    out["progress"] = rng.random((b, 1)).astype(np.float32)
    return out


def regalloc_edge_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Random observations with the cases the eviction rules treat apart: evicting nothing
    masked, nothing valid, heavy ranges, ties, NaN weights, broken hints, hints first."""
    batch = random_regalloc_batch(rng, n)
    batch["mask"] = (rng.random(batch["mask"].shape) < 0.3).astype(np.int64)
    batch["mask"][: n // 2, 0, K - 1] = 0  # LLVM must evict someone
    batch["mask"][5] = 0  # nothing valid at all
    batch["use_def_density"][:40, 0, K - 1] = 1e9
    batch["use_def_density"][40:50, 0, :] = 2.0  # ties
    batch["use_def_density"][50:60, 0, rng.integers(0, K, 10)] = np.nan
    batch["nr_broken_hints"] = rng.integers(0, 3, batch["nr_broken_hints"].shape).astype(np.float32)
    batch["nr_broken_hints"][100:150] = 0  # weight alone decides
    # hints lead the allocation order: 0 to 2 of them, first
    batch["is_hint"] = (np.arange(K) < rng.integers(0, 3, (n, 1, 1))).astype(np.int64)
    return batch


def make_vocab(rng: np.random.Generator, n: int = 100) -> dict[str, np.ndarray]:
    data = random_inlining_batch(rng, 2000)
    return {k: np.unique(np.quantile(v.astype(np.float64), np.linspace(0, 1, n + 1)))
            for k, v in data.items() if k != "inlining_default"}


def random_params(net, seed: int, scale: float = 0.3) -> np.ndarray:
    """Larger than init_params' near-zero output layer, so logits differ visibly."""
    return (np.random.default_rng(seed).standard_normal(net.num_params) * scale).astype(np.float32)


def balanced_inlining_params(net: InliningNetwork, seed: int) -> np.ndarray:
    """Random parameters whose output bias is shifted so about half of the random call sites
    are inlined: parity tests then compare decisions that actually vary."""
    params = random_params(net, seed)
    batch = random_inlining_batch(np.random.default_rng(seed + 1000), 500)
    logits = net.logits_numpy(params, batch)
    params[-1] += np.median(logits[:, 0] - logits[:, 1])  # the last parameter: bias of logit 1
    return params


@pytest.fixture(scope="module")
def inl_net() -> InliningNetwork:
    return InliningNetwork(inlining_specs(), InliningNetworkConfig(log_features=True),
                           make_vocab(np.random.default_rng(0)))


@pytest.fixture(scope="module")
def ra_net() -> RegallocNetwork:
    return RegallocNetwork(regalloc_specs())


# -- vocab ----------------------------------------------------------------------------------------
def test_vocab_round_trip_and_missing_feature(tmp_path):
    vocab = make_vocab(np.random.default_rng(1))
    V.save_vocab(tmp_path, vocab)
    loaded = V.load_vocab(tmp_path, list(vocab))
    assert all(np.array_equal(loaded[k], vocab[k]) for k in vocab)
    (tmp_path / "callee_users.buckets").unlink()
    with pytest.raises(V.VocabError, match=r"callee_users") as e:
        build_inlining(inlining_specs(), tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(V.VocabError, match="does not exist"):
        V.load_vocab(tmp_path / "nope", ["x"])


def test_quantile_math_numpy_and_tf():
    import tensorflow as tf

    table = V.QuantileTable([np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0]), np.array([])])
    x = np.array([[0, 0, 5], [1, -1, 5], [2, 0, 5], [4, 7, 5], [2**40, 0, 5]], np.int64)
    want = np.array([[0, 1, 0], [0.25, 0, 0], [0.5, 1, 0], [1, 1, 0], [1, 1, 0]], np.float32)
    for rows in (x[:1], x):  # one row (bisect) and several (searchsorted)
        np.testing.assert_array_equal(table.numpy(rows), want[: len(rows)])
    many = np.repeat(x, 10, axis=0)
    np.testing.assert_array_equal(table.numpy(many), np.repeat(want, 10, axis=0))
    np.testing.assert_array_equal(table.tf(tf.constant(x)).numpy(), want)


# -- numpy vs TensorFlow -------------------------------------------------------------------------
def _edge_inlining_batches() -> list[dict[str, np.ndarray]]:
    zeros = {n: np.zeros((1, 1), np.int64) for n in INLINING_FEATURES}
    huge = {n: np.full((1, 1), 2**40, np.int64) for n in INLINING_FEATURES}
    extreme = {n: np.full((1, 1), np.iinfo(np.int64).max, np.int64) for n in INLINING_FEATURES}
    negative = {n: np.full((1, 1), -(2**31) if i % 2 else -7, np.int64)
                for i, n in enumerate(INLINING_FEATURES)}
    return [zeros, huge, extreme, negative]


def test_inlining_numpy_matches_tf(inl_net):
    rng = np.random.default_rng(2)
    params = random_params(inl_net, 3)
    for batch in [random_inlining_batch(rng, 256), *_edge_inlining_batches()]:
        a = inl_net.logits_numpy(params, batch)
        b = inl_net.logits_tf(params, batch).numpy()
        assert a.shape == (len(batch["threshold"]), 2) and np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_inlining_ignores_inlining_default(inl_net):
    batch = random_inlining_batch(np.random.default_rng(4), 64)
    params = random_params(inl_net, 5)
    flipped = dict(batch, inlining_default=np.ones_like(batch["inlining_default"]))
    np.testing.assert_array_equal(inl_net.logits_numpy(params, batch),
                                  inl_net.logits_numpy(params, flipped))
    assert "inlining_default" not in inl_net.vocab and len(inl_net.inputs) == 38


def test_regalloc_numpy_matches_tf_and_masks(ra_net):
    rng = np.random.default_rng(6)
    params = random_params(ra_net, 7)
    garbage = random_regalloc_batch(rng, 8)
    garbage["use_def_density"][:, 0, :3] = [np.inf, np.nan, -np.inf]
    garbage["liverange_size"][:, 0, 5] = 3.0e38
    garbage["weighed_reads_by_max"][:, 0, 7] = np.nan
    zeros = {k: np.zeros_like(v) for k, v in garbage.items()}
    zeros["mask"][:, 0, K - 1] = 1
    for batch in [random_regalloc_batch(rng, 128), garbage, zeros]:
        a = ra_net.logits_numpy(params, batch)
        b = ra_net.logits_tf(params, batch).numpy()
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        mask = batch["mask"].reshape(-1, K) != 0
        assert np.all(a[~mask] == INVALID_LOGIT) and np.isfinite(a).all()
        assert np.all(a[mask] > INVALID_LOGIT / 2)


def test_regalloc_gradients_finite_despite_garbage(ra_net):
    import tensorflow as tf

    batch = random_regalloc_batch(np.random.default_rng(8), 16)
    batch["nr_urgent"][:, 0, :] = np.nan
    theta = tf.Variable(random_params(ra_net, 9))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(tf.nn.log_softmax(ra_net.logits_tf(theta, batch))[:, K - 1])
    assert np.isfinite(tape.gradient(loss, theta).numpy()).all()


def test_single_observation_is_a_batch_of_one(inl_net, ra_net):
    for net, batch in ((inl_net, random_inlining_batch(np.random.default_rng(10), 1)),
                       (ra_net, random_regalloc_batch(np.random.default_rng(11), 1))):
        params = random_params(net, 12)
        single = {k: v[0] for k, v in batch.items()}  # the header's own shapes
        np.testing.assert_array_equal(net.logits_numpy(params, single),
                                      net.logits_numpy(params, batch))


# -- parameters, config, feature checks ----------------------------------------------------------
def test_param_layout_and_init(inl_net, ra_net):
    for net in (inl_net, ra_net):
        p = net.init_params(3)
        assert p.dtype == np.float32 and p.shape == (net.num_params,)
        np.testing.assert_array_equal(p, net.init_params(3))
        assert not np.array_equal(p, net.init_params(4))
        assert sum(int(np.prod(s)) for _, s in net.param_shapes()) == net.num_params
        with pytest.raises(MlgoError, match="parameters"):
            net.unflatten_numpy(p[:-1])
    # 38 inputs x [q, sqrt q, q^2, log] -> 64 -> 64 -> 2
    assert inl_net.param_shapes()[0] == ("mlp/0/w", (38 * 4, 64))
    assert ra_net.param_shapes()[0] == ("scorer/0/w", (21, 32))
    # a fresh policy is near uniform (small output layer)
    batch = random_inlining_batch(np.random.default_rng(0), 32)
    assert np.abs(np.diff(inl_net.logits_numpy(inl_net.init_params(0), batch))).max() < 0.5


def test_hyperparameters_come_from_gin():
    gin.clear_config()
    try:
        gin.parse_config("regalloc.RegallocNetworkConfig.hidden_sizes = (16,)\n"
                         "regalloc.RegallocNetworkConfig.activation = 'tanh'")
        net = RegallocNetwork(regalloc_specs())
        assert net.config.hidden_sizes == (16,) and net.config.activation == "tanh"
        assert [s for _, s in net.param_shapes()] == [(21, 16), (16,), (16, 1), (1,)]
        # explicit configs (as checkpoints pass them) win over gin bindings
        saved = RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(hidden_sizes=(8,))).config_json()
        del saved["output_scale"]  # written before the field existed: its default, not gin's
        gin.parse_config("regalloc.RegallocNetworkConfig.output_scale = 0.5")
        cfg = RegallocNetwork.from_json(regalloc_specs(), saved, {}, None).config
        assert cfg.hidden_sizes == (8,) and cfg.activation == "tanh" and cfg.output_scale == 0.01
        assert RegallocNetworkConfig(hidden_sizes=(8,)).hidden_sizes == (8,)
    finally:
        gin.clear_config()
    assert RegallocNetworkConfig().hidden_sizes == (32, 32)


def test_feature_mismatch_lists_differences(inl_net, ra_net):
    specs = [s for s in inlining_specs() if s.name != "callee_users"]
    specs.append(TensorSpec("new_feature", "int64_t", (1,)))
    specs[0] = TensorSpec("sroa_savings", "int32_t", (1,))
    with pytest.raises(FeatureMismatchError) as e:
        inl_net.check_features(specs)
    msg = str(e.value)
    assert "missing callee_users" in msg and "new_feature" not in msg  # bound by name
    assert "sroa_savings: expected int64_t [1], got int32_t [1]" in msg
    inl_net.check_features(list(reversed(inlining_specs())))  # order does not matter
    # a compiler without the ignored inlining_default, or with features no input reads, binds
    inl_net.check_features([*inlining_specs()[:-1], TensorSpec("new_feature", "int64_t", (1,))])
    with pytest.raises(FeatureMismatchError, match="lacks feature.*mask"):
        ra_net.logits_numpy(ra_net.init_params(0), {"progress": np.zeros(1)})
    with pytest.raises(FeatureMismatchError, match="no 'mask'"):
        RegallocNetwork(regalloc_specs()[1:])
    with pytest.raises(FeatureMismatchError, match="1 or 33 elements"):
        RegallocNetwork([*regalloc_specs(), TensorSpec("odd", "float", (2,))])


# -- masks are respected by every way of acting --------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(mask_bits=st.lists(st.booleans(), min_size=K, max_size=K).filter(any),
       seed=st.integers(0, 2**31 - 1))
def test_masked_positions_never_chosen(ra_net, mask_bits, seed):
    rng = np.random.default_rng(seed)
    obs = {k: v[0] for k, v in random_regalloc_batch(rng, 1).items()}
    obs["mask"] = np.array(mask_bits, np.int64).reshape(1, K)
    valid = set(np.flatnonzero(mask_bits).tolist())
    params = random_params(ra_net, seed % 1000, scale=1.0)
    assert NumpyPolicy(ra_net, params).act(obs) in valid
    sampler = NumpyPolicy(ra_net, params, greedy=False, seed=seed)
    for _ in range(20):
        assert sampler.act(obs) in valid
        a, logp = sampler.act_sample(obs, rng)
        assert a in valid and np.isfinite(logp) and logp <= 0


def test_sampling_follows_softmax():
    logits = np.array([0.0, np.log(3.0), INVALID_LOGIT, 0.0], np.float32)
    rng = np.random.default_rng(0)
    draws = [sample_from_logits(logits, rng) for _ in range(20000)]
    freq = np.bincount([a for a, _ in draws], minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.2, 0.6, 0.0, 0.2], atol=0.015)
    a, logp = draws[0]
    assert logp == pytest.approx(np.log([0.2, 0.6, 0.0, 0.2][a]), abs=1e-6)


# -- workers stay TensorFlow-free ----------------------------------------------------------------
def test_numpy_side_never_imports_tensorflow(tmp_path, inl_net, ra_net):
    from mlgo.policies.policy_dir import save_policy

    save_policy(tmp_path / "inl", inl_net, inl_net.init_params(0))
    save_policy(tmp_path / "ra", ra_net, ra_net.init_params(0))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from mlgo.policies.loading import numpy_policy
        from mlgo.problems.inlining.network import InliningNetwork
        from mlgo.problems.regalloc.network import RegallocNetwork
        inl = numpy_policy("inlining", {str(tmp_path / 'inl')!r})
        ra = numpy_policy("regalloc", {str(tmp_path / 'ra')!r}, greedy=False)
        names = [f.name for f in inl.network.features]
        print(inl.act({{n: np.zeros(1, np.int64) for n in names}}))
        obs = {{f.name: np.ones(f.shape, f.dtype) for f in ra.network.features}}
        print(ra.act_sample(obs, np.random.default_rng(0)))
        assert "tensorflow" not in sys.modules, "numpy side imported TensorFlow"
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_observations_from_the_compiler_give_the_same_logits(inl_net, ra_net):
    """Features (the protocol's lazy mapping, with its one-call gather) and a plain dict of
    the same arrays are the same input to every network."""
    from mlgo.protocol import Header

    rng = np.random.default_rng(5)
    for net, batch in ((inl_net, random_inlining_batch(rng, 1)), (ra_net, random_regalloc_batch(rng, 1))):
        header = Header(tuple(net.features))
        one = {f.name: batch[f.name].reshape(f.shape).astype(f.dtype) for f in net.features}
        feats = header.decode_observation(b"".join(f.encode(one[f.name]) for f in net.features))
        params = random_params(net, 1)
        np.testing.assert_array_equal(net.logits_numpy(params, feats), net.logits_numpy(params, one))


# -- the residual inlining network: LLVM's rule plus a learned flip ------------------------------
def _residual(log: bool = True, **kw) -> InliningNetwork:
    return InliningNetwork(inlining_specs(), InliningNetworkConfig(log_features=log, residual=True, **kw),
                           make_vocab(np.random.default_rng(0)))


def _rule(batch: dict[str, np.ndarray]) -> list[int]:
    return (batch["cost_estimate"] < batch["threshold"]).astype(int).reshape(-1).tolist()


def test_fresh_residual_network_is_the_cost_threshold_rule():
    from mlgo.policies import builtins

    net = _residual()
    batch = random_inlining_batch(np.random.default_rng(11), 2000)
    batch["threshold"][:100] = batch["cost_estimate"][:100]  # equal: not below, not inlined
    for seed in range(3):
        flat = net.init_params(seed)
        for b in [batch, *_edge_inlining_batches()]:
            greedy = np.argmax(net.logits_numpy(flat, b), axis=1).tolist()
            assert greedy == _rule(b)
            rule = builtins.heuristic("inlining", "cost-threshold")
            assert greedy == [rule({k: v[i] for k, v in b.items()}) for i in range(len(greedy))]
            # and the keep prior makes it a confident rule, also for sampling policies
            p = NumpyPolicy(net, flat, greedy=True)
            assert [p.act({k: v[i] for k, v in b.items()}) for i in range(min(3, len(greedy)))] == greedy[:3]
        probs = np.exp(net.logits_numpy(flat, batch))
        probs /= probs.sum(axis=1, keepdims=True)
        chosen = probs[np.arange(len(probs)), _rule(batch)]
        assert chosen.min() > 0.97


def test_residual_logits_are_the_mlp_outputs_placed_by_the_rule():
    net = _residual(log=False, hidden_sizes=(8,))
    flat = random_params(net, 7)
    batch = random_inlining_batch(np.random.default_rng(3), 300)
    logits = net.logits_numpy(flat, batch)
    np.testing.assert_allclose(logits, net.logits_tf(flat, batch).numpy(), atol=1e-5, rtol=1e-5)
    plain = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(8,)),
                            make_vocab(np.random.default_rng(0)))
    keep_flip = plain.logits_numpy(flat, batch)  # the same MLP: its [keep, flip]
    r = np.array(_rule(batch), bool)
    np.testing.assert_array_equal(logits[r], keep_flip[r][:, ::-1])  # rule inlines: [flip, keep]
    np.testing.assert_array_equal(logits[~r], keep_flip[~r])
    assert r.any() and (~r).any()


def test_flip_margin_takes_only_confident_flips():
    net = _residual()
    flat = random_params(net, 5)
    batch = random_inlining_batch(np.random.default_rng(8), 1000)
    logits = net.logits_numpy(flat, batch)
    rule = np.array(_rule(batch))
    greedy = np.argmax(logits, axis=1)
    flip_lead = np.abs(logits[:, 1] - logits[:, 0])  # by how much the chosen action leads
    assert (greedy != rule).sum() > 50
    margin = float(np.median(flip_lead[greedy != rule]))
    shifted = np.argmax(net.logits_numpy(net.with_flip_margin(flat, margin), batch), axis=1)
    # a flip survives exactly where it led by more than the margin; no new flip appears
    kept = (greedy != rule) & (flip_lead > margin + 1e-4)
    gone = (greedy != rule) & (flip_lead < margin - 1e-4)
    assert (shifted[kept] != rule[kept]).all() and (shifted[gone] == rule[gone]).all()
    assert ((shifted != rule) <= (greedy != rule)).all()
    assert (np.argmax(net.logits_numpy(net.with_flip_margin(flat, 1e4), batch), axis=1)
            == rule).all()
    np.testing.assert_array_equal(flat, random_params(net, 5))  # not changed in place
    with pytest.raises(MlgoError, match="residual"):
        InliningNetwork(inlining_specs(), InliningNetworkConfig(),
                        make_vocab(np.random.default_rng(0))).with_flip_margin(flat, 1.0)


def test_residual_network_needs_the_rules_features():
    with pytest.raises(MlgoError, match="cost_estimate and threshold"):
        InliningNetworkConfig(residual=True, ignored_features=("inlining_default", "threshold"))
    with pytest.raises(MlgoError, match="keep_prior"):
        InliningNetworkConfig(residual=True, keep_prior=-1.0)


def test_margin_policy_directory_records_its_margin_and_own_validation(tmp_path):
    from mlgo.policies.margin import validation_from_report, write_margin_policy
    from mlgo.policies.policy_dir import load_policy, save_policy

    net = _residual(hidden_sizes=(8,))
    flat = random_params(net, 2)
    save_policy(tmp_path / "best", net, flat, {"validation": {"relative_change": -0.5}})
    write_margin_policy(tmp_path / "best", tmp_path / "m2", 2.0)
    net2, params, meta = load_policy(tmp_path / "m2")
    np.testing.assert_array_equal(params, net.with_flip_margin(flat, 2.0))
    # the unshifted parameters' validation figure is not carried over to the shifted ones
    assert meta["flip_margin"] == 2.0 and "validation" not in meta and net2.config.residual
    report = {"problem": "inlining", "policy_total": 99.0, "default_total": 100.0,
              "relative_change": -0.01, "modules": [{}, {}], "failures": []}
    write_margin_policy(tmp_path / "best", tmp_path / "m2", 2.0,
                        validation_from_report(report, "r", "inlining"))
    assert load_policy(tmp_path / "m2")[2]["validation"] == {
        "policy_total": 99.0, "default_total": 100.0, "relative_change": -0.01, "modules": 2,
        "failed": 0}
    with pytest.raises(MlgoError, match="r.json: not an `mlgo eval --problem inlining"):
        validation_from_report({**report, "problem": "regalloc"}, "r.json", "inlining")


# -- the residual regalloc network: default-rule plus learned per-candidate scores ---------------
def _ra_residual(**kw) -> RegallocNetwork:
    return RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(residual=True, **kw))


def _default_rule_of(batch: dict[str, np.ndarray]) -> list[int]:
    from mlgo.policies import builtins

    rule = builtins.heuristic("regalloc", "default-rule")
    n = len(batch["mask"])
    return [rule({k: v[i] for k, v in batch.items()}) for i in range(n)]


def test_fresh_residual_regalloc_network_is_the_default_rule():
    net = _ra_residual()
    batches = [regalloc_edge_batch(np.random.default_rng(s), 300) for s in range(3)]
    batches.append(random_regalloc_batch(np.random.default_rng(4), 300))
    for seed in range(3):
        flat = net.init_params(seed)
        for b in batches:
            logits = net.logits_numpy(flat, b)
            want = _default_rule_of(b)
            assert np.argmax(logits, axis=1).tolist() == want
            assert np.argmax(net.logits_tf(flat, b).numpy(), axis=1).tolist() == want
            # the rule's candidate leads every other valid one by the whole anchor
            lead = logits[np.arange(len(want)), want] - np.where(
                np.eye(K, dtype=bool)[want], INVALID_LOGIT, logits).max(axis=1)
            assert lead.min() >= 4.0 - 1e-5
    # the rule evicts nothing where nothing is valid: the network does too (batch row 5)
    assert _default_rule_of(batches[0])[5] == K - 1


def test_residual_regalloc_logits_are_the_scores_plus_the_anchor_on_the_rule():
    net = _ra_residual(hidden_sizes=(8,))
    plain = RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(hidden_sizes=(8,)))
    assert net.num_params == plain.num_params + 2  # the anchor layer: w [1, 1], b [1]
    flat = random_params(net, 7, scale=1.0)
    flat[-2:] = [3.0, 0.25]  # anchor 3, bias 0.25 (the same on every candidate)
    batch = regalloc_edge_batch(np.random.default_rng(3), 300)
    logits = net.logits_numpy(flat, batch)
    np.testing.assert_allclose(logits, net.logits_tf(flat, batch).numpy(), atol=1e-5, rtol=1e-5)
    scores = plain.logits_numpy(flat[:-2], batch)  # the same scorer, masked by the mask alone
    rule = np.eye(K, dtype=bool)[_default_rule_of(batch)]
    mask = batch["mask"].reshape(-1, K) != 0
    np.testing.assert_allclose(logits[mask], (scores + 0.25 + 3.0 * rule)[mask], rtol=1e-5, atol=1e-5)
    # the rule's position is valid even where the mask says no (evicting nothing where
    # nothing is eligible), and no other masked position is
    valid = rule | mask
    assert (rule & ~mask).any() and (logits[rule & ~mask] > -1e3).all()
    assert (logits[~valid] == INVALID_LOGIT).all()
    # some rule choices are masked positions (evicting nothing where nothing is eligible)
    assert (rule & (batch["mask"].reshape(-1, K) == 0)).any()
    assert (np.argmax(logits, axis=1) != np.argmax(rule, axis=1)).any()


def test_regalloc_flip_margin_takes_only_confident_flips():
    net = _ra_residual()
    flat = random_params(net, 5, scale=1.0)
    flat[-2:] = [1.0, 0.0]
    batch = regalloc_edge_batch(np.random.default_rng(8), 1000)
    logits = net.logits_numpy(flat, batch)
    rule = np.array(_default_rule_of(batch))
    greedy = np.argmax(logits, axis=1)
    flips = greedy != rule
    lead = logits.max(axis=1) - logits[np.arange(len(rule)), rule]  # the flip's lead over the rule
    assert flips.sum() > 50
    margin = float(np.median(lead[flips]))
    shifted = np.argmax(net.logits_numpy(net.with_flip_margin(flat, margin), batch), axis=1)
    kept, gone = flips & (lead > margin + 1e-4), flips & (lead < margin - 1e-4)
    assert (shifted[kept] == greedy[kept]).all() and (shifted[gone] == rule[gone]).all()
    assert ((shifted != rule) <= flips).all()  # no new flip appears
    assert (np.argmax(net.logits_numpy(net.with_flip_margin(flat, 1e4), batch), axis=1) == rule).all()
    np.testing.assert_array_equal(flat[:-2], random_params(net, 5, scale=1.0)[:-2])  # not in place
    with pytest.raises(MlgoError, match="residual regalloc network only"):
        RegallocNetwork(regalloc_specs()).with_flip_margin(flat[:-2], 1.0)


def test_residual_regalloc_network_needs_the_rules_features():
    specs = [s for s in regalloc_specs() if s.name != "nr_broken_hints"]
    RegallocNetwork(specs)  # a plain network reads whatever the header offers
    with pytest.raises(FeatureMismatchError, match="nr_broken_hints"):
        RegallocNetwork(specs, RegallocNetworkConfig(residual=True))
    with pytest.raises(MlgoError, match="anchor_prior"):
        RegallocNetworkConfig(residual=True, anchor_prior=0.0)


def test_regalloc_margin_policy_directory_raises_the_anchor(tmp_path):
    from mlgo.policies.margin import validation_from_report, write_margin_policy
    from mlgo.policies.policy_dir import load_policy, save_policy

    net = _ra_residual(hidden_sizes=(8,))
    flat = random_params(net, 2)
    save_policy(tmp_path / "best", net, flat, {"validation": {"relative_change": -0.5}})
    report = {"problem": "regalloc", "policy_total": 99.0, "default_total": 100.0,
              "relative_change": -0.01, "modules": [{}], "failures": []}
    write_margin_policy(tmp_path / "best", tmp_path / "m3", 3.0,
                        validation_from_report(report, "r", "regalloc"))
    net2, params, meta = load_policy(tmp_path / "m3", problem="regalloc")
    assert net2.config.residual and meta["flip_margin"] == 3.0
    assert meta["validation"]["relative_change"] == -0.01
    np.testing.assert_array_equal(params[:-2], flat[:-2])
    assert params[-2] == np.float32(flat[-2] + 3.0) and params[-1] == flat[-1]  # anchor w, not b
