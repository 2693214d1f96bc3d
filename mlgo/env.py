"""A gym-style environment over one module's compile, for notebooks and for the trainers.

    env = mlgo.env.make("inlining", "corpus/lua/lapi.c")   # or a corpus Module, or a .bc path
    obs, info = env.reset()
    while obs is not None:
        obs, reward, done, truncated, info = env.step(policy(obs))
    env.close()

Each episode is one real clang-19 compile in interactive mode: `reset()` starts it and returns
the first decision, `step()` sends the answer and returns the next one. The reward arrives on
the final step: `(default - policy) / default` for the module's objective, with the default
heuristic's measurement compiled once and cached on disk. `obs` is a read-only mapping (dict-like)
of numpy arrays keyed by the compiler's feature names; None once the compile is over.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import DESCRIPTION, Corpus, Module
from mlgo.compiler.cache import BaselineCache
from mlgo.compiler.interactive import (
    DEFAULT_TIMEOUT,
    InteractiveCompile,
    make_workdir,
    remove_workdir,
)
from mlgo.compiler.plugin_env import ENVIRONMENTS, call_site
from mlgo.problems import Measurement, Problem, get_problem
from mlgo.problems.base import Heuristic
from mlgo.protocol import Header
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError, ProtocolError

Obs = Mapping[str, np.ndarray]


@dataclass
class EpisodeResult:
    """What one compile under a policy produced."""

    module: str
    measurement: Measurement
    default: Measurement
    reward: float
    num_decisions: int
    seconds: float
    observations: list[Obs] = field(default_factory=list, repr=False)
    actions: list[int] = field(default_factory=list, repr=False)
    contexts: list[str] = field(default_factory=list, repr=False)


class CompilerEnv:
    def __init__(
        self,
        problem: Problem,
        module: Module,
        *,
        cache: BaselineCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        record: bool = True,
    ) -> None:
        self.problem = problem
        self.module = module
        self.cache = cache or BaselineCache()
        self.timeout = timeout
        self.record = record
        self._compile: InteractiveCompile | None = None
        self._workdir: Path | None = None
        self._obs: Obs | None = None
        self._observations: list[Obs] = []
        self._actions: list[int] = []
        self._steps = 0
        self.result: EpisodeResult | None = None

    @property
    def header(self) -> Header:
        return self.problem.header()

    def reset(self) -> tuple[Obs | None, dict[str, Any]]:
        self.close()
        self.result = None
        self._observations, self._actions = [], []
        self._steps = 0
        self._workdir = make_workdir()
        base = self._workdir / "channel"
        argv = self.problem.compile_argv(self.module, self._workdir, base)
        self._compile = InteractiveCompile(argv, self.module.name, self._workdir,
                                           channel_base=base, timeout=self.timeout)
        return self._advance()[0], self._info()

    def step(self, action: int) -> tuple[Obs | None, float, bool, bool, dict[str, Any]]:
        if self._compile is None or self._obs is None:
            raise MlgoError("step() called on a finished episode; call reset() first")
        if self.record:
            self._observations.append(self._obs)
            self._actions.append(int(action))
        self._steps += 1
        self._compile.answer(int(action))
        obs, reward = self._advance()
        return obs, reward, obs is None, False, self._info()

    def _advance(self) -> tuple[Obs | None, float]:
        assert self._compile is not None
        try:
            ev = self._compile.next_observation()
            if ev is not None:
                self._obs = ev.features
                return self._obs, 0.0
            self._obs = None
            res = self._compile.finish()
            measurement = self.problem.measure(self._workdir, self.module.name)
            default = self.problem.baseline(self.module, self.cache)
            r = self.problem.reward(measurement, default)
            self.result = EpisodeResult(
                self.module.name, measurement, default, r, self._steps, res.seconds,
                self._observations, self._actions,
                list(self._compile.contexts),
            )
            self._teardown()
            return None, r
        except BaseException:
            self._teardown()
            raise

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"module": self.module.name}
        if self._compile is not None and self._compile.contexts:
            info["context"] = self._compile.contexts[-1]
            if getattr(self.problem, "plugin", "") and self._obs is not None:
                info["call_site"] = call_site(info["context"])
        if self.result is not None:
            info["result"] = self.result
        return info

    def _teardown(self) -> None:
        if self._compile is not None:
            self._compile.close()
            self._compile = None
        if self._workdir is not None:
            remove_workdir(self._workdir)
            self._workdir = None

    def close(self) -> None:
        self._teardown()

    def __enter__(self) -> CompilerEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_module(module: Module | str | Path, corpus: Corpus | None = None) -> Module:
    """A corpus Module from a Module, a module name within `corpus`, or a path to a .bc file
    (whose .cmd beside it is used if present, else `-c -O2`)."""
    if isinstance(module, Module):
        return module
    if corpus is not None:
        for m in corpus.modules:
            if m.name == str(module):
                return m
    p = Path(module)
    if p.suffix == ".bc" and p.is_file():
        return _StandaloneModule(p.stem, p.parent)
    raise MlgoError(f"{module}: not a module of the corpus nor a .bc file")


@dataclass(frozen=True)
class _StandaloneModule(Module):
    def args(self) -> list[str]:
        return super().args() if self.cmd_path.is_file() else ["-c", "-O2"]


def make(problem: str | Problem, module: Module | str | Path, *, corpus: Corpus | str | Path | None = None,
         environment: str = "interactive", **kwargs: Any) -> CompilerEnv:
    """An environment for `problem` ("inlining" or "regalloc") on one module. `environment`
    "plugin" (inlining only) compiles with mlgo's inliner plugin instead of LLVM's interactive
    mode: its observations add the plugin's features, and `info["call_site"]` names each call
    site (mlgo/compiler/plugin_env.py)."""
    prob = get_problem(problem) if isinstance(problem, str) else problem
    if environment not in ENVIRONMENTS:
        raise MlgoError(f"unknown environment {environment!r}; choose one of {', '.join(ENVIRONMENTS)}")
    if environment == "plugin":
        if not hasattr(prob, "plugin"):
            raise MlgoError(f"environment 'plugin': only the inlining problem has a plugin, not {prob.name}")
        from mlgo.serving.plugin import channel_plugin

        prob = copy.copy(prob)
        prob.plugin = str(channel_plugin())
    corp = Corpus.load(corpus) if isinstance(corpus, (str, Path)) else corpus
    mod = as_module(module, corp)
    prob.check_corpus(Corpus(mod.root, [mod], extra=dict(corp.extra) if corp else {
        "llvm_version": _module_llvm_version(mod)}))
    return CompilerEnv(prob, mod, **kwargs)


def _module_llvm_version(module: Module) -> int:
    """The LLVM version of a module given without its corpus: its corpus description's when it
    sits in a corpus, else (a bitcode file alone records none) the chosen version, the clang
    the user made it with."""
    if (module.root / DESCRIPTION).is_file():
        return Corpus.load(module.root, check_files=False).llvm_version
    return toolchain.llvm_major()


def replay(env: CompilerEnv, actions: list[int]) -> EpisodeResult:
    """Compile once answering `actions` in order (a recorded episode's decisions). The compile
    must ask for exactly that many decisions: anything else means it did not follow the same
    path, and raises ProtocolError naming the module."""
    obs, _ = env.reset()
    steps = 0
    while obs is not None:
        if steps == len(actions):
            env.close()
            raise ProtocolError(f"{env.module.name}: replay diverged: the compile asked for more "
                                f"than the {len(actions)} recorded decisions")
        obs, _, _, _, _ = env.step(actions[steps])
        steps += 1
    assert env.result is not None
    if steps != len(actions):
        raise ProtocolError(f"{env.module.name}: replay diverged: the compile asked for {steps} "
                            f"decisions, {len(actions)} were recorded")
    return env.result


def run_episode(env: CompilerEnv, policy: Heuristic | None) -> EpisodeResult:
    """Compile once under `policy` (None: the default heuristic, no ML) and return the result."""
    if policy is None:
        m = env.problem.baseline(env.module, env.cache)
        return EpisodeResult(env.module.name, m, m, 0.0, 0, 0.0)
    try:
        obs, _ = env.reset()
        while obs is not None:
            obs, _, _, _, _ = env.step(policy(obs))
    finally:
        env.close()  # a policy that raises mid-episode must not leave the compile running
    assert env.result is not None
    return env.result
