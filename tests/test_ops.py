"""The policy operations (mlgo/policies/ops.py) and every policy composed of them compute the
same thing in numpy, TensorFlow and generated C: each operation on edge values (NaN, +-inf,
huge integers), the built-in heuristics against the rules they replace, the networks, and the
shipped policies."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_networks import (
    K,
    inlining_specs,
    make_vocab,
    random_inlining_batch,
    random_params,
    regalloc_edge_batch,
    regalloc_specs,
)

from mlgo.policies import builtins, ops
from mlgo.policies.policy_dir import load_policy
from mlgo.policies.shipped import resolve, shipped_names
from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig
from mlgo.problems.regalloc.network import RegallocNetwork, RegallocNetworkConfig
from mlgo.protocol import llvm19
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

CC = shutil.which(f"clang-{toolchain.llvm_major()}") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")


def c_backend(graph: ops.Graph, params: dict, outputs: list[str], tmp: Path):
    """batch -> {output: [B, rows, cols]} computed by the graph's generated C, one observation
    per call."""
    libs = []
    for i, output in enumerate(outputs):  # one library per output: each defines its own tables
        so = tmp / f"graph{len(list(tmp.glob('*.so')))}.so"
        so.with_suffix(".c").write_text(ops.c_function(graph, params, f"eval_{i}", output))
        r = subprocess.run([CC, "-O2", "-fPIC", "-shared", "-Wall", "-Werror",
                            str(so.with_suffix(".c")), "-o", str(so), "-lm"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        libs.append(getattr(ctypes.CDLL(str(so)), f"eval_{i}"))

    def run(batch: dict) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values())))
        result = {}
        for i, name in enumerate(outputs):
            node = graph.nodes[graph.outputs[name]]
            out = np.zeros((n, *node.shape), ops.NP_TYPES[node.dtype])
            for b in range(n):
                arrays = [np.ascontiguousarray(np.asarray(batch[x.name][b]).reshape(-1),
                                               ops.NP_TYPES[ops.INPUT_DTYPES[x.type]])
                          for x in graph.inputs]
                ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
                row = np.zeros(node.size, ops.NP_TYPES[node.dtype])
                libs[i](ptrs, ctypes.c_void_p(row.ctypes.data))
                out[b] = row.reshape(node.shape)
            result[name] = out
        return result

    return run


def all_backends(graph, params, batch, tmp) -> tuple[dict, dict, dict]:
    import tensorflow as tf

    outputs = list(graph.outputs)
    got_np = ops.run_numpy(graph, batch, params)
    tf_params = {k: tf.constant(np.asarray(v, np.float32)) for k, v in params.items()}
    got_tf = {k: v.numpy() for k, v in ops.run_tf(graph, batch, tf_params).items()}
    got_c = c_backend(graph, params, outputs, tmp)(batch)
    return got_np, got_tf, got_c


def edge_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    f = rng.standard_normal((n, 8)).astype(np.float32) * 10
    f[0, :4] = [np.nan, np.inf, -np.inf, 3.0e38]
    f[1, :] = 5.0  # ties everywhere
    f[2, 3] = np.nan
    m = (rng.random((n, 8)) < 0.5).astype(np.int64)
    m[:3, :] = 1
    m[3, :] = 0  # nothing allowed: the defaults
    a = rng.integers(-50, 50, (n, 1))
    a[4, 0] = np.iinfo(np.int64).max
    return {"a": a.astype(np.int64), "b": rng.integers(-50, 50, (n, 1)).astype(np.int64),
            "f": f, "m": m, "g": rng.random((n, 1)).astype(np.float32)}


def test_every_operation_agrees_in_numpy_tensorflow_and_c(tmp_path):
    g = ops.Graph([("a", "int64_t", 1), ("b", "int64_t", 1), ("f", "float", 8), ("m", "int64_t", 8),
                   ("g", "float", 1)])
    f, m = g.input("f"), g.input("m")
    x = g.stack(["f", "g", "m"], rows=8)
    y = g.apply("clip", g.apply("nan_to_zero", x), lo=-1e30, hi=1e30)
    z = g.apply("cast_f32", g.apply("clip", g.apply("slog", y, cols=(True, False, True)), lo=-5, hi=5))
    q = g.quantile(g.stack(["a", "b"], rows=1), [np.array([-10.0, 0.0, 0.0, 7.0]), np.array([])])
    mixed = g.interleave(q, g.apply("sqrt", q), g.apply("mul", q, q))
    hidden = g.apply("relu", g.dense(mixed, "w1", "b1", 4))
    scores = g.apply("tanh", g.dense(z, "w2", "b2", 3))
    best = g.index(f, "min", m, default=7, stop=7)
    outputs = {
        "stack": x, "clean": y, "squashed": z, "quantile": q, "interleaved": mixed, "hidden": hidden,
        "scores": scores, "argmax": g.index(scores, "max"), "argmax_f": g.index(f, "max"),
        "argmin": best, "first": g.index(m, "first", m, default=3),
        "last": g.index(m, "last", m, default=5), "take": g.take(f, best),
        "less": g.apply("less", g.input("a"), g.input("b")),
        "where": g.apply("where", g.take(m, best), best, g.const(-1)),
        "masked": g.apply("where", m, f, g.const(-1e9, "f32")),
        "iota": g.iota(8), "sum_f": g.apply("add", f, g.apply("cast_f32", m)),
        # the position of `best` as a 0/1 column, from iota and index's position
        "at_best": g.apply("less", g.iota(8), g.apply("add", best, g.const(1))),
    }
    g.outputs.update(outputs)
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(4),
              "w2": rng.standard_normal((3, 3)), "b2": rng.standard_normal(3)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    batch = edge_batch(rng, 64)
    got_np, got_tf, got_c = all_backends(g, params, batch, tmp_path)
    for name in outputs:
        assert got_np[name].shape == (64, *g.nodes[outputs[name]].shape), name
        np.testing.assert_array_equal(got_c[name], got_np[name], err_msg=f"C vs numpy: {name}")
        if got_np[name].dtype == np.int64:
            np.testing.assert_array_equal(got_tf[name], got_np[name], err_msg=f"TF: {name}")
        else:  # TensorFlow's own log1p/tanh may round the last bit of a double differently
            np.testing.assert_allclose(got_tf[name], got_np[name], rtol=1e-6, atol=0, err_msg=name)
    # the edge rows say what the semantics are
    assert got_np["argmin"][0, 0, 0] == 0  # a NaN is the minimum, the first one wins
    assert got_np["argmin"][2, 0, 0] == 3 and got_np["argmax_f"][2, 0, 0] == 3
    assert got_np["argmax_f"][1, 0, 0] == 0  # ties: the first
    assert got_np["argmin"][3, 0, 0] == 7 and got_np["first"][3, 0, 0] == 3  # nothing allowed
    assert got_np["less"][4, 0, 0] == 0  # int64 compared as int64, not as double
    assert got_np["quantile"].max() <= 1 and got_np["quantile"][:, 0, 1].max() == 0
    assert got_np["iota"][5].reshape(-1).tolist() == list(range(8))
    assert got_np["at_best"][0].reshape(-1).tolist() == [1] + [0] * 7  # best 0: row 0 only


def test_graphs_refuse_what_no_backend_could_run():
    g = ops.Graph([("x", "float", 4), ("n", "int64_t", 1)])
    with pytest.raises(MlgoError, match="does not declare"):
        g.input("y")
    with pytest.raises(MlgoError, match=r"sqrt takes operands of one dtype in \('f32',\)"):
        g.apply("sqrt", g.input("n"))
    with pytest.raises(MlgoError, match="less takes operands of one dtype"):
        g.apply("less", g.input("x"), g.input("n"))
    with pytest.raises(MlgoError, match="neither 1 nor 3"):
        g.stack(["x"], rows=3)
    with pytest.raises(MlgoError, match="types in"):
        ops.Graph([("x", "int32_t", 1)])


# -- the built-in heuristics ----------------------------------------------------------------------
# The rules as they were written in Python before the graphs (the oracles of the graphs).
def _proxy(o):
    valid = np.flatnonzero(o["mask"].reshape(-1) != 0)
    candidates = valid[valid != K - 1]
    if len(candidates) == 0:
        return K - 1
    weight = o["use_def_density"].reshape(-1).astype(np.float64)
    best = int(candidates[np.argmin(weight[candidates])])
    if K - 1 not in valid:
        return best
    return best if weight[best] < weight[K - 1] else K - 1


def _default_rule(o):
    """LLVM 19's DefaultEvictionAdvisor loop, over the features."""
    mask = o["mask"].reshape(-1)
    weight = o["use_def_density"].reshape(-1).astype(np.float64)
    broken = o["nr_broken_hints"].reshape(-1).astype(np.float64)
    hint = o["is_hint"].reshape(-1)
    key = np.where(np.isnan(weight), -np.inf, weight)  # a NaN first, as the graphs' argmin
    best, best_cost = K - 1, None
    for i in range(K - 1):
        if not mask[i] or (mask[K - 1] and not weight[i] < weight[K - 1]):
            continue
        if best_cost is None or (broken[i], key[i]) < best_cost:
            best, best_cost = i, (broken[i], key[i])
            if hint[i]:
                break
    return best


