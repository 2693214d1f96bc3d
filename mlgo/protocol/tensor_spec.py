"""Tensor specs as LLVM names them in the training-log header (see LLVM's TensorSpec)."""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# LLVM's TensorType spellings -> little-endian numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "float": np.dtype("<f4"),
    "double": np.dtype("<f8"),
    "int8_t": np.dtype("i1"),
    "uint8_t": np.dtype("u1"),
    "int16_t": np.dtype("<i2"),
    "uint16_t": np.dtype("<u2"),
    "int32_t": np.dtype("<i4"),
    "uint32_t": np.dtype("<u4"),
    "int64_t": np.dtype("<i8"),
    "uint64_t": np.dtype("<u8"),
}
_NAMES = {v: k for k, v in DTYPES.items()}
# The same types as struct formats, for one-element tensors (advice) encoded without numpy.
_STRUCT = {"float": "<f", "double": "<d", "int8_t": "<b", "uint8_t": "<B", "int16_t": "<h",
           "uint16_t": "<H", "int32_t": "<i", "uint32_t": "<I", "int64_t": "<q", "uint64_t": "<Q"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: str
    shape: tuple[int, ...]
    port: int = 0

    def __post_init__(self) -> None:
        if self.type not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unknown element type {self.type!r}")
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: bad shape {self.shape!r}")

    @functools.cached_property
    def dtype(self) -> np.dtype:
        return DTYPES[self.type]

    @functools.cached_property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @functools.cached_property
    def num_bytes(self) -> int:
        return self.num_elements * self.dtype.itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        if len(raw) != self.num_bytes:
            raise ValueError(f"tensor {self.name!r}: expected {self.num_bytes} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape).copy()

    def encode(self, value: Any) -> bytes:
        arr = np.asarray(value, dtype=self.dtype)
        if arr.size != self.num_elements:
            raise ValueError(
                f"tensor {self.name!r}: expected {self.num_elements} elements of shape "
                f"{self.shape}, got shape {arr.shape}"
            )
        return arr.reshape(self.shape).tobytes()

    @functools.cached_property
    def _scalar_struct(self) -> struct.Struct | None:
        return struct.Struct(_STRUCT[self.type]) if self.num_elements == 1 else None

    def encode_scalar(self, value: Any) -> bytes:
        """encode([value]) for a one-element tensor, about 15x cheaper (one per decision)."""
        packer = self._scalar_struct
        if packer is not None:
            try:
                return packer.pack(value)
            except struct.error:
                pass  # out of range or wrong type: let encode() say so
        return self.encode([value])

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "port": self.port, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        try:
            return cls(
                name=str(d["name"]),
                type=str(d["type"]),
                shape=tuple(int(x) for x in d["shape"]),
                port=int(d.get("port", 0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad tensor spec {d!r}: {e}") from e

    @classmethod
    def for_dtype(cls, name: str, dtype: np.dtype | str, shape: tuple[int, ...]) -> TensorSpec:
        return cls(name=name, type=_NAMES[np.dtype(dtype).newbyteorder("<")], shape=shape)
