"""Policy directories (save/load, atomic replace, mismatch errors), the worker loader, and
SavedModel export: LLVM's signature, and the same greedy decisions as the numpy policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_networks import (
    K,
    balanced_inlining_params,
    inlining_specs,
    make_vocab,
    random_inlining_batch,
    random_params,
    random_regalloc_batch,
    regalloc_specs,
)

from mlgo.policies.loading import numpy_policy
from mlgo.policies.network import FeatureMismatchError
from mlgo.policies.policy import NumpyPolicy, Policy, SavedModelPolicy
from mlgo.policies.policy_dir import PolicyFormatError, load_policy, read_policy_json, save_policy
from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig
from mlgo.problems.regalloc.network import RegallocNetwork, RegallocNetworkConfig
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"


def observations(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(batch.values())))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


@pytest.fixture(scope="module")
def inl():
    net = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(32, 16)),
                          make_vocab(np.random.default_rng(0)))
    return net, balanced_inlining_params(net, 1)


@pytest.fixture(scope="module")
def ra():
    net = RegallocNetwork(regalloc_specs(), RegallocNetworkConfig(activation="tanh"))
    return net, random_params(net, 2, scale=1.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, inl, ra):
    """One SavedModel per problem for the whole module (export and TF import are the slow part)."""
    from mlgo.policies.saved_model import export_saved_model

    root = tmp_path_factory.mktemp("saved_models")
    return {"inlining": export_saved_model(*inl, root / "inlining"),
            "regalloc": export_saved_model(*ra, root / "regalloc")}


# -- policy directories --------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["inl", "ra"])
def test_policy_dir_round_trip(tmp_path, request, which):
    net, params = request.getfixturevalue(which)
    meta = {"algorithm": "es", "iteration": np.int64(3), "corpus": tmp_path}
    save_policy(tmp_path / "p", net, params, meta)
    doc = read_policy_json(tmp_path / "p")
    assert doc["problem"] == net.problem and doc["num_params"] == net.num_params
    assert [f["name"] for f in doc["features"]] == [f.name for f in net.features]
    assert doc["advice"]["name"] == net.advice_name
    assert (tmp_path / "p" / "vocab").is_dir() == bool(net.vocab)

    net2, params2, meta2 = load_policy(tmp_path / "p", problem=net.problem, features=net.features)
    assert type(net2) is type(net) and net2.config == net.config
    assert net2.features == net.features and net2.param_shapes() == net.param_shapes()
    assert meta2 == {"algorithm": "es", "iteration": 3, "corpus": str(tmp_path)}
    np.testing.assert_array_equal(params2, params)
    assert set(net2.vocab) == set(net.vocab)
    assert all(np.array_equal(net2.vocab[k], net.vocab[k]) for k in net.vocab)
    rng = np.random.default_rng(5)
    batch = random_inlining_batch(rng, 32) if which == "inl" else random_regalloc_batch(rng, 32)
    np.testing.assert_array_equal(net.logits_numpy(params, batch), net2.logits_numpy(params2, batch))


def test_save_replaces_atomically_and_leaves_no_temp_dirs(tmp_path, ra):
    net, params = ra
    save_policy(tmp_path / "policy", net, params, {"iteration": 0})
    save_policy(tmp_path / "policy", net, params + 1, {"iteration": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    _, got, meta = load_policy(tmp_path / "policy")
    np.testing.assert_array_equal(got, (params + 1).astype(np.float32))
    assert meta["iteration"] == 1
    with pytest.raises(MlgoError, match="parameters"):
        save_policy(tmp_path / "bad", net, params[:-1])
    assert not (tmp_path / "bad").exists()


def test_wrong_problem_and_feature_mismatch_are_reported(tmp_path, inl):
    net, params = inl
    save_policy(tmp_path / "p", net, params)
    with pytest.raises(PolicyFormatError, match="for problem 'inlining', not 'regalloc'"):
        load_policy(tmp_path / "p", problem="regalloc")
    newer = [s for s in inlining_specs() if s.name not in ("inlining_default", "edge_count")]
    newer.append(TensorSpec("callee_loop_depth", "int64_t", (1,)))
    with pytest.raises(FeatureMismatchError) as e:
        load_policy(tmp_path / "p", features=newer)
    msg = str(e.value)
    assert "missing edge_count" in msg and str(tmp_path / "p") in msg
    # bound by name: neither the ignored inlining_default nor an extra feature is a mismatch
    assert "inlining_default" not in msg and "callee_loop_depth" not in msg
    with pytest.raises(PolicyFormatError, match="not a policy directory"):
        load_policy(tmp_path)


def test_corrupt_policy_dirs_are_refused(tmp_path, ra):
    net, params = ra
    save_policy(tmp_path / "p", net, params)
    shutil.copytree(tmp_path / "p", tmp_path / "q")
    (tmp_path / "q" / "params.npy").write_bytes(b"garbage")
    with pytest.raises(PolicyFormatError, match="does not match"):
        load_policy(tmp_path / "q")
    doc = json.loads((tmp_path / "p" / "policy.json").read_text())
    (tmp_path / "p" / "policy.json").write_text(json.dumps(doc | {"version": 99}))
    with pytest.raises(PolicyFormatError, match="version 99"):
        load_policy(tmp_path / "p")


def test_vocab_missing_from_policy_dir_names_the_feature(tmp_path, inl):
    net, params = inl
    save_policy(tmp_path / "p", net, params)
    (tmp_path / "p" / "vocab" / "threshold.buckets").unlink()
    with pytest.raises(MlgoError, match="threshold"):
        load_policy(tmp_path / "p")


def test_worker_loader_uses_task_params_and_follows_replacement(tmp_path, inl):
    net, params = inl
    save_policy(tmp_path / "p", net, params)
    obs = observations(random_inlining_batch(np.random.default_rng(6), 50))
    saved = numpy_policy("inlining", tmp_path / "p")
    assert isinstance(saved, Policy)
    want = [NumpyPolicy(net, params).act(o) for o in obs]
    assert [saved.act(o) for o in obs] == want
    other = balanced_inlining_params(net, 2)
    flipped = numpy_policy("inlining", tmp_path / "p", other)  # ES candidates send params
    assert [flipped.act(o) for o in obs] != want
    save_policy(tmp_path / "p", net, other)
    assert [numpy_policy("inlining", tmp_path / "p").act(o) for o in obs] != want
    with pytest.raises(PolicyFormatError):
        numpy_policy("regalloc", tmp_path / "p")


# -- SavedModel export ---------------------------------------------------------------------------
def test_saved_model_signature_is_llvms(exported, inl, ra):
    for net, _ in (inl, ra):
        sm = SavedModelPolicy(exported[net.problem])
        assert sm.output_name == net.advice_name
        assert set(sm.inputs) == {f.name for f in net.features}
        for f in net.features:
            spec = sm.inputs[f.name]
            assert tuple(spec.shape) == f.shape and spec.dtype.as_numpy_dtype == f.dtype.type
        out = sm._action.structured_outputs[net.advice_name]
        assert tuple(out.shape) == (1,) and out.dtype.name == "int64"
    assert tuple(SavedModelPolicy(exported["regalloc"]).inputs["mask"].shape) == (1, K)


@pytest.mark.parametrize("problem", ["inlining", "regalloc"])
def test_saved_model_decides_like_numpy(exported, inl, ra, problem):
    net, params = inl if problem == "inlining" else ra
    rng = np.random.default_rng(7)
    batch = random_inlining_batch(rng, 300) if problem == "inlining" else random_regalloc_batch(rng, 300)
    if problem == "regalloc":  # sparse masks, so the choice is constrained
        batch["mask"] = (rng.random(batch["mask"].shape) < 0.3).astype(np.int64)
        batch["mask"][:, 0, K - 1] = 1
    sm, npol = SavedModelPolicy(exported[problem]), NumpyPolicy(net, params)
    obs = observations(batch)
    sm_actions = [sm.act(o) for o in obs]
    assert sm_actions == [npol.act(o) for o in obs]
    assert len(set(sm_actions)) > 1  # the parity is not between two constant policies
    for o in obs[:20]:
        np.testing.assert_allclose(sm.logits(o), npol.logits(o), atol=1e-5, rtol=1e-5)
    if problem == "regalloc":
        assert all(batch["mask"][i, 0, a] == 1 for i, a in enumerate(sm_actions))


@pytest.mark.skipif(not SAVED_MODEL_CLI.exists(), reason="saved_model_cli not installed")
def test_saved_model_cli_sees_the_signature_and_aot_compiles(exported, tmp_path):
    show = subprocess.run([str(SAVED_MODEL_CLI), "show", "--dir", str(exported["inlining"]),
                           "--tag_set", "serve", "--signature_def", "action"],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert "inputs['callee_basic_block_count']" in show.stdout
    assert "outputs['inlining_decision']" in show.stdout and "DT_INT64" in show.stdout
    # XLA ahead-of-time compilation: what an LLVM release build embeds (needs static shapes).
    aot = subprocess.run([str(SAVED_MODEL_CLI), "aot_compile_cpu", "--dir", str(exported["regalloc"]),
                          "--tag_set", "serve", "--signature_def_key", "action",
                          "--output_prefix", str(tmp_path / "model"), "--cpp_class", "mlgo::Evict"],
                         capture_output=True, text=True, timeout=300)
    assert aot.returncode == 0, aot.stderr[-3000:]
    header = (tmp_path / "model.h").read_text()
    assert "arg_feed_mask" in header and "result_fetch_index_to_evict" in header


# -- C code for the serving binaries -------------------------------------------------------------
C_COMPILER = shutil.which(f"clang-{toolchain.llvm_major()}") or shutil.which("cc")


def _compile_c(source: str, out: Path):
    import ctypes

    src = out.with_suffix(".c")
    src.write_text(source)
    r = subprocess.run([C_COMPILER, "-O2", "-fPIC", "-shared", "-Wall", "-Werror", str(src),
                        "-o", str(out), "-lm"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return ctypes.CDLL(str(out))


@pytest.mark.skipif(C_COMPILER is None, reason="no C compiler")
def test_generated_c_decides_like_numpy(tmp_path, inl, ra):
    import ctypes

    from mlgo.policies.c_source import policy_c_source

    for net, params in (inl, ra):
        save_policy(tmp_path / net.problem, net, params)
        lib = _compile_c(policy_c_source(tmp_path / net.problem, net.problem),
                         tmp_path / f"{net.problem}.so")
        inputs = [f for f in net.features if f.name in net.graph.input_index]
        declared = (ctypes.c_char_p * len(inputs)).in_dll(lib, "mlgo_policy_feature_names")
        assert [d.decode() for d in declared] == [f.name for f in inputs]
        name = (ctypes.c_char * (len(net.advice_name) + 1)).in_dll(lib, "mlgo_policy_output_name")
        assert name.value.decode() == net.advice_name
        rng = np.random.default_rng(8)
        policy = NumpyPolicy(net, params)
        if net.problem == "inlining":
            batch = random_inlining_batch(rng, 300)
            batch["cost_estimate"][:3] = [[2**40], [-(2**40)], [0]]
            fn = lib.mlgo_inline_policy
            fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]

            def decide(o, fn=fn, inputs=inputs):
                row = np.array([o[f.name][0] for f in inputs], np.int64)
                return fn(row.ctypes.data, len(row))
        else:
            batch = random_regalloc_batch(rng, 300)
            batch["mask"] = (rng.random(batch["mask"].shape) < 0.3).astype(np.int64)
            batch["use_def_density"][:5, 0, :2] = [np.inf, np.nan]
            fn = lib.mlgo_regalloc_policy
            fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]

            def decide(o, fn=fn, inputs=inputs):
                arrays = [np.ascontiguousarray(o[f.name], f.dtype) for f in inputs]
                ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
                return fn(ptrs, len(arrays))
        obs = observations(batch)
        got = [decide(o) for o in obs]
        # The same operations in the same order (sums of exact float64 products): every
        # decision is the same, near-ties included.
        assert got == [policy.act(o) for o in obs] and len(set(got)) > 1


def test_shipped_policy_names_resolve_to_their_directory(tmp_path, monkeypatch):
    from mlgo.policies import shipped
    from mlgo.workers.tasks import PolicySpec

    (tmp_path / "inlining-x" / "policy").mkdir(parents=True)
    (tmp_path / "inlining-x" / "policy" / "policy.json").write_text("{}")
    (tmp_path / "half-written").mkdir()  # no policy.json: not a shipped policy
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    assert shipped.shipped_names() == ["inlining-x"]
    assert shipped.resolve("inlining-x") == str(tmp_path / "inlining-x" / "policy")
    for other in ("half-written", "default", "x/inlining-x"):
        assert shipped.resolve(other) == other
    assert PolicySpec.named("inlining-x").policy_dir == str((tmp_path / "inlining-x" / "policy").resolve())
    assert PolicySpec.named("cost-threshold").builtin == "cost-threshold"


def test_eviction_proxy_evicts_when_llvm_requires_it_in_python_and_c(tmp_path):
    """Position 32 masked out means LLVM must evict someone (answering 32 there made a real
    compile fail with "ran out of registers"); the Python proxy and its C twin agree."""
    import ctypes

    from mlgo.policies import c_source
    from mlgo.problems.regalloc.problem import NO_EVICTION, eviction_cost_proxy
    from mlgo.protocol import llvm19

    lib = _compile_c(c_source.heuristic_c_source("regalloc", "proxy"), tmp_path / "proxy.so")
    fn = lib.mlgo_regalloc_policy
    fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]
    rng = np.random.default_rng(3)
    batch = random_regalloc_batch(rng, 400)
    batch["mask"] = (rng.random(batch["mask"].shape) < 0.3).astype(np.int64)
    batch["mask"][:200, 0, NO_EVICTION] = 0
    batch["use_def_density"][:100, 0, NO_EVICTION] = 1e9  # nothing lighter than the new range
    forced = 0
    for o in observations(batch):
        arrays = [np.ascontiguousarray(o[name], np.int64 if t == "int64_t" else np.float32)
                  for name, t, _ in llvm19.REGALLOC_FEATURES]
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        got = eviction_cost_proxy(o)
        assert fn(ptrs, len(arrays)) == got
        mask = o["mask"].reshape(-1)
        if mask[NO_EVICTION] == 0 and mask[:NO_EVICTION].any():
            forced += 1
            assert got != NO_EVICTION and mask[got] == 1
    assert forced > 150
