"""The built-in heuristics, each defined once as a composition of mlgo/policies/ops.py: the same
graph answers in Python (training labels, `mlgo eval --policy cost-threshold`), in TensorFlow,
and as the C of the inliner plugin and mlgo-clang (mlgo/policies/c_source.py).

    graph(problem, name, features=None) -> Graph    inputs: `features` (default: LLVM 19's)
    heuristic(problem, name) -> obs -> int           the numpy backend, one observation

`llvm-default` is not here: it is no rule but LLVM's own decision, read back from the compiler
(mlgo/problems/inlining/problem.py), and plain clang serves it.

Importing this module imports no numpy (the operations load when a graph is built): the
compiler wrapper's per-compile path reads RULES for the heuristics' names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlgo.protocol.llvm19 import ADVICE, FEATURES
from mlgo_base.errors import MlgoError

if TYPE_CHECKING:
    from mlgo.policies.ops import Graph
    from mlgo.protocol import FeatureValues


def cost_threshold(g: Graph) -> int:
    """The default inliner's rule: inline when the estimated cost is below the threshold."""
    return g.apply("less", g.input("cost_estimate"), g.input("threshold"))


def eviction_proxy(g: Graph) -> int:
    """Greedy's default eviction, imitated: among the evictable candidates, the lowest
    `use_def_density` (the first on ties, a NaN first of all, as numpy's argmin), taken if it is
    lower than that of the range being allocated (the last position) or if evicting nothing is
    masked (then LLVM must evict someone); else the last position, evicting nothing."""
    mask, weight = g.input("mask"), g.input("use_def_density")
    k = g.nodes[mask].size - 1  # the range being allocated: evicting it evicts nothing
    last = g.const(k)
    best = g.index(weight, "min", mask, default=k, stop=k)
    lighter = g.apply("less", g.take(weight, best), g.take(weight, last))
    return g.apply("where", g.take(mask, last), g.apply("where", lighter, best, last), best)


def default_rule(g: Graph) -> int:
    """LLVM 19's DefaultEvictionAdvisor restated over the features interactive mode sends (it
    sends no default choice). A candidate is eligible if every range it evicts is lighter than
    the one being allocated (max `use_def_density` below the last position's), or if evicting
    nothing is masked (an unspillable range: its evictions are urgent). Among the eligible the
    default takes the lowest (broken hints, weight), the first on ties, and stops at an
    eligible hint: as hints lead the allocation order, a first eligible position that is a hint
    is taken. None eligible: evict nothing. Not visible in the features: the cheaper-register
    retry (no broken hints allowed, unused callee-saved registers skipped)."""
    mask, weight = g.input("mask"), g.input("use_def_density")
    broken, hint = g.input("nr_broken_hints"), g.input("is_hint")
    k = g.nodes[mask].size - 1
    last, zero = g.const(k), g.const(0)
    lighter = g.apply("where", g.apply("less", weight, g.take(weight, last)), mask, zero)
    eligible = g.apply("where", g.take(mask, last), lighter, mask)
    fewest = g.take(broken, g.index(broken, "min", eligible, default=k, stop=k))
    eligible_fewest = g.apply("where", g.apply("less", fewest, broken), zero, eligible)
    best = g.index(weight, "min", eligible_fewest, default=k, stop=k)
    first = g.index(eligible, "first", eligible, default=k, stop=k)
    return g.apply("where", g.take(hint, first), first, best)


def never_evict(g: Graph) -> int:
    """Evict nothing when allowed, else the last valid candidate."""
    mask = g.input("mask")
    k = g.nodes[mask].size - 1
    last = g.const(k)
    return g.apply("where", g.take(mask, last), last, g.index(mask, "last", mask, default=k))


def first_valid(g: Graph) -> int:
    mask = g.input("mask")
    return g.index(mask, "first", mask, default=g.nodes[mask].size - 1)


RULES: dict[str, dict[str, Callable[[Graph], int]]] = {
    "inlining": {"cost-threshold": cost_threshold, "never": lambda g: g.const(0),
                 "always": lambda g: g.const(1)},
    "regalloc": {"proxy": eviction_proxy, "default-rule": default_rule, "never": never_evict, "first-valid": first_valid},
}


def graph(problem: str, name: str, features: Sequence[Any] | None = None) -> Graph:
    """The heuristic `name` declaring `features` ((name, type, elements), TensorSpecs, or for
    inlining plain names of int64 scalars) as its inputs; it reads only those it needs."""
    from mlgo.policies.ops import Graph

    rules = RULES.get(problem, {})
    if name not in rules:
        raise MlgoError(f"no built-in {problem} heuristic {name!r}; choose one of {', '.join(rules)}")
    inputs = [(f, "int64_t", 1) if isinstance(f, str) else f
              for f in (FEATURES[problem] if features is None else features)]
    g = Graph(inputs)
    g.outputs[ADVICE[problem]] = rules[name](g)
    return g


@functools.cache
def heuristic(problem: str, name: str) -> Callable[[FeatureValues], int]:
    """The heuristic as a Python function of one observation (feature name -> array)."""
    from mlgo.policies.ops import run_numpy

    g, advice = graph(problem, name), ADVICE[problem]

    def act(obs: FeatureValues) -> int:
        return int(run_numpy(g, obs, {}, (advice,))[advice].reshape(-1)[0])

    act.__name__ = act.__qualname__ = f"{problem}_{name.replace('-', '_')}"
    act.__doc__ = RULES[problem][name].__doc__
    return act
