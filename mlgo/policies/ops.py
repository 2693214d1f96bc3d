"""Policies as data: a Graph is a composition of a small set of operations over named inputs,
and each operation is implemented once per backend, below, in three sections:

    run_numpy(graph, batch, params)  training and evaluation (workers: no TensorFlow)
    run_tf(graph, batch, params)     training gradients, SavedModel / XLA AOT export
    c_function(graph, params, name)  the C the inliner plugin and the regalloc host link

A graph declares its inputs (name, C type, element count), as LLVM's release-mode model does,
and reads them by name. Every value is, per observation, a 2-D array [rows, cols] of one dtype
(i64, f32 or f64); numpy and TensorFlow add a leading batch dimension. An input is a column
[elements, 1]. `outputs` names the values a caller may ask for: a policy has its decision under
LLVM's advice name (an i64 [1, 1]) and, if it is a network, its `logits`.

The operations and their exact arithmetic (what makes the three backends agree bit for bit):

    input(name)              the declared input, as [elements, 1] in its own type
    const(v, dtype)          [1, 1]
    stack(names, rows)       f64 [rows, len(names)]: column j is input j, 1-element inputs
                             repeated over the rows
    cast_f32(x)  nan_to_zero(x)  clip(x, lo, hi)  slog(x, cols)  sqrt(x)  relu(x)  tanh(x)
    mul(a, b)  less(a, b)  where(c, a, b)
                             elementwise; an operand of shape [1, 1] is broadcast; slog is
                             sign(x) log1p|x| on the columns `cols` selects (all by default);
                             tanh is taken in f64; less gives i64 0/1
    quantile(x, bounds)      f32 #{i : bounds[c][i] <= x} / max(len(bounds[c]), 1) per column c
    interleave(a, b, ...)    [rows, cols * k]: column c * k + i is operand i's column c
    dense(x, w, b)           f32 x [rows, n] @ w [n, m] + b, products summed in f64, then f32
    index(x, mode, mask, default, stop)
                             i64 [1, 1]: the position, in x's row-major order and among the
                             first `stop` ones whose mask is nonzero, of the first maximum
                             ("max") or minimum ("min"), a NaN counting as the extreme (numpy's
                             argmax/argmin), or the first ("first") or last ("last") allowed
                             position; `default` when no position is allowed
    take(x, i)               [1, 1]: x at position i (row-major)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgo.errors import MlgoError

INPUT_DTYPES = {"int64_t": "i64", "float": "f32", "double": "f64"}
C_TYPES = {"i64": "int64_t", "f32": "float", "f64": "double"}
NP_TYPES = {"i64": np.int64, "f32": np.float32, "f64": np.float64}


@dataclass(frozen=True)
class Input:
    name: str
    type: str  # the C type, as in the compiler's header
    elements: int


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple[int, ...]
    shape: tuple[int, int]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]


def as_input(spec: Any) -> Input:
    """An Input from a TensorSpec or a (name, type, elements) triple."""
    if isinstance(spec, tuple):
        return Input(*spec)
    return Input(spec.name, spec.type, spec.num_elements)


class Graph:
    """A policy's inputs, its operations in order, and its named outputs. Building checks
    shapes and dtypes, so every backend can trust them."""

    def __init__(self, inputs: Sequence[Any]) -> None:
        self.inputs = tuple(as_input(i) for i in inputs)
        self.input_index = {i.name: j for j, i in enumerate(self.inputs)}
        if len(self.input_index) != len(self.inputs):
            raise MlgoError(f"duplicate input names in {[i.name for i in self.inputs]}")
        bad = [f"{i.name} ({i.type})" for i in self.inputs if i.type not in INPUT_DTYPES]
        if bad:
            raise MlgoError(f"unsupported input type(s): {', '.join(bad)}")
        self.nodes: list[Node] = []
        self.outputs: dict[str, int] = {}

    def _add(self, op: str, args: Sequence[int], shape: tuple[int, int], dtype: str, **attrs) -> int:
        self.nodes.append(Node(op, tuple(args), shape, dtype, attrs))
        return len(self.nodes) - 1

    def _input(self, name: str) -> Input:
        if name not in self.input_index:
            raise MlgoError(f"the policy reads {name!r}, which it does not declare as an input")
        return self.inputs[self.input_index[name]]

    def input(self, name: str) -> int:
        i = self._input(name)
        return self._add("input", (), (i.elements, 1), INPUT_DTYPES[i.type], name=name)

    def const(self, value: float, dtype: str = "i64") -> int:
        return self._add("const", (), (1, 1), dtype, value=value)

    def stack(self, names: Sequence[str], rows: int) -> int:
        odd = [i.name for i in map(self._input, names) if i.elements not in (1, rows)]
        if odd:
            raise MlgoError(f"stack of {rows} rows: inputs {odd} have neither 1 nor {rows} elements")
        return self._add("stack", (), (rows, len(names)), "f64", names=tuple(names))

    def unary(self, op: str, x: int, **attrs) -> int:
        if op not in _UNARY_DTYPE:
            raise MlgoError(f"unknown operation {op!r}")
        n = self.nodes[x]
        want, out = _UNARY_DTYPE[op]
        if want and n.dtype not in want:
            raise MlgoError(f"{op} takes {'/'.join(want)}, not {n.dtype}")
        if op == "slog":
            cols = attrs.setdefault("cols", (True,) * n.shape[1])
            if len(cols) != n.shape[1]:
                raise MlgoError(f"slog: {len(cols)} column flags for {n.shape[1]} columns")
        return self._add(op, (x,), n.shape, out or n.dtype, **attrs)

    def _elementwise(self, op: str, args: Sequence[int], dtype: str) -> int:
        shapes = {self.nodes[a].shape for a in args} - {(1, 1)}
        if len(shapes) > 1:
            raise MlgoError(f"{op}: operand shapes {sorted(shapes)} differ")
        return self._add(op, args, shapes.pop() if shapes else (1, 1), dtype)

    def binary(self, op: str, a: int, b: int) -> int:
        da, db = self.nodes[a].dtype, self.nodes[b].dtype
        if op not in ("mul", "less") or da != db:
            raise MlgoError(f"{op} of {da} and {db}: not an operation of equal dtypes")
        return self._elementwise(op, (a, b), "i64" if op == "less" else da)

    def where(self, cond: int, a: int, b: int) -> int:
        if self.nodes[a].dtype != self.nodes[b].dtype:
            raise MlgoError("where: both branches need one dtype")
        return self._elementwise("where", (cond, a, b), self.nodes[a].dtype)

    def quantile(self, x: int, bounds: Sequence[np.ndarray]) -> int:
        n = self.nodes[x]
        if n.dtype != "f64" or len(bounds) != n.shape[1]:
            raise MlgoError(f"quantile needs f64 and one boundary list per column ({n.shape[1]})")
        return self._add("quantile", (x,), n.shape, "f32",
                         bounds=[np.asarray(b, np.float64) for b in bounds])

    def interleave(self, *xs: int) -> int:
        first = self.nodes[xs[0]]
        if any((self.nodes[x].shape, self.nodes[x].dtype) != (first.shape, first.dtype) for x in xs):
            raise MlgoError("interleave: operands differ in shape or dtype")
        return self._add("interleave", xs, (first.shape[0], first.shape[1] * len(xs)), first.dtype)

    def dense(self, x: int, w: str, b: str, n_out: int) -> int:
        n = self.nodes[x]
        if n.dtype != "f32":
            raise MlgoError(f"dense takes f32, not {n.dtype}")
        return self._add("dense", (x,), (n.shape[0], n_out), "f32", w=w, b=b, n_in=n.shape[1])

    def index(self, x: int, mode: str, mask: int | None = None, default: int = 0,
              stop: int | None = None) -> int:
        n = self.nodes[x]
        stop = n.size if stop is None else stop
        if mode not in ("max", "min", "first", "last") or not 0 < stop <= n.size:
            raise MlgoError(f"index: bad mode {mode!r} or stop {stop}")
        if mask is not None and self.nodes[mask].shape != n.shape:
            raise MlgoError("index: the mask has another shape than the values")
        args = (x,) if mask is None else (x, mask)
        return self._add("index", args, (1, 1), "i64", mode=mode, default=default, stop=stop)

    def take(self, x: int, i: int) -> int:
        if self.nodes[i].dtype != "i64" or self.nodes[i].shape != (1, 1):
            raise MlgoError("take: the position must be an i64 [1, 1]")
        return self._add("take", (x, i), (1, 1), self.nodes[x].dtype)


# op -> (operand dtypes it accepts or None for any, result dtype or None for the operand's)
_UNARY_DTYPE: dict[str, tuple[tuple[str, ...] | None, str | None]] = {
    "cast_f32": (None, "f32"), "nan_to_zero": (("f64", "f32"), None), "clip": (("f64", "f32"), None),
    "slog": (("f64",), None), "sqrt": (("f32",), None), "relu": (("f32",), None),
    "tanh": (("f32",), None),
}


# -- numpy ----------------------------------------------------------------------------------------
def _slog_np(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _stack_np(node: Node, graph: Graph, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    names, (rows, cols) = node.attrs["names"], node.shape
    if rows == 1:  # one row of scalars: one gather call for an observation from the compiler
        gather = getattr(batch, "gather", None)
        x = gather(names) if gather is not None else None
        if x is None:
            x = np.array([np.asarray(batch[n]).reshape(-1) for n in names])
        return np.asarray(x, np.float64).reshape(cols, -1).T.reshape(-1, 1, cols)
    first = np.asarray(batch[names[0]])
    out = np.empty((first.size // graph._input(names[0]).elements, rows, cols), np.float64)
    for j, name in enumerate(names):
        out[:, :, j] = np.asarray(batch[name]).reshape(len(out), -1)  # broadcasts 1 element
    return out


def _index_np(node: Node, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    stop, mode = node.attrs["stop"], node.attrs["mode"]
    x = x.reshape(len(x), -1)[:, :stop]
    valid = np.ones(x.shape, bool) if mask is None else mask.reshape(len(mask), -1)[:, :stop] != 0
    valid = np.broadcast_to(valid, x.shape)
    if mode in ("max", "min"):
        nan = valid & np.isnan(x)
        fill = -np.inf if mode == "max" else np.inf
        ext = np.where(valid & ~nan, x, fill)
        best = ext.max(axis=1, keepdims=True) if mode == "max" else ext.min(axis=1, keepdims=True)
        valid = np.where(nan.any(axis=1, keepdims=True), nan, valid & (x == best))
    pos = (np.argmax(valid, axis=1) if mode != "last"
           else valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1))
    return np.where(valid.any(axis=1), pos, node.attrs["default"]).astype(np.int64).reshape(-1, 1, 1)


def _take_np(x: np.ndarray, i: np.ndarray) -> np.ndarray:
    b = max(len(x), len(i))
    flat = np.broadcast_to(x.reshape(len(x), -1), (b, x[0].size))
    return np.take_along_axis(flat, np.broadcast_to(i.reshape(-1, 1), (b, 1)), axis=1).reshape(b, 1, 1)


def _np_op(node: Node, a: list[np.ndarray], graph: Graph, batch: Mapping[str, np.ndarray],
           params: Mapping[str, np.ndarray]) -> np.ndarray:
    op, at = node.op, node.attrs
    if op == "input":
        i = graph._input(at["name"])
        return np.asarray(batch[i.name], NP_TYPES[node.dtype]).reshape(-1, i.elements, 1)
    if op == "const":
        return np.full((1, 1, 1), at["value"], NP_TYPES[node.dtype])
    if op == "stack":
        return _stack_np(node, graph, batch)
    if op == "quantile":
        from mlgo.policies.vocab import QuantileTable

        table = at.setdefault("_table", QuantileTable(at["bounds"]))
        return table.numpy(a[0].reshape(-1, node.shape[1])).reshape(-1, *node.shape)
    if op == "interleave":
        return np.stack(a, axis=-1).reshape(-1, *node.shape)
    if op == "dense":
        w, b = (np.asarray(params[at[k]], np.float64) for k in ("w", "b"))
        return (a[0].astype(np.float64) @ w + b).astype(np.float32)
    if op == "index":
        return _index_np(node, a[0], a[1] if len(a) > 1 else None)
    if op == "take":
        return _take_np(*a)
    return _NUMPY_ELEMENTWISE[op](node, *a)


_NUMPY_ELEMENTWISE = {
    "cast_f32": lambda n, x: x.astype(np.float32),
    "nan_to_zero": lambda n, x: np.where(np.isnan(x), x.dtype.type(0), x),
    "clip": lambda n, x: np.clip(x, n.attrs["lo"], n.attrs["hi"]).astype(x.dtype),
    "slog": lambda n, x: np.where(np.array(n.attrs["cols"]), _slog_np(x), x),
    "sqrt": lambda n, x: np.sqrt(x),
    "relu": lambda n, x: np.maximum(x, x.dtype.type(0)),
    "tanh": lambda n, x: np.tanh(x.astype(np.float64)).astype(np.float32),
    "mul": lambda n, x, y: x * y,
    "less": lambda n, x, y: (x < y).astype(np.int64),
    "where": lambda n, c, x, y: np.where(c != 0, x, y),
}


def run_numpy(graph: Graph, batch: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
              ) -> dict[str, np.ndarray]:
    """Every output for a batch (inputs shaped [B, *shape] or, for one observation, [*shape]),
    each as [B, rows, cols]."""
    values: list[np.ndarray] = []
    for node in graph.nodes:
        values.append(_np_op(node, [values[i] for i in node.args], graph, batch, params))
    present = [i for i in graph.inputs if i.name in batch]
    b = np.asarray(batch[present[0].name]).size // present[0].elements if present else 1
    return {name: np.broadcast_to(values[i], (b, *values[i].shape[1:]))  # constants too
            for name, i in graph.outputs.items()}


# -- TensorFlow -----------------------------------------------------------------------------------
def _tf_op(tf: Any, node: Node, a: list[Any], graph: Graph, batch: Mapping[str, Any],
           params: Mapping[str, Any]) -> Any:
    op, at, (rows, cols) = node.op, node.attrs, node.shape
    if op == "input":
        i = graph._input(at["name"])
        return tf.reshape(tf.cast(batch[i.name], NP_TYPES[node.dtype]), [-1, i.elements, 1])
    if op == "const":
        return tf.constant(at["value"], NP_TYPES[node.dtype], shape=[1, 1, 1])
    if op == "stack":
        columns = []
        for name in at["names"]:
            v = tf.cast(tf.reshape(batch[name], [-1, graph._input(name).elements]), tf.float64)
            columns.append(tf.broadcast_to(v, [tf.shape(v)[0], rows]))
        return tf.stack(columns, axis=-1)
    if op == "quantile":
        from mlgo.policies.vocab import QuantileTable

        table = at.setdefault("_table", QuantileTable(at["bounds"]))
        return tf.reshape(table.tf(tf.reshape(a[0], [-1, cols])), [-1, rows, cols])
    if op == "interleave":
        return tf.reshape(tf.stack(a, axis=-1), [-1, rows, cols])
    if op == "dense":
        x = tf.cast(tf.reshape(a[0], [-1, at["n_in"]]), tf.float64)
        y = tf.matmul(x, tf.cast(params[at["w"]], tf.float64)) + tf.cast(params[at["b"]], tf.float64)
        return tf.reshape(tf.cast(y, tf.float32), [-1, rows, cols])
    if op == "index":
        return _index_tf(tf, node, a[0], a[1] if len(a) > 1 else None)
    if op == "take":
        x, i = a
        b = tf.maximum(tf.shape(x)[0], tf.shape(i)[0])
        flat = tf.broadcast_to(tf.reshape(x, [tf.shape(x)[0], -1]), [b, graph.nodes[node.args[0]].size])
        pos = tf.broadcast_to(tf.reshape(i, [-1, 1]), [b, 1])
        return tf.reshape(tf.gather(flat, pos, batch_dims=1), [-1, 1, 1])
    return _TF_ELEMENTWISE[op](tf, node, *a)


def _index_tf(tf: Any, node: Node, x: Any, mask: Any) -> Any:
    stop, mode = node.attrs["stop"], node.attrs["mode"]
    x = tf.reshape(x, [tf.shape(x)[0], -1])[:, :stop]
    valid = tf.ones_like(x, tf.bool) if mask is None else tf.broadcast_to(
        tf.not_equal(tf.reshape(mask, [tf.shape(mask)[0], -1])[:, :stop], 0), tf.shape(x))
    if mode in ("max", "min"):
        nan = valid & tf.math.is_nan(x)
        fill = tf.constant(-np.inf if mode == "max" else np.inf, x.dtype)
        ext = tf.where(valid & ~nan, x, fill)
        best = (tf.reduce_max if mode == "max" else tf.reduce_min)(ext, axis=1, keepdims=True)
        valid = tf.where(tf.reduce_any(nan, axis=1, keepdims=True), nan, valid & tf.equal(x, best))
    iota = tf.range(stop, dtype=tf.int64)[tf.newaxis, :]
    if mode == "last":
        pos = tf.reduce_max(tf.where(valid, iota, tf.constant(-1, tf.int64)), axis=1)
    else:
        pos = tf.reduce_min(tf.where(valid, iota, tf.constant(stop, tf.int64)), axis=1)
    default = tf.constant(node.attrs["default"], tf.int64)
    return tf.reshape(tf.where(tf.reduce_any(valid, axis=1), pos, default), [-1, 1, 1])


_TF_ELEMENTWISE = {
    "cast_f32": lambda tf, n, x: tf.cast(x, tf.float32),
    "nan_to_zero": lambda tf, n, x: tf.where(tf.math.is_nan(x), tf.zeros_like(x), x),
    "clip": lambda tf, n, x: tf.clip_by_value(x, n.attrs["lo"], n.attrs["hi"]),
    "slog": lambda tf, n, x: tf.where(tf.constant(n.attrs["cols"]),
                                      tf.sign(x) * tf.math.log1p(tf.abs(x)), x),
    "sqrt": lambda tf, n, x: tf.sqrt(x),
    "relu": lambda tf, n, x: tf.nn.relu(x),
    "tanh": lambda tf, n, x: tf.cast(tf.tanh(tf.cast(x, tf.float64)), tf.float32),
    "mul": lambda tf, n, x, y: x * y,
    "less": lambda tf, n, x, y: tf.cast(tf.less(x, y), tf.int64),
    "where": lambda tf, n, c, x, y: tf.where(tf.not_equal(c, 0), x, y),
}


def run_tf(graph: Graph, batch: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """run_numpy's twin in TensorFlow (gradients flow to `params`; XLA-compilable)."""
    import tensorflow as tf

    values: list[Any] = []
    for node in graph.nodes:
        values.append(_tf_op(tf, node, [values[i] for i in node.args], graph, batch, params))
    present = [i for i in graph.inputs if i.name in batch]
    b = tf.size(batch[present[0].name]) // present[0].elements if present else 1
    return {name: tf.broadcast_to(values[i], tf.concat([[b], tf.shape(values[i])[1:]], 0))
            for name, i in graph.outputs.items()}


