"""Policies as data: a Graph composes a small set of operations over named inputs, and each
operation is implemented once per backend:

    run_numpy(graph, batch, params)  training and evaluation (workers: no TensorFlow)
    run_tf(graph, batch, params)     training gradients, SavedModel / XLA AOT export
    c_function(graph, params, ...)   the C the inliner plugin and the regalloc host link

A graph declares its inputs (name, C type, element count), as LLVM's release-mode model does,
and reads them by name. Every value is, per observation, a 2-D array [rows, cols] of one dtype
(i64, f32 or f64); numpy and TensorFlow add a leading batch dimension. `outputs` names the
values callers ask for: a policy's decision under LLVM's advice name (i64 [1, 1]) and, for a
network, its `logits`. The operations, with the exact arithmetic every backend follows:

    input(name)              the declared input as a column [elements, 1], in its own type
    const(v, dtype)          [1, 1]
    iota(rows)               i64 [rows, 1]: row r holds r (a position, to compare with index's)
    stack(names, rows)       f64 [rows, len(names)]: column j is input j, a 1-element input
                             repeated over the rows
    apply(op, *xs)           elementwise, an operand of shape [1, 1] broadcast: cast_f32,
                             nan_to_zero, clip(lo, hi), slog (sign(x) log1p|x| on the columns
                             `cols` selects), sqrt, relu, tanh (taken in f64), add, mul, less
                             (i64 0/1), where(c, a, b)
    quantile(x, bounds)      f32 #{i : bounds[c][i] <= x} / max(len(bounds[c]), 1) in column c
    interleave(a, b, ...)    [rows, cols * k]: column c * k + i is operand i's column c
    concat(a, b, ...)        [1, sum of sizes]: the operands' elements, each row-major, one
                             operand after the other (one row from values of several shapes)
    dense(x, w, b, n)        f32 x [rows, m] @ w [m, n] + b: products summed in f64, then f32
    index(x, mode, mask, default, stop)
                             i64 [1, 1]: among x's first `stop` positions (row-major) whose mask
                             is nonzero, the first maximum ("max") or minimum ("min"), a NaN
                             counting as the extreme (numpy's argmax/argmin), or the first
                             ("first") or last ("last") of them; `default` if there is none
    take(x, i)               [1, 1]: x at position i (row-major)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from mlgo_base.errors import MlgoError

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


class Elementwise(NamedTuple):
    dtypes: tuple[str, ...]  # operand dtypes it takes (for where: the branches')
    out: str | None  # result dtype; None: the operands'
    numpy: Callable[..., Any]  # (node, *operands)
    tf: Callable[..., Any]  # (tf, node, *operands)
    c: str  # expression over the operands {0} {1} {2} and the attributes {lo} {hi}


_F, _ANY = ("f32",), ("i64", "f32", "f64")
ELEMENTWISE = {
    "cast_f32": Elementwise(_ANY, "f32", lambda n, x: x.astype(np.float32),
                            lambda tf, n, x: tf.cast(x, tf.float32), "(float){0}"),
    "nan_to_zero": Elementwise(("f64",), None, lambda n, x: np.where(np.isnan(x), 0.0, x),
                               lambda tf, n, x: tf.where(tf.math.is_nan(x), tf.zeros_like(x), x),
                               "({0} != {0} ? 0.0 : {0})"),
    "clip": Elementwise(("f64",), None, lambda n, x: np.clip(x, n.attrs["lo"], n.attrs["hi"]),
                        lambda tf, n, x: tf.clip_by_value(x, n.attrs["lo"], n.attrs["hi"]),
                        "({0} < {lo} ? {lo} : ({0} > {hi} ? {hi} : {0}))"),
    "slog": Elementwise(("f64",), None,
                        lambda n, x: np.where(n.attrs["cols"], np.sign(x) * np.log1p(np.abs(x)), x),
                        lambda tf, n, x: tf.where(n.attrs["cols"], tf.sign(x) * tf.math.log1p(tf.abs(x)), x),
                        "(double)(({0} > 0) - ({0} < 0)) * log1p(fabs({0}))"),
    "sqrt": Elementwise(_F, None, lambda n, x: np.sqrt(x), lambda tf, n, x: tf.sqrt(x), "sqrtf({0})"),
    "relu": Elementwise(_F, None, lambda n, x: np.maximum(x, np.float32(0)),
                        lambda tf, n, x: tf.nn.relu(x), "({0} < 0.0f ? 0.0f : {0})"),
    "tanh": Elementwise(_F, None, lambda n, x: np.tanh(x.astype(np.float64)).astype(np.float32),
                        lambda tf, n, x: tf.cast(tf.tanh(tf.cast(x, tf.float64)), tf.float32),
                        "(float)tanh((double){0})"),
    "add": Elementwise(_ANY, None, lambda n, x, y: x + y, lambda tf, n, x, y: x + y, "{0} + {1}"),
    "mul": Elementwise(_ANY, None, lambda n, x, y: x * y, lambda tf, n, x, y: x * y, "{0} * {1}"),
    "less": Elementwise(_ANY, "i64", lambda n, x, y: (x < y).astype(np.int64),
                        lambda tf, n, x, y: tf.cast(x < y, tf.int64), "(int64_t)({0} < {1})"),
    "where": Elementwise(_ANY, None, lambda n, c, x, y: np.where(c != 0, x, y),
                         lambda tf, n, c, x, y: tf.where(c != 0, x, y), "({0} != 0 ? {1} : {2})"),
}


class Graph:
    """A policy's inputs, its operations in order, and its named outputs. Building checks
    shapes and dtypes, so every backend can trust them."""

    def __init__(self, inputs: Sequence[Any]) -> None:
        # TensorSpecs or (name, C type, elements) triples
        self.inputs = tuple(Input(*i) if isinstance(i, tuple) else Input(i.name, i.type, i.num_elements)
                            for i in inputs)
        self.input_index = {i.name: j for j, i in enumerate(self.inputs)}
        bad = [f"{i.name} ({i.type})" for i in self.inputs if i.type not in INPUT_DTYPES]
        if bad or len(self.input_index) != len(self.inputs):
            raise MlgoError(f"inputs must have distinct names and types in {list(INPUT_DTYPES)}: "
                            f"{[i.name for i in self.inputs]} {bad}")
        self.nodes: list[Node] = []
        self.outputs: dict[str, int] = {}
        self.plans: dict[tuple[str, ...], list[int]] = {}  # needed() of outputs asked for

    def _add(self, op: str, args: Sequence[int], shape: tuple[int, int], dtype: str, **attrs) -> int:
        self.nodes.append(Node(op, tuple(args), shape, dtype, attrs))
        return len(self.nodes) - 1

    def declared(self, name: str) -> Input:
        if name not in self.input_index:
            raise MlgoError(f"the policy reads {name!r}, which it does not declare as an input")
        return self.inputs[self.input_index[name]]

    def input(self, name: str) -> int:
        i = self.declared(name)
        return self._add("input", (), (i.elements, 1), INPUT_DTYPES[i.type], name=name)

    def const(self, value: float, dtype: str = "i64") -> int:
        return self._add("const", (), (1, 1), dtype, value=value)

    def iota(self, rows: int) -> int:
        if rows < 1:
            raise MlgoError(f"iota: {rows} rows")
        return self._add("iota", (), (rows, 1), "i64")

    def stack(self, names: Sequence[str], rows: int) -> int:
        odd = [i.name for i in map(self.declared, names) if i.elements not in (1, rows)]
        if odd:
            raise MlgoError(f"stack of {rows} rows: inputs {odd} have neither 1 nor {rows} elements")
        return self._add("stack", (), (rows, len(names)), "f64", names=tuple(names))

    def apply(self, op: str, *args: int, **attrs) -> int:
        spec = ELEMENTWISE[op]
        nodes = [self.nodes[a] for a in args]
        same = {n.dtype for n in nodes[1:]} if op == "where" else {n.dtype for n in nodes}
        shapes = {n.shape for n in nodes} - {(1, 1)}
        if len(same) != 1 or not same <= set(spec.dtypes) or len(shapes) > 1:
            raise MlgoError(f"{op} takes operands of one dtype in {spec.dtypes} and one shape, "
                            f"not {[(n.dtype, n.shape) for n in nodes]}")
        shape = shapes.pop() if shapes else (1, 1)
        if op == "slog":
            attrs["cols"] = tuple(attrs.get("cols", (True,) * shape[1]))
            if len(attrs["cols"]) != shape[1]:
                raise MlgoError(f"slog: {len(attrs['cols'])} column flags for {shape[1]} columns")
        return self._add(op, args, shape, spec.out or same.pop(), **attrs)

    def quantile(self, x: int, bounds: Sequence[np.ndarray]) -> int:
        n = self.nodes[x]
        if n.dtype != "f64" or len(bounds) != n.shape[1]:
            raise MlgoError(f"quantile takes f64 and one boundary list per column ({n.shape[1]})")
        from mlgo.policies.vocab import QuantileTable

        return self._add("quantile", (x,), n.shape, "f32", table=QuantileTable(bounds))

    def interleave(self, *xs: int) -> int:
        first = self.nodes[xs[0]]
        if any((self.nodes[x].shape, self.nodes[x].dtype) != (first.shape, first.dtype) for x in xs):
            raise MlgoError("interleave: the operands differ in shape or dtype")
        return self._add("interleave", xs, (first.shape[0], first.shape[1] * len(xs)), first.dtype)

    def concat(self, *xs: int) -> int:
        dtypes = {self.nodes[x].dtype for x in xs}
        if not xs or len(dtypes) != 1:
            raise MlgoError(f"concat: operands of one dtype, not {sorted(dtypes)}")
        return self._add("concat", xs, (1, sum(self.nodes[x].size for x in xs)), dtypes.pop())

    def dense(self, x: int, w: str, b: str, n_out: int) -> int:
        n = self.nodes[x]
        if n.dtype != "f32":
            raise MlgoError(f"dense takes f32, not {n.dtype}")
        return self._add("dense", (x,), (n.shape[0], n_out), "f32", w=w, b=b, n_in=n.shape[1])

    def index(self, x: int, mode: str, mask: int | None = None, default: int = 0,
              stop: int | None = None) -> int:
        size = self.nodes[x].size
        stop = size if stop is None else stop
        if (mode not in ("max", "min", "first", "last") or not 0 < stop <= size
                or (mask is not None and self.nodes[mask].shape != self.nodes[x].shape)):
            raise MlgoError(f"index: bad mode {mode!r}, stop {stop} or mask shape")
        return self._add("index", (x,) if mask is None else (x, mask), (1, 1), "i64",
                         mode=mode, default=default, stop=stop)

    def take(self, x: int, i: int) -> int:
        if (self.nodes[i].dtype, self.nodes[i].shape) != ("i64", (1, 1)):
            raise MlgoError("take: the position must be an i64 [1, 1]")
        return self._add("take", (x, i), (1, 1), self.nodes[x].dtype)


def _batch_size(graph: Graph, batch: Mapping[str, Any], size: Callable[[Any], Any]) -> Any:
    """How many observations `batch` holds (constant outputs are repeated to that many)."""
    for i in graph.inputs:
        if i.name in batch:
            return size(batch[i.name]) // i.elements
    return 1


def needed(graph: Graph, outputs: Sequence[str]) -> list[int]:
    """The nodes `outputs` depend on, in order (so a caller pays only for what it asks)."""
    live = {graph.outputs[o] for o in outputs}
    for k in range(max(live), -1, -1):
        if k in live:
            live.update(graph.nodes[k].args)
    return sorted(live)


# -- numpy ----------------------------------------------------------------------------------------
def _np_op(graph: Graph, node: Node, a: list[np.ndarray], batch: Mapping[str, np.ndarray],
           params: Mapping[str, np.ndarray]) -> np.ndarray:
    op, at, (rows, cols) = node.op, node.attrs, node.shape
    if op == "input":
        return np.asarray(batch[at["name"]], NP_TYPES[node.dtype]).reshape(-1, rows, 1)
    if op == "const":
        return np.full((1, 1, 1), at["value"], NP_TYPES[node.dtype])
    if op == "iota":
        return np.arange(rows, dtype=np.int64).reshape(1, rows, 1)
    if op == "stack" and rows == 1:  # a row of scalars: one call for a compiler's observation
        gather = getattr(batch, "gather", None)
        x = gather(at["names"]) if gather is not None else None
        if x is None:
            x = np.array([np.asarray(batch[n]).reshape(-1) for n in at["names"]])
        return np.asarray(x, np.float64).reshape(cols, -1).T.reshape(-1, 1, cols)
    if op == "stack":
        x = np.empty((_batch_size(graph, batch, np.size), rows, cols))
        for j, name in enumerate(at["names"]):
            x[:, :, j] = np.asarray(batch[name]).reshape(len(x), -1)  # broadcasts 1 element
        return x
    if op == "quantile":
        return at["table"].numpy(a[0].reshape(-1, cols)).reshape(-1, rows, cols)
    if op == "interleave":
        return np.stack(a, axis=-1).reshape(-1, rows, cols)
    if op == "concat":
        n = max(len(x) for x in a)
        flat = [np.broadcast_to(x.reshape(len(x), -1), (n, x[0].size)) for x in a]
        return np.concatenate(flat, axis=1).reshape(n, 1, cols)
    if op == "dense":
        w, b = (np.asarray(params[at[k]], np.float64) for k in ("w", "b"))
        return (a[0].astype(np.float64) @ w + b).astype(np.float32)
    if op == "take":
        x, i = a
        n = max(len(x), len(i))
        flat = np.broadcast_to(x.reshape(len(x), -1), (n, x[0].size))
        return np.take_along_axis(flat, np.broadcast_to(i.reshape(-1, 1), (n, 1)), 1).reshape(n, 1, 1)
    if op == "index":
        return _index(np, node, a).reshape(-1, 1, 1)
    return ELEMENTWISE[op].numpy(node, *a)


def _index(xp: Any, node: Node, a: list[Any]) -> Any:
    """index for numpy and TensorFlow (`xp` is either module) over [B, ...] operands."""
    tf = None if xp is np else xp
    reduce = (lambda f: getattr(tf, f"reduce_{f}")) if tf else (lambda f: getattr(np, f))
    flat = (lambda v: tf.reshape(v, [tf.shape(v)[0], -1])) if tf else (lambda v: v.reshape(len(v), -1))
    stop, mode = node.attrs["stop"], node.attrs["mode"]
    x = flat(a[0])[:, :stop]
    valid = xp.ones_like(x, dtype=bool) if len(a) == 1 else flat(a[1])[:, :stop] != 0
    if mode in ("max", "min"):
        nan = valid & (x != x)
        dt = np.dtype(x.dtype.as_numpy_dtype if tf else x.dtype)
        lo, hi = (-np.inf, np.inf) if dt.kind == "f" else (np.iinfo(dt).min, np.iinfo(dt).max)
        found = reduce(mode)(xp.where(valid & ~nan, x, np.array(lo if mode == "max" else hi, dt)),
                             axis=1, keepdims=True)
        valid = xp.where(reduce("any")(nan, axis=1, keepdims=True), nan, valid & (x == found))
    iota = np.arange(stop, dtype=np.int64)[np.newaxis, :]
    if mode == "last":
        pos = reduce("max")(xp.where(valid, iota, np.int64(-1)), axis=1)
    else:
        pos = reduce("min")(xp.where(valid, iota, np.int64(stop)), axis=1)
    return xp.where(reduce("any")(valid, axis=1), pos, np.int64(node.attrs["default"]))


def run_numpy(graph: Graph, batch: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
              outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The outputs (default: all) for a batch (inputs shaped [B, *shape] or, for one
    observation, [*shape]), each as [B, rows, cols]."""
    outputs = tuple(graph.outputs if outputs is None else outputs)
    values: dict[int, np.ndarray] = {}
    for k in graph.plans.get(outputs) or graph.plans.setdefault(outputs, needed(graph, outputs)):
        node = graph.nodes[k]
        values[k] = _np_op(graph, node, [values[i] for i in node.args], batch, params)
    result = {o: values[graph.outputs[o]] for o in outputs}
    b = max(len(v) for v in values.values())
    if b == 1:
        b = _batch_size(graph, batch, np.size)
    return {o: v if len(v) == b else np.broadcast_to(v, (b, *v.shape[1:])) for o, v in result.items()}


