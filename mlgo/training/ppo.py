"""Proximal policy optimization with a per-module reward.

Each iteration:
  1. compile a sample of training modules with the *sampling* policy pi_old (in numpy, in the
     workers), recording every decision's features, action a and log pi_old(a|s);
  2. every decision of module m shares m's reward R_m = (default - policy) / default; the
     advantage is A = scale * (R_m - b_m), with b_m a per-module moving average of past
     rewards (so modules that are always easy or always hard do not dominate), then
     normalized over the batch;
  3. a few epochs of minibatch steps on
        L = -mean(min(r A, clip(r, 1-eps, 1+eps) A)) - c_ent * mean(H(pi(.|s))),
     with r = pi(a|s) / pi_old(a|s), computed in TensorFlow on the same network;
  4. b_m <- decay * b_m + (1 - decay) * R_m.

A behavioral-cloning warm start is nearly deterministic (its logit margins are large), so
sampling from it explores almost nothing. `warmstart_temperature = T > 1` divides the output
layer by T once, at the start of a fresh run: the greedy policy is unchanged, but sampling
flips the least certain decisions, which gives the policy gradient something to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import gin
import numpy as np

from mlgo.checks import check_float, check_int
from mlgo.policies.network import last_layers_mask
from mlgo.training.optim import Adam
from mlgo.training.run import TrainingRun
from mlgo_base.change import relative_change


@gin.configurable(module="ppo")
@dataclass
class PPOConfig:
    iterations: int = 20
    modules_per_iteration: int = 24
    learning_rate: float = 3e-4
    clip: float = 0.2
    entropy_coef: float = 0.003
    epochs: int = 4
    minibatch_size: int = 256
    reward_scale: float = 100.0  # rewards are fractions of a module's size: work in percent
    baseline_decay: float = 0.7
    validate_every: int = 1
    warmstart_temperature: float = 1.0  # > 1: soften the warm start's output layer (see above)

    def __post_init__(self) -> None:
        check_int("ppo.PPOConfig.iterations", self.iterations, lo=1)
        check_int("ppo.PPOConfig.modules_per_iteration (0: all)", self.modules_per_iteration, lo=0)
        check_float("ppo.PPOConfig.learning_rate", self.learning_rate, lo=0.0)
        check_float("ppo.PPOConfig.clip", self.clip, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_float("ppo.PPOConfig.entropy_coef", self.entropy_coef, lo=0.0)
        check_int("ppo.PPOConfig.epochs", self.epochs, lo=1)
        check_int("ppo.PPOConfig.minibatch_size", self.minibatch_size, lo=1)
        check_float("ppo.PPOConfig.reward_scale", self.reward_scale, lo=0.0, lo_open=True)
        check_float("ppo.PPOConfig.baseline_decay", self.baseline_decay, lo=0.0, hi=1.0)
        check_int("ppo.PPOConfig.validate_every", self.validate_every, lo=1)
        check_float("ppo.PPOConfig.warmstart_temperature", self.warmstart_temperature, lo=0.0,
                    lo_open=True)


def ppo_loss(tf, logits, actions, old_logp, adv, clip: float, entropy_coef: float):
    """Clipped surrogate loss and entropy for a batch (the math of step 3)."""
    logp_all = tf.nn.log_softmax(logits)
    logp = tf.gather(logp_all, actions, batch_dims=1)
    ratio = tf.exp(logp - old_logp)
    surrogate = tf.minimum(ratio * adv, tf.clip_by_value(ratio, 1 - clip, 1 + clip) * adv)
    probs = tf.exp(logp_all)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(logp_all, probs), axis=-1)
    loss = -tf.reduce_mean(surrogate) - entropy_coef * tf.reduce_mean(entropy)
    clipped = tf.reduce_mean(tf.cast(tf.abs(ratio - 1) > clip, tf.float32))
    return loss, tf.reduce_mean(entropy), clipped


def train(run: TrainingRun, cfg: PPOConfig) -> np.ndarray:
    import tensorflow as tf

    net = run.network
    params = run.params.astype(np.float32)
    if run.resumed is None and cfg.warmstart_temperature != 1.0:
        params = params.copy()
        params[last_layers_mask(net, 1)] /= np.float32(cfg.warmstart_temperature)
    theta = tf.Variable(params)
    adam = Adam(int(theta.shape[0]), cfg.learning_rate)
    baselines: dict[str, float] = dict(run.state.get("baselines", {}))
    if run.resumed is not None and "adam_m" in run.resumed.arrays:
        adam.load(run.resumed.arrays)

    for it in run.iterations(cfg.iterations):
        # 1. rollouts with the sampling policy
        modules = run.sample_modules(cfg.modules_per_iteration, it)
        spec = run.policy_spec(theta.numpy(), greedy=False, seed=run.seed * 100003 + it)
        outs = [o for o in run.run_tasks([run.task(m, spec, record=True) for m in modules]) if o.ok]
        episodes = [o for o in outs if o.actions is not None and len(o.actions) > 0]
        rewards = np.array([o.reward for o in outs]) if outs else np.zeros(1)
        if not episodes:
            run.skip_iteration(it, {"ppo/episodes": 0})
            continue

        # 2. advantages: module reward minus the module's moving-average baseline
        adv_parts = []
        for o in episodes:
            a = cfg.reward_scale * (o.reward - baselines.get(o.module, 0.0))
            adv_parts.append(np.full(len(o.actions), a, dtype=np.float32))
        adv = np.concatenate(adv_parts)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.std() > 0 else adv * 0
        feats = {k: np.concatenate([o.features[k] for o in episodes]) for k in episodes[0].features}
        actions = np.concatenate([o.actions for o in episodes]).astype(np.int64)
        old_logp = np.concatenate([o.logprobs for o in episodes]).astype(np.float32)

        # 3. clipped policy-gradient epochs
        n = len(actions)
        rng = np.random.default_rng([run.seed, it, 3])
        losses, entropies, clipfracs = [], [], []
        for _ in range(cfg.epochs):
            order = rng.permutation(n)
            for start in range(0, n, cfg.minibatch_size):
                idx = order[start:start + cfg.minibatch_size]
                batch = {k: v[idx] for k, v in feats.items()}
                with tf.GradientTape() as tape:
                    logits = net.logits_tf(theta, batch)
                    loss, ent, clipped = ppo_loss(tf, logits, actions[idx], old_logp[idx],
                                                  adv[idx], cfg.clip, cfg.entropy_coef)
                grad = tape.gradient(loss, theta)
                theta.assign_add(adam.step(grad.numpy()).astype(np.float32))
                losses.append(float(loss))
                entropies.append(float(ent))
                clipfracs.append(float(clipped))

        # 4. per-module baselines
        for o in outs:
            b = baselines.get(o.module)
            baselines[o.module] = o.reward if b is None else (
                cfg.baseline_decay * b + (1 - cfg.baseline_decay) * o.reward)
        run.state["baselines"] = baselines

        params = theta.numpy()
        val = run.validate(params) if (it + 1) % cfg.validate_every == 0 else None
        size_policy = sum(o.policy_total for o in outs)
        size_default = sum(o.default_total for o in outs)
        metrics = {
            "reward/mean": float(rewards.mean()), "reward/p10": float(np.percentile(rewards, 10)),
            "reward/p50": float(np.percentile(rewards, 50)),
            "reward/p90": float(np.percentile(rewards, 90)),
            "train/relative_change": relative_change(size_default, size_policy),
            "ppo/loss": float(np.mean(losses)), "ppo/entropy": float(np.mean(entropies)),
            "ppo/clip_fraction": float(np.mean(clipfracs)), "ppo/decisions": n,
        }
        run.end_iteration(it, params, adam.state(), metrics, val)
    return theta.numpy()
