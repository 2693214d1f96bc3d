"""Register-allocation eviction: when the greedy allocator finds no free register, it asks
which of up to 32 candidate registers to evict (or position 32: evict nothing). The objective
is the block-frequency-weighted spill, reload and copy cost from the allocator's remarks, or,
given a profile (`regalloc.RegallocEviction.profile`), the instructions the module's code would
execute on the profiled run (mlgo/problems/regalloc/profile.py), which tracks run time where the
remark cost does not (benchmarks/RESULTS.md, "Regalloc")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gin

from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.policies import builtins
from mlgo.problems.base import Heuristic, Measurement, Problem
from mlgo.protocol import FeatureValues, Header, llvm19
from mlgo_base.errors import MlgoError, ProtocolError

ADVICE = llvm19.ADVICE["regalloc"]
NUM_CANDIDATES = 33
NO_EVICTION = 32  # the live range being allocated: evict nothing


# Defined once, in mlgo/policies/builtins.py, for Python and C. The proxy imitates greedy's
# default eviction (within 0.2% of the real default's spill cost on lua: benchmarks/RESULTS.md,
# "The environment measures the real build").
eviction_cost_proxy = builtins.heuristic("regalloc", "proxy")
# LLVM's own default advisor, restated over the features (closer to the default than the proxy).
default_rule = builtins.heuristic("regalloc", "default-rule")
never_evict = builtins.heuristic("regalloc", "never")
first_valid = builtins.heuristic("regalloc", "first-valid")


@gin.configurable(module="regalloc")
class RegallocEviction(Problem):
    name = "regalloc"
    objective = "spill cost"
    advice_name = ADVICE
    required_features = ("mask", "use_def_density")

    def __init__(self, opt_level: str | None = None, extra_flags: tuple[str, ...] = (),
                 profile: str | None = None) -> None:
        # None keeps each module's own optimization level (as its project built it).
        super().__init__(opt_level, extra_flags)
        self.profile_path = profile
        self.profile = None
        if profile:
            from mlgo.problems.regalloc.profile import load_profile

            self.profile = load_profile(profile)
            self.objective = "executed instructions (block trace)"
            # Cached baselines of the remark objective (or another profile) are not this one.
            self.measurement_version = "trace:" + hashlib.sha256(
                Path(profile).read_bytes()).hexdigest()[:16]

    def channel_flags(self, channel_base: Path) -> list[str]:
        return [
            "-mllvm", "-regalloc-enable-advisor=release",
            "-mllvm", f"-regalloc-evict-interactive-channel-base={channel_base}",
        ]

    def measurement_flags(self, workdir: Path, cc1: bool) -> list[str]:
        out = str(workdir / "remarks.yaml")
        # Block IDs and addresses in the object, for the trace cost; the code is the same.
        bb = ["-fbasic-block-address-map"] if self.profile is not None else []
        if cc1:
            return ["-opt-record-file", out, "-opt-record-passes", "regalloc",
                    "-opt-record-format", "yaml", *bb]
        return ["-fsave-optimization-record=yaml", f"-foptimization-record-file={out}",
                "-foptimization-record-passes=regalloc", *bb]

    def baseline_args(self, module) -> list[str]:
        # Remarks flags name a temp path; leave them out of the cache key.
        return super().baseline_args(module) + ["<regalloc remarks>"]

    def measure(self, workdir: Path, name: str) -> Measurement:
        if self.profile is not None:
            from mlgo.problems.regalloc.profile import object_trace_cost

            if name not in self.profile:
                raise MlgoError(f"{name}: not in the profile {self.profile_path} (train with "
                                "the trace reward on modules of the profiled programs only)")
            per_function = object_trace_cost(workdir / "out.o", self.profile[name])
            return Measurement(sum(per_function.values()), per_function)
        costs = parse_regalloc_remarks(workdir / "remarks.yaml")
        return Measurement(costs.total, costs.per_function)

    def heuristics(self) -> dict[str, Heuristic | None]:
        return {
            "default": None,
            "proxy": eviction_cost_proxy,
            "default-rule": default_rule,
            "never": never_evict,
            "first-valid": first_valid,
        }

    def build_network(self, header: Header, vocab_dir: Path | None):
        """A fresh policy network for this header (hyperparameters from gin)."""
        from mlgo.problems.regalloc.network import build_network

        return build_network(header, vocab_dir)

    def default_proxy(self, obs: FeatureValues) -> int:
        return eviction_cost_proxy(obs)

    def check_header(self, header: Header, source: str) -> None:
        super().check_header(header, source)
        mask = next(f for f in header.features if f.name == "mask")
        if mask.num_elements != NUM_CANDIDATES:
            raise ProtocolError(f"{source}: mask has {mask.num_elements} positions, expected 33")