def _never(o):
    valid = np.flatnonzero(o["mask"].reshape(-1) != 0)
    return K - 1 if K - 1 in valid or len(valid) == 0 else int(valid[-1])


def _first(o):
    valid = np.flatnonzero(o["mask"].reshape(-1) != 0)
    return int(valid[0]) if len(valid) else K - 1


ORACLES = {
    ("inlining", "cost-threshold"): lambda o: int(o["cost_estimate"].item(0) < o["threshold"].item(0)),
    ("inlining", "never"): lambda o: 0,
    ("inlining", "always"): lambda o: 1,
    ("regalloc", "proxy"): _proxy,
    ("regalloc", "default-rule"): _default_rule,
    ("regalloc", "never"): _never,
    ("regalloc", "first-valid"): _first,
}


@pytest.mark.parametrize("problem,name", sorted(ORACLES))
def test_builtin_heuristics_agree_with_their_rules_in_every_backend(problem, name, tmp_path):
    rng = np.random.default_rng(1)
    if problem == "inlining":
        batch = random_inlining_batch(rng, 300)
        batch["threshold"][:50] = batch["cost_estimate"][:50]  # equal: not below
    else:
        batch = regalloc_edge_batch(rng, 300)
    g = builtins.graph(problem, name)
    got_np, got_tf, got_c = all_backends(g, {}, batch, tmp_path)
    advice = llvm19.ADVICE[problem]
    obs = [{k: v[i] for k, v in batch.items()} for i in range(300)]
    want = [ORACLES[problem, name](o) for o in obs]
    for got in (got_np, got_tf, got_c):
        assert got[advice].reshape(-1).tolist() == want
    assert [builtins.heuristic(problem, name)(o) for o in obs] == want
    assert len(set(want)) > 1 or name in ("never", "always")


