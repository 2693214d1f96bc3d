"""LLVM's training-log wire format, both directions.

The compiler (interactive mode, or development mode's `-training-log`) writes:
  one JSON header line  {"features": [spec...], "score": spec?, "advice": spec?}
  then any number of events:
    {"context": NAME}\n                          -- a new function/module starts
    {"observation": N}\n <tensor bytes...> \n     -- every feature, in header order, raw LE
    {"outcome": N}\n <score bytes> \n              -- development mode's reward (optional)
In interactive mode the host answers each observation with the raw advice tensor bytes.

Every read is of an exact size: the compiler writes an observation and then blocks reading
the advice, so a host that asked for more bytes than the observation holds would wait forever
on a compiler that waits for it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import numpy as np

from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import ProtocolError

MAX_LINE = 1 << 20  # a header with thousands of features is still far below this
_OBS_PREFIX = b'{"observation":'


class ByteSource(Protocol):
    """Where the reader gets bytes from: a file, or a FIFO with deadlines."""

    name: str

    def readline(self, limit: int) -> bytes:
        """Bytes up to and including b'\\n' (fewer only at end of stream)."""
        ...

    def read_exact(self, n: int) -> bytes:
        """Exactly n bytes (fewer only at end of stream)."""
        ...


class StreamSource:
    """A ByteSource over a blocking binary file object (log files, tests)."""

    def __init__(self, f: BinaryIO, name: str = "<stream>") -> None:
        self._f = f
        self.name = name

    def readline(self, limit: int) -> bytes:
        return self._f.readline(limit)

    def read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            b = self._f.read(n - got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)


@dataclass(frozen=True)
class Header:
    features: tuple[TensorSpec, ...]
    advice: TensorSpec | None = None
    score: TensorSpec | None = None

    def to_json(self) -> dict:
        d: dict = {"features": [f.to_json() for f in self.features]}
        if self.score is not None:
            d["score"] = self.score.to_json()
        if self.advice is not None:
            d["advice"] = self.advice.to_json()
        return d

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @functools.cached_property
    def observation_bytes(self) -> int:
        return sum(f.num_bytes for f in self.features)

    @functools.cached_property
    def decode_plan(self) -> tuple[tuple[tuple[tuple[np.dtype, tuple[int, ...], int, int], ...],
                                   dict[str, tuple[int, int]]], ...]:
        """How to cut one observation's bytes with few numpy calls: runs of consecutive
        features of the same dtype and shape, each as (dtype, (count, *shape), byte offset,
        element count), and where each feature lives: name -> (run, row). LLVM's inliner
        sends 39 int64 [1] tensors: one run."""
        runs: list[list] = []
        where: dict[str, tuple[int, int]] = {}
        offset = 0
        for f in self.features:
            if not (runs and runs[-1][0] == f.dtype and runs[-1][1][1:] == f.shape):
                runs.append([f.dtype, (0, *f.shape), offset, 0])
            run = runs[-1]
            where[f.name] = (len(runs) - 1, run[1][0])
            run[1] = (run[1][0] + 1, *f.shape)
            run[3] += f.num_elements
            offset += f.num_bytes
        return (tuple((d, s, o, c) for d, s, o, c in runs), where)

    def decode_observation(self, raw: bytes) -> Features:
        """Feature name -> read-only array view of `raw` (`observation_bytes` or more)."""
        runs, where = self.decode_plan
        return Features([np.frombuffer(raw, dtype=d, count=c, offset=o).reshape(s)
                         for d, s, o, c in runs], where, self._gather_rows)

    @functools.cached_property
    def _gather_rows(self) -> dict[tuple[str, ...], tuple[int, np.ndarray] | None]:
        return {}  # Features.gather's memo, shared by every observation under this header


# What a heuristic or a policy decides from: feature name -> array of the header's shape. The
# compiler's are `Features`; traces, tests and batches give plain dicts.
FeatureValues = Mapping[str, np.ndarray]


class Features(Mapping[str, np.ndarray]):
    """One observation's features, name -> read-only array (a view of the observation's bytes),
    in header order. Each array is made when it is looked up: a heuristic often reads two of
    LLVM's 39 inliner features, and making all 39 arrays up front was the largest Python cost
    of a decision. Behaves as a read-only dict; pickles as a plain dict."""

    __slots__ = ("_runs", "_where", "_memo")

    def __init__(self, runs: list[np.ndarray], where: dict[str, tuple[int, int]],
                 memo: dict[tuple[str, ...], tuple[int, np.ndarray] | None] | None = None) -> None:
        self._runs = runs
        self._where = where
        self._memo = {} if memo is None else memo

    def gather(self, names: tuple[str, ...]) -> np.ndarray | None:
        """np.stack of these features in one numpy call ([len(names), *shape]), or None when
        they do not all share one dtype and shape (then look them up one by one). For a
        network that feeds tens of features per decision."""
        hit = self._memo.get(names)
        if hit is None:
            if names in self._memo:
                return None
            places = [self._where[n] for n in names]
            runs = {r for r, _ in places}
            if len(runs) != 1 or self._runs[places[0][0]].ndim == 1:
                self._memo[names] = None
                return None
            hit = self._memo[names] = (places[0][0], np.array([i for _, i in places], dtype=np.intp))
        return self._runs[hit[0]][hit[1]]

    def __getitem__(self, name: str) -> np.ndarray:
        run, row = self._where[name]
        a = self._runs[run]
        if a.ndim == 1:  # 0-d features: a[row] would be a numpy scalar, not an array
            return a[row:row + 1].reshape(())
        return a[row]

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def keys(self):  # type: ignore[override]  # a dict's keys view: set operations at C speed
        return self._where.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return repr(dict(self))

    def __reduce__(self) -> tuple:
        return (dict, (list(self.items()),))


def stack_features(observations: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Feature name -> [T, *shape] array over T observations, as np.stack per feature would give.
    Observations decoded under one header are stacked run by run, one np.stack per run instead
    of one per feature over T lookups (75 decisions x 39 features: 3.1 ms -> 0.04 ms)."""
    if not observations:
        return {}
    first = observations[0]
    if isinstance(first, Features) and all(
            isinstance(o, Features) and o._where is first._where for o in observations):
        runs = [np.stack([o._runs[r] for o in observations]) for r in range(len(first._runs))]
        return {n: np.ascontiguousarray(runs[r][:, i]) for n, (r, i) in first._where.items()}
    return {n: np.stack([o[n] for o in observations]) for n in first}


