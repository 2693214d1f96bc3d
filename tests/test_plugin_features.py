"""The inliner plugin's own features: each one's value on small hand-written IR or C with a known
answer, read through the plugin's training channel (`--env plugin`), and the documentation's
table against what the plugin sends."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import llvm_tool

from mlgo.compiler import plugin_env
from mlgo.compiler.interactive import InteractiveCompile, make_workdir, remove_workdir
from mlgo.protocol import llvm19
from mlgo.serving import plugin

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def channel_plugin() -> Path:
    return plugin.channel_plugin()


Site = tuple[plugin_env.CallSite, dict[str, int]]


def decisions(so: Path, source: str, suffix: str, answer: Callable[[dict[str, int]], int],
              flags: tuple[str, ...] = ()) -> list[Site]:
    """(call site, features) of every decision of `clang-19 -Oz` on `source` through the plugin's
    channel, answering each with `answer(features)`."""
    workdir = make_workdir()
    try:
        src = workdir / f"m{suffix}"
        src.write_text(source)
        base = workdir / "channel"
        argv = [llvm_tool("clang"), "-Oz", *flags, "-c", str(src), "-o", str(workdir / "out.o"),
                *plugin_env.channel_flags(so, base)]
        sites: list[Site] = []
        with InteractiveCompile(argv, src.name, workdir, channel_base=base, timeout=120) as c:
            while (obs := c.next_observation()) is not None:
                features = {n: int(np.asarray(v).reshape(-1)[0]) for n, v in obs.features.items()}
                sites.append((plugin_env.call_site(obs.context), features))
                c.answer(answer(features))
            c.finish()
        return sites
    finally:
        remove_workdir(workdir)


def always(_: dict[str, int]) -> int:
    return 1


def never(_: dict[str, int]) -> int:
    return 0


LINKONCE_TWICE = """
$f = comdat any
define linkonce_odr i32 @f(i32 %x) comdat {
  %a = mul i32 %x, %x
  %b = add i32 %a, 1
  ret i32 %b
}
define i32 @g(i32 %y) {
  %1 = call i32 @f(i32 %y)
  %2 = call i32 @f(i32 %1)
  ret i32 %2
}
"""


def test_a_linkonce_odr_callee_called_twice(channel_plugin: Path) -> None:
    (s1, f1), (s2, f2) = decisions(channel_plugin, LINKONCE_TWICE, ".ll", always)
    assert (s1.caller, s1.callee, s1.ordinal) == ("g", "f", 0)
    assert (s2.caller, s2.callee, s2.ordinal) == ("g", "f", 1)
    for f in (f1, f2):
        assert f["callee_linkage"] == 2 and f["callee_in_comdat"] == 1
        assert f["callee_discardable"] == 1 and f["callee_inline_hint"] == 0
        assert f["callee_instruction_count"] == 3 and f["callee_block_count"] == 1
        assert f["callee_block_count"] == f["callee_basic_block_count"]
    assert (f1["callee_uses"], f1["callee_call_sites"], f1["callsite_is_last_use"]) == (2, 2, 0)
    # The first call was inlined: the second is the callee's last use.
    assert (f2["callee_uses"], f2["callee_call_sites"], f2["callsite_is_last_use"]) == (1, 1, 1)
    # g: call, call, ret; then mul, add in place of the first call.
    assert (f1["caller_instruction_count"], f2["caller_instruction_count"]) == (3, 4)


def test_uses_stay_when_nothing_is_inlined(channel_plugin: Path) -> None:
    (_, f1), (_, f2) = decisions(channel_plugin, LINKONCE_TWICE, ".ll", never)
    assert (f2["callee_uses"], f2["callsite_is_last_use"]) == (2, 0)
    assert f2["caller_instruction_count"] == f1["caller_instruction_count"] == 3


LOOPS = """
static int work(int x) { return x * 3 + (x >> 2); }
int grid(int *a, int n, int m) {
  int s = work(n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++)
      a[i * m + j] = work(a[i * m + j]);
  return s;
}
"""


def test_loop_depth_and_relative_frequency(channel_plugin: Path) -> None:
    sites = {f["callsite_loop_depth"]: f for _, f in decisions(channel_plugin, LOOPS, ".c", never)}
    assert set(sites) == {0, 2}
    assert sites[0]["callsite_relative_freq_x1000"] == 1000  # in the entry block
    # Inside two loops: many times the entry's frequency (LLVM's static estimate).
    assert sites[2]["callsite_relative_freq_x1000"] > 10 * 1000
    assert sites[2]["callee_max_loop_depth"] == 0


RECURSION = """
static int is_even(int n);
static int is_odd(int n) { return n == 0 ? 0 : is_even(n - 1); }
static int is_even(int n) { return n == 0 ? 1 : is_odd(n - 1); }
static inline int plain(int x) { return x + 7; }
int external_one(int x) { return x - 1; }
int api(int n) { return is_even(n) + plain(n) + external_one(n); }
"""

# LLVM's cost analysis refuses a callee it sees calling itself before the policy is asked; with
# n = 0 the recursive call is on a path it proves dead. (`sub` after the call keeps tail call
# elimination from turning the recursion into a loop.)
SELF_RECURSIVE = """
define linkonce_odr i32 @r(i32 %n) {
entry:
  %c = icmp eq i32 %n, 0
  br i1 %c, label %done, label %rec
rec:
  %m = sub i32 %n, 1
  %x = call i32 @r(i32 %m)
  %y = sub i32 %n, %x
  ret i32 %y
done:
  ret i32 0
}
define i32 @top() {
  %v = call i32 @r(i32 0)
  ret i32 %v
}
"""


def test_a_self_recursive_callee(channel_plugin: Path) -> None:
    [(site, f)] = decisions(channel_plugin, SELF_RECURSIVE, ".ll", never)
    assert (site.caller, site.callee) == ("top", "r")
    assert f["callee_is_recursive"] == 1 and f["callee_in_caller_scc"] == 0
    assert f["callee_uses"] == 2 and f["callee_call_sites"] == 2


def test_recursion_scc_hint_and_linkage(channel_plugin: Path) -> None:
    sites = decisions(channel_plugin, RECURSION, ".c", never)
    by_pair = {(s.caller, s.callee): f for s, f in sites}
    assert by_pair["api", "is_even"]["callee_in_caller_scc"] == 0
    mutual = [f for (caller, callee), f in by_pair.items()
              if {caller, callee} == {"is_odd", "is_even"}]
    assert mutual and all(f["callee_in_caller_scc"] == 1 and f["callee_is_recursive"] == 0
                          for f in mutual)
    assert by_pair["api", "plain"]["callee_inline_hint"] == 1
    assert by_pair["api", "plain"]["callee_linkage"] == 1  # static: internal
    assert by_pair["api", "external_one"]["callee_linkage"] == 0
    assert by_pair["api", "external_one"]["callee_discardable"] == 0
    assert by_pair["api", "external_one"]["callee_inline_hint"] == 0


def test_debug_location_names_the_call(channel_plugin: Path) -> None:
    source = "static int sq(int x) { return x * x; }\nint f(int y) {\n  return sq(y) + 1;\n}\n"
    [(site, _)] = decisions(channel_plugin, source, ".c", never, flags=("-g",))
    assert re.fullmatch(r".*m\.c:3:10", site.loc), site.loc
    [(site, _)] = decisions(channel_plugin, source, ".c", never)
    assert site.loc == ""


def test_llvm_features_come_first_then_the_plugins(channel_plugin: Path) -> None:
    [(_, features)] = decisions(channel_plugin, "static int sq(int x) { return x * x; }\n"
                                "int f(int y) { return sq(y); }\n", ".c", never)
    assert list(features) == [*llvm19.INLINE_FEATURES, *plugin_env.PLUGIN_FEATURES]


def test_the_documentation_lists_every_feature() -> None:
    doc = (ROOT / "docs" / "plugin-features.md").read_text().split("## The call site's identity")[0]
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", doc, re.MULTILINE)
    assert documented == list(plugin_env.PLUGIN_FEATURES)
    header = (ROOT / "mlgo" / "serving" / "plugin_features.h").read_text()
    assert re.findall(r"^  X\(([a-z0-9_]+)\)", header, re.MULTILINE) == list(plugin_env.PLUGIN_FEATURES)


def test_a_context_that_is_not_a_call_site_is_one_error() -> None:
    from mlgo_base.errors import ProtocolError

    assert plugin_env.call_site('{"caller":"a","callee":"b","ordinal":2}') == \
        plugin_env.CallSite("a", "b", 2, "")
    for bad in ("", "main", '{"caller":"a"}', '{"caller":"a","callee":"b","ordinal":"x"}'):
        with pytest.raises(ProtocolError, match="not a call site"):
            plugin_env.call_site(bad)
