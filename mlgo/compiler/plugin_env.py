"""The inliner plugin as the environment (`--env plugin`): clang-19 loads mlgo's inliner plugin,
whose advisor sends LLVM's 38 features, the plugin's own (docs/plugin-features.md) and each call
site's identity over the same FIFO protocol interactive mode speaks, and takes the host's answer.

    clang-19 -Oz ... -fplugin=SO -fpass-plugin=SO -mllvm -mlgo-plugin-channel=BASE

(-fplugin loads the plugin before clang reads -mllvm, so that clang knows the plugin's option.)
InteractiveCompile, FifoChannel and LogReader serve it unchanged: the identity arrives as a
`{"context": ...}` line before each observation, so `Observation.context` holds it, and
`call_site` reads it. The plugin is the build with no policy (mlgo.serving.plugin.channel_plugin).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlgo.protocol import FeatureValues
from mlgo_base.errors import ProtocolError

ENVIRONMENTS = ("interactive", "plugin")
DEFAULT_ENVIRONMENT = "interactive"

# The plugin's own features, in the order it sends them after LLVM's (plugin_features.h).
PLUGIN_FEATURES: tuple[str, ...] = (
    "callee_linkage", "callee_in_comdat", "callee_discardable", "callee_inline_hint",
    "callee_uses", "callee_call_sites", "callsite_is_last_use", "caller_instruction_count",
    "callee_instruction_count", "callee_block_count", "callee_max_loop_depth",
    "callsite_loop_depth", "callsite_relative_freq_x1000", "callee_is_recursive",
    "callee_in_caller_scc",
)
DEFAULT_DECISION = "inlining_default"


def channel_flags(plugin: str | Path, channel_base: Path, *, include_default: bool = False) -> list[str]:
    """The clang driver flags that make `plugin` the inliner's advisor, deciding on this channel."""
    flags = [f"-fplugin={plugin}", f"-fpass-plugin={plugin}",
             "-mllvm", f"-mlgo-plugin-channel={channel_base}"]
    if include_default:
        flags += ["-mllvm", "-mlgo-plugin-include-default"]
    return flags


def for_cc1(argv: Sequence[str]) -> list[str]:
    """`argv` for a module recorded as cc1 arguments: cc1 loads a plugin with `-load`."""
    out: list[str] = []
    for a in argv:
        out += ["-load", a[len("-fplugin="):]] if a.startswith("-fplugin=") else [a]
    return out


def from_plugin(obs: FeatureValues) -> bool:
    """Whether an observation came from the plugin (interactive mode sends none of its features)."""
    return PLUGIN_FEATURES[0] in obs


def llvm_default(obs: FeatureValues) -> int:
    """LLVM's own decision for the call site, as the plugin sends it with include-default."""
    if DEFAULT_DECISION not in obs:
        raise ProtocolError("the llvm-default policy needs the compiler's default decisions: the "
                            "plugin sends them with -mllvm -mlgo-plugin-include-default")
    return int(obs[DEFAULT_DECISION].item(0))


@dataclass(frozen=True)
class CallSite:
    """Which call site a decision is about: caller and callee names, how many decisions about
    the same pair came before it in the module, and `file:line:column` when known."""

    caller: str
    callee: str
    ordinal: int
    loc: str = ""


def call_site(context: str) -> CallSite:
    """The call site the plugin names in an observation's context line; ProtocolError if the
    context is not one."""
    try:
        d = json.loads(context)
    except (json.JSONDecodeError, TypeError):
        d = None
    if (not isinstance(d, dict) or not isinstance(d.get("caller"), str)
            or not isinstance(d.get("callee"), str) or not isinstance(d.get("ordinal"), int)
            or not isinstance(d.get("loc", ""), str)):
        raise ProtocolError(f"not a call site's identity (the plugin's context line): {context[:200]!r}")
    return CallSite(d["caller"], d["callee"], d["ordinal"], d.get("loc", ""))
