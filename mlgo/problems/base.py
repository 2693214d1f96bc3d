"""What every problem provides, and the machinery they share (baselines, header probing).

A problem knows how to compile a module for its decision (flags, channel), how to measure the
result, how to turn a measurement into a reward against the default heuristic, and which
built-in heuristics exist. Algorithms and workers only see this interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import Corpus, Module
from mlgo.compiler.cache import BaselineCache, baseline_key
from mlgo.compiler.interactive import (
    InteractiveCompile,
    make_workdir,
    remove_workdir,
    run_compile,
)
from mlgo.protocol import FeatureValues, Header
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError, ProtocolError

# A heuristic maps one observation's features to an action; None stands for "compile without
# ML at all".
Heuristic = Callable[[FeatureValues], int]


@dataclass
class Measurement:
    """The objective for one module (smaller is better) and its per-function breakdown."""

    total: float
    per_function: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"total": self.total, "per_function": self.per_function}

    @classmethod
    def from_json(cls, d: dict) -> Measurement:
        return cls(float(d["total"]), {k: float(v) for k, v in d.get("per_function", {}).items()})


def relative_improvement(default: float, policy: float) -> float:
    """(default - policy) / default: positive when the policy beats the default."""
    if default <= 0:
        return 0.0 if policy <= 0 else -float(policy)
    return (default - policy) / default


# A tiny module with one call site, compiled once per process to read the compiler's header:
# feature lists come from the compiler itself, so they cannot drift from a hard-coded copy.
_PROBE_IR = """
define internal i32 @square(i32 %x) {
  %r = mul i32 %x, %x
  ret i32 %r
}
define i32 @probe(i32 %y) {
  %a = call i32 @square(i32 %y)
  %b = add i32 %a, %y
  ret i32 %b
}
"""


class Problem(ABC):
    name: str
    objective: str  # what Measurement.total counts, for reports ("text bytes", "spill cost")
    advice_name: str  # the advice tensor the compiler expects back
    required_features: tuple[str, ...]  # what the heuristics and rewards read
    measurement_version = ""  # changes when measure() records more: old cached baselines miss it

    def __init__(self, opt_level: str | None, extra_flags: tuple[str, ...] = ()) -> None:
        self.opt_level = opt_level
        self.extra_flags = tuple(extra_flags)
        # For a variant whose observations are not what a policy sees in release (e.g. a
        # feature overwritten): the plain problem, on which recorded episodes are replayed.
        self.plain: Problem | None = None

    @property
    def variant(self) -> str:
        """Names a compile mode that changes the compiler's header (part of the probe's key)."""
        return ""

    @property
    def overwritten_features(self) -> tuple[str, ...]:
        """Features this compile mode sends with something else in them."""
        return ()

    def for_policy(self, builtin: str | None) -> Problem:
        """This problem as the built-in policy `builtin` (None: a policy directory) needs it
        compiled; a heuristic that reads something the compiler only sends on request gets a
        copy that requests it."""
        return self

    # -- problem-specific ------------------------------------------------------------------
    @abstractmethod
    def channel_flags(self, channel_base: Path) -> list[str]:
        """Flags that switch the compiler's advisor to interactive mode on this channel."""

    def measurement_flags(self, workdir: Path, cc1: bool) -> list[str]:
        """Extra flags the measurement needs (e.g. remarks output); `cc1` when the module's
        recorded arguments are cc1 arguments rather than driver arguments."""
        return []

    @abstractmethod
    def measure(self, workdir: Path, name: str) -> Measurement:
        """Read the objective from the outputs of a compile in `workdir`."""

    def reward(self, policy: Measurement, default: Measurement) -> float:
        return relative_improvement(default.total, policy.total)

    @abstractmethod
    def heuristics(self) -> dict[str, Heuristic | None]:
        """Built-in policies by name; 'default' (None: no ML) is always present."""

    @abstractmethod
    def default_proxy(self, obs: FeatureValues) -> int:
        """An observation-level imitation of the default heuristic (the warm-start label)."""

    def check_header(self, header: Header, source: str) -> None:
        """Raise if the compiler's header lacks what this problem relies on."""
        missing = [n for n in self.required_features if n not in set(header.feature_names)]
        if missing:
            raise ProtocolError(f"{source}: {self.name} features {missing} missing from the header")
        if header.advice is None or header.advice.name != self.advice_name:
            raise ProtocolError(f"{source}: expected advice {self.advice_name!r}, header has "
                                f"{header.advice}")

    # -- shared ----------------------------------------------------------------------------
    def check_corpus(self, corpus: Corpus) -> None:
        """Raise if the corpus is not IR of the build this problem compiles: a problem that
        replaces the level (opt_level) needs IR emitted at that level (problems/frontend.py)."""
        if self.opt_level is not None:
            from mlgo.problems.frontend import check_frontend_level

            check_frontend_level(corpus, self.opt_level, self.name)

    def compile_argv(self, module: Module, workdir: Path, channel_base: Path | None) -> list[str]:
        compiler = toolchain.clang().path
        cc1 = module.args()[:1] == ["-cc1"]
        extra = [*self.extra_flags, *self.measurement_flags(workdir, cc1)]
        if channel_base is not None:
            extra += self.channel_flags(channel_base)
        args = module.compile_args(opt_level=self.opt_level, extra=extra)
        return [compiler, *args, "-o", str(workdir / "out.o")]

    def baseline_args(self, module: Module) -> list[str]:
        """The part of the default compile's command that identifies it (no temp paths)."""
        return [*module.compile_args(opt_level=self.opt_level, extra=self.extra_flags)]

    def compile_default(self, module: Module, *, timeout: float | None = None) -> Measurement:
        workdir = make_workdir()
        try:
            argv = self.compile_argv(module, workdir, None)
            kw = {"timeout": timeout} if timeout else {}
            run_compile(argv, module.name, workdir, **kw)
            return self.measure(workdir, module.name)
        finally:
            remove_workdir(workdir)

    def baseline(self, module: Module, cache: BaselineCache | None = None) -> Measurement:
        """The default heuristic's measurement, compiled once and cached on disk."""
        cache = cache or BaselineCache()
        key = baseline_key(self.name + self.measurement_version, module.bc_path, self.baseline_args(module),
                           toolchain.compiler_id())
        hit = cache.get(key)
        if hit is not None:
            return Measurement.from_json(hit)
        m = self.compile_default(module)
        cache.put(key, m.to_json())
        return m

    def header(self) -> Header:
        """The compiler's feature header for this problem (probed once per process)."""
        return _probe_header(self)

    def heuristic(self, name: str) -> Heuristic | None:
        table = self.heuristics()
        if name not in table:
            from mlgo.policies.shipped import policy_choices

            raise MlgoError(f"unknown policy {name!r} for problem {self.name}: give "
                            f"{policy_choices(table)}")
        return table[name]


def _probe_header(problem: Problem) -> Header:
    key = (problem.name, toolchain.compiler_id(), problem.opt_level or "", problem.variant)
    if key in _HEADERS:
        return _HEADERS[key]
    workdir = make_workdir("mlgo-probe-")
    try:
        src = workdir / "probe.ll"
        src.write_text(_PROBE_IR)
        # -O2: at -O0 neither the ML inliner nor the greedy allocator runs.
        (workdir / "probe.cmd").write_bytes(b"-c\0-O2")
        module = Module("probe", workdir)
        argv = problem.compile_argv(module, workdir, workdir / "channel")
        # compile_args names probe.bc; the probe is textual IR, which clang reads the same way.
        argv = [str(src) if a == str(module.bc_path) else a for a in argv]
        with InteractiveCompile(argv, "<header probe>", workdir,
                                channel_base=workdir / "channel", timeout=60) as c:
            header = c.header
            while (obs := c.next_observation()) is not None:
                c.answer(problem.default_proxy(obs.features))
            c.finish()
    finally:
        remove_workdir(workdir)
    problem.check_header(header, "compiler header")
    _HEADERS[key] = header
    return header


_HEADERS: dict[tuple[str, str, str, str], Header] = {}
