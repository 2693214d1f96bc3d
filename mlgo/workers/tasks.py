"""The unit of work a worker runs: compile one module under one policy, return what happened.

Everything here is picklable and TensorFlow-free, so the same task runs in a local process
pool or on a Ray worker."""

from __future__ import annotations

import hashlib
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import Module
from mlgo.compiler.plugin_env import call_site
from mlgo.policies.shipped import resolve as resolve_shipped
from mlgo.protocol import stack_features
from mlgo_base.errors import MlgoError

_GIN_LOADED: set[str] = set()


@dataclass(frozen=True)
class PolicySpec:
    """Where a worker's decisions come from: a built-in heuristic by name, or exported weights
    (a policy directory on shared disk, or the parameters themselves)."""

    builtin: str | None = None
    policy_dir: str | None = None
    params: np.ndarray | None = field(default=None, compare=False)
    greedy: bool = True
    seed: int = 0

    @classmethod
    def named(cls, policy: str) -> PolicySpec:
        """A policy as users name it: a shipped policy's name (mlgo/shipped_policies/NAME), a
        policy directory, or else a built-in heuristic's name (checked by the problem)."""
        p = Path(resolve_shipped(policy))
        if p.is_dir():
            return cls(policy_dir=str(p.resolve()))
        if "/" in policy or p.suffix:
            raise MlgoError(f"{policy}: policy directory not found")
        return cls(builtin=policy)


@dataclass(frozen=True)
class ModuleTask:
    problem: str
    module: Module
    policy: PolicySpec
    record: bool = False  # send back observations and actions (for traces and training)
    gin_config: str = ""
    timeout: float = 300.0
    tag: int = 0  # the caller's label (e.g. which ES candidate), copied into the outcome


@dataclass
class CallSites:
    """Per decision, the call site it was about (mlgo.compiler.plugin_env.CallSite), as parallel
    lists so that traces and search results store them as columns."""

    caller: list[str]
    callee: list[str]
    ordinal: list[int]
    loc: list[str]

    def __len__(self) -> int:
        return len(self.caller)

    @classmethod
    def from_contexts(cls, contexts: list[str]) -> CallSites:
        """From the plugin's context lines, one per decision (ProtocolError if one is not a
        call site's identity)."""
        sites = [call_site(c) for c in contexts]
        return cls([s.caller for s in sites], [s.callee for s in sites],
                   [s.ordinal for s in sites], [s.loc for s in sites])


def decision_call_sites(problem: Any, module: str, contexts: list[str],
                        decisions: int) -> CallSites | None:
    """The call sites of a compile's `decisions` from its context lines when `problem` compiles
    with the inliner plugin, else None (interactive mode's context line names no call site). A
    count that differs from the decisions is a protocol fault."""
    if not getattr(problem, "plugin", ""):
        return None
    if len(contexts) != decisions:
        raise MlgoError(f"{module}: the compiler named {len(contexts)} call site(s) for "
                        f"{decisions} decision(s)")
    return CallSites.from_contexts(contexts)


@dataclass
class ModuleOutcome:
    module: str
    ok: bool
    error: str = ""
    reward: float = 0.0
    policy_total: float = 0.0
    default_total: float = 0.0
    num_decisions: int = 0
    seconds: float = 0.0
    per_function: dict[str, tuple[float, float]] = field(default_factory=dict)
    # With record=True: feature name -> array [T, ...]; actions [T]; log-probs [T] if sampled.
    features: dict[str, np.ndarray] = field(default_factory=dict)
    actions: np.ndarray | None = None
    logprobs: np.ndarray | None = None
    default_actions: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tag: int = 0
    # With record=True under the plugin environment: which call site each decision was about.
    call_sites: CallSites | None = None


def failed_outcome(module: str, error: Exception, started: float, tag: int = 0) -> ModuleOutcome:
    """The outcome of a module task that raised `error` (call it in the except block): a bad
    module (MlgoError) gets its one line; anything else is a bug, so the traceback is kept for
    the report."""
    text = (str(error) if isinstance(error, MlgoError)
            else f"internal error: {error!r}\n{traceback.format_exc()}")
    return ModuleOutcome(module, False, error=text, seconds=time.monotonic() - started, tag=tag)


def forget_applied_gin() -> None:
    """Call after clearing gin's configuration in this process: the next apply_gin of any
    configuration parses it again instead of taking it for still applied."""
    _GIN_LOADED.clear()