# -- networks and the shipped policies ----------------------------------------------------------
def _network_cases():
    vocab = make_vocab(np.random.default_rng(0))
    for log, act in ((False, "relu"), (True, "tanh")):
        net = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(16, 8), log_features=log,
                                                                       activation=act), vocab)
        yield f"inlining-{act}", net, random_params(net, 3)
    # the rule plus a learned flip: random parameters flip the rule at some call sites
    net = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(16, 8), log_features=True,
                                                                   residual=True), vocab)
    yield "inlining-residual", net, random_params(net, 3)
    for act in ("relu", "tanh"):
        net = RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(activation=act))
        yield f"regalloc-{act}", net, random_params(net, 4, scale=1.0)
    # default-rule plus learned scores: with an anchor of 2, some decisions leave the rule
    net = RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(residual=True))
    params = random_params(net, 4, scale=1.0)
    params[-2:] = [2.0, 0.5]
    yield "regalloc-residual", net, params
    for name in shipped_names():
        net, params, _ = load_policy(resolve(name))
        yield name, net, params


@pytest.mark.parametrize("case", list(_network_cases()), ids=lambda c: c[0])
def test_networks_agree_in_numpy_tensorflow_and_c(case, tmp_path):
    _, net, flat = case
    rng = np.random.default_rng(9)
    if net.problem == "inlining":
        batch = random_inlining_batch(rng, 200)
        batch["cost_estimate"][:2] = [[2**40], [np.iinfo(np.int64).max]]
        batch = {f.name: batch[f.name] for f in net.features}
    else:
        batch = regalloc_edge_batch(rng, 200)
        batch["nr_urgent"][:3, 0, :4] = [np.inf, np.nan, -np.inf, 3e38]
    params = net.unflatten_numpy(flat)
    got_np, got_tf, got_c = all_backends(net.graph, params, batch, tmp_path)
    advice = net.advice.name
    decisions = got_np[advice].reshape(-1)
    np.testing.assert_array_equal(got_c["logits"], got_np["logits"])  # bit for bit
    np.testing.assert_allclose(got_tf["logits"], got_np["logits"], rtol=1e-6, atol=1e-6)
    assert got_c[advice].reshape(-1).tolist() == decisions.tolist()
    assert got_tf[advice].reshape(-1).tolist() == decisions.tolist()
    # the decision is the greedy action of the logits training sees
    assert decisions.tolist() == np.argmax(net.logits_numpy(flat, batch), axis=1).tolist()
    assert len(set(decisions.tolist())) > 1
    # and what the serving ABI's C returns
    c_decide = c_backend(net.graph, params, [advice], tmp_path)
    assert c_decide(batch)[advice].reshape(-1).tolist() == decisions.tolist()


def test_dense_in_c_skips_zero_inputs_only_where_that_is_exact(tmp_path):
    """C's dense layer skips an input of 0 (its products add nothing), but not where a weight is
    infinite, where 0 * inf makes the sum NaN, as numpy's."""
    g = ops.Graph([("f", "float", 3)])
    g.outputs["y"] = g.dense(g.apply("cast_f32", g.stack(["f"], rows=3)), "w", "b", 2)
    batch = {"f": np.array([[0.0, -0.0, 2.0], [1.0, 0.0, 3.0]], np.float32)}
    for w00 in (1.5, np.inf):
        params = {"w": np.array([[w00, -2.0]], np.float32), "b": np.array([0.25, -1.0], np.float32)}
        want = ops.run_numpy(g, batch, params)["y"]
        got = c_backend(g, params, ["y"], tmp_path)(batch)["y"]
        np.testing.assert_array_equal(got, want)
        assert np.isnan(want).any() == (w00 == np.inf)
