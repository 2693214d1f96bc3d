"""LLVM's training-log / interactive wire protocol: the one place that reads and writes it.

    mlgo.protocol.tensor_spec   TensorSpec, DTYPES
    mlgo.protocol.training_log  the header, observations and the log reader and writer
    mlgo.protocol.channel       the interactive channel's FIFOs
    mlgo.protocol.llvm19        LLVM 19's advice names and feature lists (pure data)
    mlgo.protocol.llvm22        LLVM 22's, and what it sends beyond LLVM 19 (pure data)
    for_llvm(major)             the data module of one LLVM version

The names below are loaded on first use (PEP 562), so that importing `mlgo.protocol.llvm19`
on the compiler wrapper's per-compile path does not import numpy."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_SUBMODULE = {
    **dict.fromkeys(("DTYPES", "TensorSpec"), "tensor_spec"),
    **dict.fromkeys(("ByteSource", "Context", "Event", "Features", "FeatureValues", "Header",
                     "LogReader", "LogWriter", "Observation", "Outcome", "StreamSource",
                     "parse_header", "stack_features"), "training_log"),
}
__all__ = list(_SUBMODULE)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module 'mlgo.protocol' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlgo.protocol.{_SUBMODULE[name]}"), name)


def for_llvm(major: int) -> ModuleType:
    """mlgo.protocol.llvm19 or mlgo.protocol.llvm22: what that LLVM version sends."""
    if major not in (19, 22):
        raise ValueError(f"no protocol module for LLVM {major}")
    return importlib.import_module(f"mlgo.protocol.llvm{major}")