def apply_gin(config: str) -> None:
    """Apply gin bindings once per process (workers get them as text with each task)."""
    if not config:
        return
    key = hashlib.sha256(config.encode()).hexdigest()
    if key in _GIN_LOADED:
        return
    import gin

    from mlgo.configurables import import_configurables

    import_configurables()
    # Training-side bindings (bc/ppo/es) were validated by the CLI; workers have no use for them.
    gin.parse_config(config, skip_unknown=True)
    _GIN_LOADED.add(key)


def _decision_source(task: ModuleTask, problem: Any):
    """A callable obs -> action, plus a list collecting log-probs when sampling."""
    spec = task.policy
    logprobs: list[float] = []
    if spec.builtin is not None:
        heuristic = problem.heuristic(spec.builtin)
        return heuristic, logprobs
    from mlgo.policies.loading import numpy_policy  # numpy only: no TensorFlow in workers

    policy = numpy_policy(problem, spec.policy_dir, spec.params)
    if spec.greedy:
        return policy.act, logprobs
    # Each module gets its own stream, reproducible from (seed, module name).
    rng = np.random.default_rng([spec.seed, zlib.crc32(task.module.name.encode())])

    def sample(obs):
        a, lp = policy.act_sample(obs, rng)
        logprobs.append(lp)
        return a

    return sample, logprobs


def _replay_plain(problem: Any, task: ModuleTask, first: Any) -> Any:
    """The same decisions replayed on the plain problem, so that the recorded features are the
    ones a policy sees in release (the variant's may have one overwritten). The replay must
    follow the same path: every feature the two compiles share must match, and so must the
    objective."""
    from mlgo.env import CompilerEnv, replay

    env = CompilerEnv(problem.plain, task.module, timeout=task.timeout, record=True)
    again = replay(env, first.actions)
    shared = [n for n in again.observations[0] if n in first.observations[0]
              and n not in problem.overwritten_features]
    for i, (a, b) in enumerate(zip(first.observations, again.observations, strict=True)):
        bad = [n for n in shared if not np.array_equal(a[n], b[n])]
        if bad:
            raise MlgoError(f"{task.module.name}: replay diverged at decision {i}: {bad[:4]} differ")
    if again.measurement.total != first.measurement.total:
        raise MlgoError(f"{task.module.name}: replay diverged: {problem.objective} "
                        f"{again.measurement.total} vs {first.measurement.total}")
    return again


def run_module(task: ModuleTask) -> ModuleOutcome:
    """Compile `task.module` under `task.policy`. Never raises for a bad module: the outcome
    carries the error so the caller can skip, count and report it."""
    out = _run_module(task)
    out.tag = task.tag
    return out


def _run_module(task: ModuleTask) -> ModuleOutcome:
    from mlgo.env import CompilerEnv, run_episode
    from mlgo.problems import get_problem

    t0 = time.monotonic()
    try:
        apply_gin(task.gin_config)
        problem = get_problem(task.problem).for_policy(task.policy.builtin)
        decide, logprobs = _decision_source(task, problem)
        env = CompilerEnv(problem, task.module, timeout=task.timeout, record=task.record)
        if decide is None:  # the default heuristic itself
            res = run_episode(env, None)
        else:
            res = run_episode(env, decide)
        out = ModuleOutcome(
            task.module.name, True, reward=res.reward, policy_total=res.measurement.total,
            default_total=res.default.total, num_decisions=res.num_decisions,
            seconds=time.monotonic() - t0,
            per_function={
                k: (res.measurement.per_function.get(k, 0.0), res.default.per_function.get(k, 0.0))
                for k in set(res.measurement.per_function) | set(res.default.per_function)
            },
        )
        if task.record and res.observations:
            labels = [problem.default_proxy(o) for o in res.observations]
            if problem.plain is not None:
                res = _replay_plain(problem, task, res)
            out.features = stack_features(res.observations)
            out.actions = np.asarray(res.actions, dtype=np.int64)
            out.default_actions = np.asarray(labels, dtype=np.int64)
            out.call_sites = decision_call_sites(problem, task.module.name, res.contexts,
                                                  len(res.actions))
            if logprobs:
                out.logprobs = np.asarray(logprobs, dtype=np.float32)
        return out
    except Exception as e:
        return failed_outcome(task.module.name, e, t0)