# -- TensorFlow -----------------------------------------------------------------------------------
def _tf_op(tf: Any, graph: Graph, node: Node, a: list[Any], batch: Mapping[str, Any],
           params: Mapping[str, Any]) -> Any:
    op, at, (rows, cols) = node.op, node.attrs, node.shape
    if op == "input":
        return tf.reshape(tf.cast(batch[at["name"]], NP_TYPES[node.dtype]), [-1, rows, 1])
    if op == "const":
        return tf.constant(at["value"], NP_TYPES[node.dtype], shape=[1, 1, 1])
    if op == "iota":
        return tf.reshape(tf.range(rows, dtype=tf.int64), [1, rows, 1])
    if op == "stack":
        columns = [tf.cast(tf.reshape(batch[n], [-1, graph.declared(n).elements]), tf.float64)
                   for n in at["names"]]
        return tf.stack([tf.broadcast_to(v, [tf.shape(v)[0], rows]) for v in columns], axis=-1)
    if op == "quantile":
        return tf.reshape(at["table"].tf(tf.reshape(a[0], [-1, cols])), [-1, rows, cols])
    if op == "interleave":
        return tf.reshape(tf.stack(a, axis=-1), [-1, rows, cols])
    if op == "concat":
        n = functools.reduce(tf.maximum, [tf.shape(x)[0] for x in a])
        flat = [tf.broadcast_to(tf.reshape(x, [tf.shape(x)[0], -1]), [n, graph.nodes[k].size])
                for x, k in zip(a, node.args, strict=True)]
        return tf.reshape(tf.concat(flat, axis=1), [-1, 1, cols])
    if op == "dense":
        x = tf.cast(tf.reshape(a[0], [-1, at["n_in"]]), tf.float64)
        y = tf.matmul(x, tf.cast(params[at["w"]], tf.float64)) + tf.cast(params[at["b"]], tf.float64)
        return tf.reshape(tf.cast(y, tf.float32), [-1, rows, cols])
    if op == "take":
        x, i = a
        n = tf.maximum(tf.shape(x)[0], tf.shape(i)[0])
        flat = tf.broadcast_to(tf.reshape(x, [tf.shape(x)[0], -1]), [n, graph.nodes[node.args[0]].size])
        return tf.reshape(tf.gather(flat, tf.broadcast_to(tf.reshape(i, [-1, 1]), [n, 1]),
                                    batch_dims=1), [-1, 1, 1])
    if op == "index":
        return tf.reshape(_index(tf, node, a), [-1, 1, 1])
    return ELEMENTWISE[op].tf(tf, node, *a)