# -- C --------------------------------------------------------------------------------------------
def c_float(x: float, dtype: str = "f32") -> str:
    """An exact C literal of `x` as float (f32) or double (f64)."""
    x = float(np.float32(x)) if dtype == "f32" else float(x)
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return x.hex() + ("f" if dtype == "f32" else "")


def c_literal(x: float, dtype: str) -> str:
    return f"INT64_C({int(x)})" if dtype == "i64" else c_float(x, dtype)


def c_array(ctype: str, name: str, values: Sequence[str]) -> str:
    body = ",".join(("\n  " if i % 6 == 0 else " ") + v for i, v in enumerate(values))
    return f"static const {ctype} {name}[{max(len(values), 1)}] = {{{body or ' 0'}\n}};\n"


_C_ELEMENTWISE = {  # over the operands' elements {0} {1} {2}, in the node's attrs {lo} {hi}
    "cast_f32": "(float){0}",
    "nan_to_zero": "({0} != {0} ? 0 : {0})",
    "clip": "({0} < {lo} ? {lo} : ({0} > {hi} ? {hi} : {0}))",
    "slog": "(double)(({0} > 0) - ({0} < 0)) * log1p(fabs({0}))",
    "sqrt": "sqrtf({0})",
    "relu": "({0} < 0.0f ? 0.0f : {0})",
    "tanh": "(float)tanh((double){0})",
    "mul": "{0} * {1}",
    "less": "(int64_t)({0} < {1})",
    "where": "({0} != 0 ? {1} : {2})",
}


