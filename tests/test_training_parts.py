"""Pieces of training that need no compiler: checkpoints, Adam, the ES estimator, PPO's loss."""

import json

import numpy as np
import pytest

from mlgo.policies.network import last_layers_mask
from mlgo.training.checkpoint import Checkpointer
from mlgo.training.es import centered_ranks, es_gradient
from mlgo.training.optim import Adam


def test_checkpoint_round_trip_and_pruning(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    assert ck.load_latest() is None
    for it in range(4):
        ck.save(it, {"params": np.full(5, it, dtype=np.float32)}, {"best": it * 0.5})
    got = ck.load_latest()
    assert got.iteration == 3 and got.arrays["params"][0] == 3 and got.state == {"best": 1.5}
    assert sorted(p.name for p in ck.dir.iterdir() if p.is_dir()) == ["ckpt-000002", "ckpt-000003"]


def test_torn_checkpoint_is_never_loaded(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(0, {"params": np.zeros(3)}, {})
    ck.save(1, {"params": np.ones(3)}, {})
    # Corrupt the newest: it must be skipped in favour of the older, verified one.
    newest = ck.dir / "ckpt-000001" / "arrays.npz"
    newest.write_bytes(newest.read_bytes()[:20])
    got = ck.load_latest()
    assert got.iteration == 0 and got.arrays["params"].sum() == 0
    # A temp dir left by a kill mid-save is ignored and cleaned at the next save.
    (ck.dir / ".ckpt-000002.junk").mkdir()
    assert ck.load_latest().iteration == 0
    ck.save(2, {"params": np.ones(3)}, {})
    assert not (ck.dir / ".ckpt-000002.junk").exists()


def test_latest_pointer_wins_over_stray_newer_dirs(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(0, {"params": np.zeros(1)}, {})
    ck.save(1, {"params": np.ones(1)}, {})
    (ck.dir / "LATEST").write_text("ckpt-000000\n")
    assert ck.load_latest().iteration == 0
    meta = json.loads((ck.dir / "ckpt-000001" / "state.json").read_text())
    assert meta["iteration"] == 1


def test_adam_minimizes_a_quadratic_and_checkpoints():
    x = np.array([3.0, -2.0])
    opt = Adam(2, lr=0.1)
    for _ in range(300):
        x = x + opt.step(2 * x)
    assert np.abs(x).max() < 0.05
    st = opt.state()
    opt2 = Adam(2, lr=0.1)
    opt2.load(st)
    assert opt2.t == opt.t and np.allclose(opt2.m, opt.m)


def test_centered_ranks():
    r = centered_ranks(np.array([10.0, -1.0, 3.0, 3.0]))
    assert r.tolist() == [0.5, -0.5, 0.0, 0.0]


@pytest.mark.parametrize("normalization,top_k", [("rank", 0), ("zscore", 0), ("rank", 8)])
def test_es_gradient_ascends_a_concave_fitness(normalization, top_k):
    """On f(theta) = -|theta - target|^2 the estimator points towards the target."""
    rng = np.random.default_rng(0)
    target = rng.normal(size=20)
    theta = np.zeros(20)
    sigma = 0.1
    for _ in range(200):
        eps = rng.standard_normal((16, 20))
        fp = -((theta + sigma * eps - target) ** 2).sum(axis=1)
        fm = -((theta - sigma * eps - target) ** 2).sum(axis=1)
        theta = theta + 0.05 * es_gradient(eps, fp, fm, sigma, normalization, top_k)
    assert np.linalg.norm(theta - target) < 0.35 * np.linalg.norm(target)


def test_last_layers_mask_selects_the_last_layers():
    from mlgo.policies.network import MLP

    class Net:  # only param_shapes() matters to the mask
        def param_shapes(self):
            return MLP("mlp", (5, 4, 3, 2)).param_shapes()

    # layers: 5*4+4 = 24, 4*3+3 = 15, 3*2+2 = 8 parameters
    assert last_layers_mask(Net(), 0).tolist() == [True] * 47
    assert last_layers_mask(Net(), 1).tolist() == [False] * 39 + [True] * 8
    assert last_layers_mask(Net(), 2).tolist() == [False] * 24 + [True] * 23
    assert last_layers_mask(Net(), 9).all()


def test_ppo_loss_clips_and_rewards_good_actions():
    tf = pytest.importorskip("tensorflow")
    from mlgo.training.ppo import ppo_loss

    logits = tf.constant([[0.0, 0.0], [0.0, 0.0]])
    actions = np.array([1, 0])
    old = np.log(np.array([0.5, 0.5], dtype=np.float32))
    adv = np.array([1.0, -1.0], dtype=np.float32)
    loss, ent, clipped = ppo_loss(tf, logits, actions, old, adv, 0.2, 0.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)  # ratio 1: surrogate = mean(adv) = 0
    assert float(ent) == pytest.approx(np.log(2), rel=1e-5)
    # Raising the logit of the good action lowers the loss; far beyond the clip, it stops helping.
    var = tf.Variable([[0.0, 0.1], [0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss, _, _ = ppo_loss(tf, var, actions, old, adv, 0.2, 0.0)
    assert float(tape.gradient(loss, var)[0, 1]) < 0
    far = tf.constant([[0.0, 5.0], [0.0, 0.0]])
    _, _, clipped = ppo_loss(tf, far, actions, old, adv, 0.2, 0.0)
    assert float(clipped) == pytest.approx(0.5)


@pytest.mark.parametrize("problem", ["inlining", "regalloc"])
@pytest.mark.parametrize("algorithm", ["bc", "es", "ppo"])
def test_each_problem_ships_gin_defaults_that_parse_and_yield_to_flags(problem, algorithm):
    import gin

    from mlgo.configurables import default_gin_file
    from mlgo.training import bc, es, ppo
    from mlgo.training.gin_config import parse_gin

    path = default_gin_file(problem, algorithm)
    assert path is not None and path.parent.name == problem
    config = {"bc": bc.BCConfig, "es": es.ESConfig, "ppo": ppo.PPOConfig}[algorithm]
    name = config.__name__
    parse_gin([path], [])
    bound = [line.split("=")[0].strip() for line in path.read_text().splitlines()
             if line.startswith(f"{algorithm}.{name}.")]
    assert bound
    for key in bound:  # every value in the file reaches the algorithm's config
        assert getattr(config(), key.rsplit(".", 1)[1]) == gin.query_parameter(key)
    parse_gin([path], [f"{algorithm}.{name}.learning_rate = 0.125"])
    assert config().learning_rate == 0.125  # a flag overrides the file
    gin.clear_config()


def test_bc_learning_rate_decays_to_its_final_fraction():
    from mlgo.training.bc import BCConfig, learning_rate

    cfg = BCConfig(learning_rate=0.01, final_lr_fraction=0.05)
    assert learning_rate(cfg, 0.0) == pytest.approx(0.01)
    assert learning_rate(cfg, 0.5) == pytest.approx(0.01 * (1 - 0.95 / 2))
    # The last epoch (progress >= 1) trains at the final rate only.
    assert learning_rate(cfg, 1.0) == learning_rate(cfg, 1.3) == pytest.approx(0.0005)
    assert learning_rate(BCConfig(learning_rate=0.01, final_lr_fraction=1.0), 0.9) == pytest.approx(0.01)