def run_tf(graph: Graph, batch: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """run_numpy's twin in TensorFlow (gradients flow to `params`; XLA-compilable)."""
    import tensorflow as tf

    values: list[Any] = []
    for node in graph.nodes:
        values.append(_tf_op(tf, graph, node, [values[i] for i in node.args], batch, params))
    b = _batch_size(graph, batch, tf.size)
    return {name: tf.broadcast_to(values[i], tf.concat([[b], tf.shape(values[i])[1:]], 0))
            for name, i in graph.outputs.items()}


# -- C --------------------------------------------------------------------------------------------
def c_literal(x: float, dtype: str = "f32") -> str:
    """An exact C literal of `x` as int64_t, float (f32) or double (f64)."""
    if dtype == "i64":
        return f"INT64_C({int(x)})"
    x = float(np.float32(x)) if dtype == "f32" else float(x)
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return x.hex() + ("f" if dtype == "f32" else "")


def c_array(ctype: str, name: str, values: Sequence[str]) -> str:
    body = ",".join(("\n  " if i % 6 == 0 else " ") + v for i, v in enumerate(values))
    return f"static const {ctype} {name}[{max(len(values), 1)}] = {{{body or ' 0'}\n}};\n"


def _c_op(graph: Graph, k: int, node: Node, params: Mapping[str, np.ndarray], statics: list[str]) -> str:
    v, ctype, at, (rows, cols) = f"v{k}", C_TYPES[node.dtype], node.attrs, node.shape
    a = [f"v{i}" for i in node.args]
    decl = f"  {ctype} {v}[{node.size}];\n"
    if node.op == "input":
        return f"  const {ctype} *{v} = (const {ctype} *)in[{graph.input_index[at['name']]}];\n"
    if node.op in ("const", "take"):
        value = c_literal(at["value"], node.dtype) if node.op == "const" else f"{a[0]}[{a[1]}[0]]"
        return f"  const {ctype} {v}[1] = {{{value}}};\n"
    if node.op == "iota":
        return decl + f"  for (int e = 0; e < {rows}; ++e)\n    {v}[e] = e;\n"
    if node.op == "stack":
        lines = [f"    {v}[r * {cols} + {j}] = (double)((const {C_TYPES[INPUT_DTYPES[i.type]]} *)"
                 f"in[{graph.input_index[i.name]}])[{'0' if i.elements == 1 else 'r'}];  /* {i.name} */\n"
                 for j, i in enumerate(map(graph.declared, at["names"]))]
        return decl + f"  for (int r = 0; r < {rows}; ++r) {{\n" + "".join(lines) + "  }\n"
    if node.op == "quantile":
        bounds = at["table"].rows
        statics += [c_array("double", f"{v}_b{c}", [c_literal(x, "f64") for x in b])
                    for c, b in enumerate(bounds)]
        statics.append(c_array("double *", f"{v}_b", [f"{v}_b{c}" for c in range(cols)]))
        statics.append(c_array("size_t", f"{v}_n", [str(len(b)) for b in bounds]))
        return (decl + f"  for (int e = 0; e < {node.size}; ++e)\n"
                f"    {v}[e] = (float)count_le({v}_b[e % {cols}], {v}_n[e % {cols}], {a[0]}[e])"
                f" / (float)({v}_n[e % {cols}] ? {v}_n[e % {cols}] : 1);\n")
    if node.op == "interleave":
        return decl + "".join(f"  for (int e = 0; e < {rows * cols // len(a)}; ++e)\n"
                              f"    {v}[e * {len(a)} + {i}] = {x}[e];\n" for i, x in enumerate(a))
    if node.op == "concat":
        starts = np.cumsum([0] + [graph.nodes[i].size for i in node.args]).tolist()
        return decl + "".join(f"  for (int e = 0; e < {graph.nodes[i].size}; ++e)\n"
                              f"    {v}[{start} + e] = {x}[e];\n"
                              for x, i, start in zip(a, node.args, starts, strict=False))
    if node.op == "dense":
        n = at["n_in"]
        weights = np.asarray(params[at["w"]], np.float32)
        statics += [c_array("float", f"{v}_{key}", [c_literal(x) for x in np.ravel(params[at[key]])])
                    for key in ("w", "b")]
        # Inputs outer, outputs inner: the weights are read in order and the output loop
        # vectorizes, while each output still sums its products in input order from 0.0, so
        # the result is the same double sum, bit for bit, as one output at a time. An input of
        # 0 adds +-0.0 to each sum, which changes none (no sum is -0.0: each starts at +0.0),
        # so it is skipped (ReLU outputs and many features are 0), unless a weight is not
        # finite (0 * inf is NaN).
        skip = "      if (x == 0.0)\n        continue;\n" if np.isfinite(weights).all() else ""
        return (decl + f"  for (int r = 0; r < {rows}; ++r) {{\n"
                f"    double s[{cols}];\n    for (int o = 0; o < {cols}; ++o)\n      s[o] = 0.0;\n"
                f"    for (int i = 0; i < {n}; ++i) {{\n"
                f"      const double x = (double){a[0]}[r * {n} + i];\n{skip}"
                f"      const float *w = &{v}_w[i * {cols}];\n"
                f"      for (int o = 0; o < {cols}; ++o)\n        s[o] += x * (double)w[o];\n    }}\n"
                f"    for (int o = 0; o < {cols}; ++o)\n"
                f"      {v}[r * {cols} + o] = (float)(s[o] + (double){v}_b[o]);\n  }}\n")
    if node.op == "index":
        x, mode = a[0], at["mode"]
        skip = f"      if ({a[1]}[e] == 0)\n        continue;\n" if len(a) > 1 else ""
        pick = {"first": "      best = e;\n      break;\n", "last": "      best = e;\n"}.get(
            mode, "      if (best >= 0 && "
            f"({x}[best] != {x}[best] || !({x}[e] != {x}[e] || {x}[e] {'>' if mode == 'max' else '<'}"
            f" {x}[best])))\n        continue;  /* a NaN is the extreme; the first one wins */\n"
            "      best = e;\n")
        return (f"  int64_t {v}[1] = {{{at['default']}}};\n  {{\n    int64_t best = -1;\n"
                f"    for (int64_t e = 0; e < {at['stop']}; ++e) {{\n{skip}{pick}    }}\n"
                f"    if (best >= 0)\n      {v}[0] = best;\n  }}\n")
    operands = [f"{x}[{'0' if graph.nodes[i].size == 1 else 'e'}]" for x, i in zip(a, node.args, strict=True)]
    lo, hi = (c_literal(at.get(key, 0), node.dtype) for key in ("lo", "hi"))
    expr = ELEMENTWISE[node.op].c.format(*operands, lo=lo, hi=hi)
    if node.op == "slog" and not all(at["cols"]):
        statics.append(c_array("unsigned char", f"{v}_cols", [str(int(c)) for c in at["cols"]]))
        expr = f"{v}_cols[e % {cols}] ? {expr} : {operands[0]}"
    return decl + f"  for (int e = 0; e < {node.size}; ++e)\n    {v}[e] = {expr};\n"


# On x86-64 the function also gets an AVX2 version, chosen when the library is loaded on a CPU
# that has it: the same double operations in the same order, each rounded alone (AVX2 brings no
# fused multiply-add, and FP_CONTRACT is off), four at a time instead of two.
_VECTOR_CLONES = """
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MLGO_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MLGO_VECTOR_CLONES
#define MLGO_VECTOR_CLONES
#endif
"""

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
    k_out, live = graph.outputs[output], needed(graph, [output])
    statics: list[str] = []
    body = [_c_op(graph, k, graph.nodes[k], params, statics) for k in live]
    quantiles = any(graph.nodes[k].op == "quantile" for k in live)
    out = graph.nodes[k_out]
    return ("/* Products are summed in double: no fused multiply-add may change them. */\n"
            "#pragma STDC FP_CONTRACT OFF\n#include <math.h>\n#include <stddef.h>\n"
            "#include <stdint.h>\n" + _VECTOR_CLONES + (_COUNT_LE if quantiles else "") + "\n"
            + "".join(statics)
            + f"\nMLGO_VECTOR_CLONES void {name}(const void *const *in, void *out) {{\n  (void)in;\n"
            + "".join(body)
            + f"  for (int e = 0; e < {out.size}; ++e)\n"
            f"    (({C_TYPES[out.dtype]} *)out)[e] = v{k_out}[e];\n}}\n")