def _c_op(graph: Graph, k: int, node: Node, params: Mapping[str, np.ndarray],
          statics: list[str]) -> str:
    v, ctype, at = f"v{k}", C_TYPES[node.dtype], node.attrs
    a = [f"v{i}" for i in node.args]
    rows, cols = node.shape
    decl = f"  {ctype} {v}[{node.size}];\n"
    if node.op == "input":
        return f"  const {ctype} *{v} = (const {ctype} *)in[{graph.input_index[at['name']]}];\n"
    if node.op == "const":
        return f"  const {ctype} {v}[1] = {{{c_literal(at['value'], node.dtype)}}};\n"
    if node.op == "stack":
        lines = [decl, f"  for (int r = 0; r < {rows}; ++r) {{\n"]
        for j, name in enumerate(at["names"]):
            i = graph._input(name)
            at_r = "0" if i.elements == 1 else "r"
            lines.append(f"    {v}[r * {cols} + {j}] = (double)((const {C_TYPES[INPUT_DTYPES[i.type]]} *)"
                         f"in[{graph.input_index[name]}])[{at_r}];  /* {name} */\n")
        return "".join(lines) + "  }\n"
    if node.op == "quantile":
        for c, b in enumerate(at["bounds"]):
            statics.append(c_array("double", f"{v}_b{c}", [c_float(x, "f64") for x in b]))
        statics.append(f"static const double *const {v}_b[{cols}] = {{"
                       + ", ".join(f"{v}_b{c}" for c in range(cols)) + "};\n")
        statics.append(c_array("size_t", f"{v}_n", [str(len(b)) for b in at["bounds"]]))
        return (decl + f"  for (int e = 0; e < {node.size}; ++e)\n"
                f"    {v}[e] = (float)count_le({v}_b[e % {cols}], {v}_n[e % {cols}], {a[0]}[e])"
                f" / (float)({v}_n[e % {cols}] ? {v}_n[e % {cols}] : 1);\n")
    if node.op == "interleave":
        return decl + "".join(f"  for (int e = 0; e < {rows * (cols // len(a))}; ++e)\n"
                              f"    {v}[e * {len(a)} + {i}] = {x}[e];\n" for i, x in enumerate(a))
    if node.op == "dense":
        n_in = at["n_in"]
        for key in ("w", "b"):
            statics.append(c_array("float", f"{v}_{key}",
                                   [c_float(x) for x in np.asarray(params[at[key]]).reshape(-1)]))
        return (decl + f"  for (int r = 0; r < {rows}; ++r)\n"
                f"    for (int o = 0; o < {cols}; ++o) {{\n      double s = 0.0;\n"
                f"      for (int i = 0; i < {n_in}; ++i)\n"
                f"        s += (double){a[0]}[r * {n_in} + i] * (double){v}_w[i * {cols} + o];\n"
                f"      {v}[r * {cols} + o] = (float)(s + (double){v}_b[o]);\n    }}\n")
    if node.op == "index":
        x, mode = a[0], at["mode"]
        skip = f"      if ({a[1]}[e] == 0)\n        continue;\n" if len(a) > 1 else ""
        pick = {"first": "      best = e;\n      break;\n", "last": "      best = e;\n"}.get(
            mode, f"      if (best < 0) {{\n        best = e;\n        continue;\n      }}\n"
            f"      if ({x}[best] != {x}[best])  /* a NaN is the extreme, the first one wins */\n"
            "        break;\n"
            f"      if ({x}[e] != {x}[e] || {x}[e] {'>' if mode == 'max' else '<'} {x}[best])\n"
            "        best = e;\n")
        return (f"  int64_t {v}[1] = {{{at['default']}}};\n  {{\n    int64_t best = -1;\n"
                f"    for (int64_t e = 0; e < {at['stop']}; ++e) {{\n{skip}{pick}    }}\n"
                f"    if (best >= 0)\n      {v}[0] = best;\n  }}\n")
    if node.op == "take":
        return f"  const {ctype} {v}[1] = {{{a[0]}[{a[1]}[0]]}};\n"
    operands = [f"{x}[{'0' if graph.nodes[i].size == 1 else 'e'}]" for x, i in zip(a, node.args, strict=True)]
    lo, hi = (c_literal(at.get(key, 0), node.dtype) for key in ("lo", "hi"))
    expr = _C_ELEMENTWISE[node.op].format(*operands, lo=lo, hi=hi)
    if node.op == "slog" and not all(at["cols"]):
        statics.append(c_array("unsigned char", f"{v}_cols", [str(int(c)) for c in at["cols"]]))
        expr = f"{v}_cols[e % {cols}] ? {expr} : {operands[0]}"
    return decl + f"  for (int e = 0; e < {node.size}; ++e)\n    {v}[e] = {expr};\n"