@dataclass(frozen=True)
class Context:
    name: str


@dataclass(frozen=True)
class Observation:
    index: int
    features: FeatureValues = field(repr=False)
    context: str = ""


@dataclass(frozen=True)
class Outcome:
    index: int
    value: np.ndarray
    context: str = ""


Event = Context | Observation | Outcome


def parse_header(line: bytes, source: str = "<stream>") -> Header:
    try:
        d = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"{source}: header is not JSON ({e}): {line[:200]!r}") from e
    if not isinstance(d, dict) or not isinstance(d.get("features"), list):
        raise ProtocolError(f"{source}: header has no 'features' list: {line[:200]!r}")
    try:
        feats = tuple(TensorSpec.from_json(f) for f in d["features"])
        advice = TensorSpec.from_json(d["advice"]) if "advice" in d else None
        score = TensorSpec.from_json(d["score"]) if "score" in d else None
    except ValueError as e:
        raise ProtocolError(f"{source}: bad tensor spec in header: {e}") from e
    names = [f.name for f in feats]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{source}: duplicate feature names in header")
    return Header(feats, advice, score)


_PARSED_HEADERS: dict[bytes, Header] = {}


class LogReader:
    """Reads a training-log stream event by event. `header` is read on construction."""

    def __init__(self, source: ByteSource) -> None:
        self._src = source
        self.context = ""
        line = source.readline(MAX_LINE)
        if not line:
            raise ProtocolError(f"{source.name}: stream ended before the header")
        if not line.endswith(b"\n"):
            raise ProtocolError(f"{source.name}: header line truncated or too long")
        # Every compile of a problem sends the same header: parse it (and build its decode
        # plan) once per process, not once per compile.
        header = _PARSED_HEADERS.get(line)
        if header is None:
            header = parse_header(line, source.name)
            if len(_PARSED_HEADERS) >= 32:
                _PARSED_HEADERS.clear()
            _PARSED_HEADERS[line] = header
        self.header = header

    def _read_tensor(self, spec: TensorSpec, what: str) -> np.ndarray:
        raw = self._src.read_exact(spec.num_bytes)
        if len(raw) != spec.num_bytes:
            raise ProtocolError(
                f"{self._src.name}: stream truncated in {what}, tensor {spec.name!r}: "
                f"expected {spec.num_bytes} bytes, got {len(raw)}"
            )
        return spec.decode(raw)

    def _read_observation(self, idx: int) -> Features:
        """All features of one observation with a single exact-size read (the hot path of
        every interactive compile), decoded as views of that one buffer."""
        header = self.header
        size = header.observation_bytes
        raw = self._src.read_exact(size + 1)
        if len(raw) < size:
            offset = 0
            for f in header.features:
                if offset + f.num_bytes > len(raw):
                    raise ProtocolError(
                        f"{self._src.name}: stream truncated in observation {idx}, tensor "
                        f"{f.name!r}: expected {f.num_bytes} bytes, got {max(0, len(raw) - offset)}"
                    )
                offset += f.num_bytes
        if len(raw) == size or raw[size] != 0x0A:
            got = raw[size:size + 1]
            raise ProtocolError(
                f"{self._src.name}: expected newline after observation {idx}, got {got!r} "
                "(feature sizes do not match the header?)"
            )
        return header.decode_observation(raw)

    def _expect_newline(self, what: str) -> None:
        nl = self._src.read_exact(1)
        if nl != b"\n":
            raise ProtocolError(
                f"{self._src.name}: expected newline after {what}, got {nl!r} "
                "(feature sizes do not match the header?)"
            )

    def next_event(self) -> Event | None:
        """The next event, or None at a clean end of stream."""
        line = self._src.readline(MAX_LINE)
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise ProtocolError(f"{self._src.name}: stream truncated in an event line: {line[:200]!r}")
        # Fast path for LLVM's own spelling of the most frequent line, {"observation":N}:
        # json.loads costs several times more. Anything else goes through json below.
        if line.startswith(_OBS_PREFIX) and line.endswith(b"}\n"):
            digits = line[len(_OBS_PREFIX):-2]
            if digits.isdigit() and len(digits) < 19:
                idx = int(digits)
                return Observation(idx, self._read_observation(idx), self.context)
        try:
            d = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ProtocolError(f"{self._src.name}: event line is not JSON: {line[:200]!r}") from e
        if not isinstance(d, dict) or len(d) != 1:
            raise ProtocolError(f"{self._src.name}: unexpected event line: {line[:200]!r}")
        if "context" in d:
            self.context = str(d["context"])
            return Context(self.context)
        if "observation" in d:
            idx = _int_field(d["observation"], self._src.name, line)
            return Observation(idx, self._read_observation(idx), self.context)
        if "outcome" in d:
            idx = _int_field(d["outcome"], self._src.name, line)
            if self.header.score is None:
                raise ProtocolError(f"{self._src.name}: outcome event but the header has no score")
            val = self._read_tensor(self.header.score, f"outcome {idx}")
            self._expect_newline(f"outcome {idx}")
            return Outcome(idx, val, self.context)
        raise ProtocolError(f"{self._src.name}: unknown event: {line[:200]!r}")

    def __iter__(self) -> Iterator[Event]:
        while (ev := self.next_event()) is not None:
            yield ev


def _int_field(v: object, source: str, line: bytes) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"{source}: event index is not an integer: {line[:200]!r}")
    return v


class LogWriter:
    """Writes the compiler's side of the stream (used by fake compilers in tests and by trace tools)."""

    def __init__(self, out: BinaryIO, header: Header) -> None:
        self._out = out
        self.header = header
        out.write(json.dumps(header.to_json()).encode() + b"\n")

    def context(self, name: str) -> None:
        self._out.write(json.dumps({"context": name}).encode() + b"\n")

    def observation(self, index: int, features: Mapping[str, object]) -> None:
        missing = [f.name for f in self.header.features if f.name not in features]
        if missing:
            raise ValueError(f"observation {index}: missing features {missing}")
        parts = [json.dumps({"observation": index}).encode() + b"\n"]
        parts += [f.encode(features[f.name]) for f in self.header.features]
        parts.append(b"\n")
        self._out.write(b"".join(parts))

    def outcome(self, index: int, value: object) -> None:
        if self.header.score is None:
            raise ValueError("header has no score spec")
        self._out.write(
            json.dumps({"outcome": index}).encode() + b"\n" + self.header.score.encode(value) + b"\n"
        )

    def flush(self) -> None:
        self._out.flush()