_COUNT_LE = """
/* #{i : bounds[i] <= v}, as bisect.bisect_right (a NaN counts past every bound). */
static size_t count_le(const double *bounds, size_t n, double v) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v < bounds[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}
"""


def c_function(graph: Graph, params: Mapping[str, np.ndarray], name: str, output: str) -> str:
    """C defining `void name(const void *const *in, void *out)`: in[j] points at input j's
    elements (in the graph's input order); the output `output` is written to out (its
    elements, row-major, in its dtype)."""
    k_out = graph.outputs[output]
    live = {k_out}
    for k in range(len(graph.nodes) - 1, -1, -1):  # only what the output depends on
        if k in live:
            live.update(graph.nodes[k].args)
    statics: list[str] = []
    body = [_c_op(graph, k, node, params, statics) for k, node in enumerate(graph.nodes) if k in live]
    quantiles = any(graph.nodes[k].op == "quantile" for k in live)
    out = graph.nodes[k_out]
    return ("/* Products are summed in double: no fused multiply-add may change them. */\n"
            "#pragma STDC FP_CONTRACT OFF\n#include <math.h>\n#include <stddef.h>\n"
            "#include <stdint.h>\n" + (_COUNT_LE if quantiles else "") + "\n" + "".join(statics)
            + f"\nvoid {name}(const void *const *in, void *out) {{\n  (void)in;\n" + "".join(body)
            + f"  for (int e = 0; e < {out.size}; ++e)\n"
            f"    (({C_TYPES[out.dtype]} *)out)[e] = v{k_out}[e];\n}}\n")
