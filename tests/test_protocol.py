"""The training-log reader and writer: round trips, every dtype, and malformed streams."""

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlgo.protocol import (
    DTYPES,
    Context,
    Header,
    LogReader,
    LogWriter,
    Observation,
    Outcome,
    StreamSource,
    TensorSpec,
)
from mlgo_base.errors import ProtocolError

ALL_TYPES = list(DTYPES)


def _header() -> Header:
    feats = tuple(TensorSpec(f"f_{t}", t, (1, 3)) for t in ALL_TYPES)
    return Header(feats, advice=TensorSpec("inlining_decision", "int64_t", (1,)),
                  score=TensorSpec("reward", "float", (1,)))


def _values(header: Header, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for f in header.features:
        if f.dtype.kind == "f":
            out[f.name] = rng.normal(size=f.shape).astype(f.dtype)
        else:
            info = np.iinfo(f.dtype)
            out[f.name] = rng.integers(info.min, info.max, size=f.shape, dtype=f.dtype, endpoint=True)
    return out


def _stream(header: Header, events) -> bytes:
    buf = io.BytesIO()
    w = LogWriter(buf, header)
    for kind, *rest in events:
        getattr(w, kind)(*rest)
    return buf.getvalue()


def test_round_trip_every_dtype():
    h = _header()
    v0, v1 = _values(h, 0), _values(h, 1)
    data = _stream(h, [("context", "f"), ("context", "g"), ("observation", 0, v0),
                       ("observation", 1, v1), ("outcome", 1, [2.5])])
    r = LogReader(StreamSource(io.BytesIO(data)))
    assert r.header == h
    events = list(r)
    assert [type(e) for e in events] == [Context, Context, Observation, Observation, Outcome]
    assert events[1].name == "g"
    for ev, v in ((events[2], v0), (events[3], v1)):
        assert ev.context == "g"
        for name, arr in v.items():
            assert ev.features[name].dtype == arr.dtype
            np.testing.assert_array_equal(ev.features[name], arr)
    assert events[4].value[0] == pytest.approx(2.5)


def test_header_matches_llvm_layout():
    line = json.dumps({"features": [{"name": "mask", "type": "int64_t", "port": 0, "shape": [1, 33]}],
                       "advice": {"name": "index_to_evict", "type": "int64_t", "port": 0, "shape": [1]}})
    r = LogReader(StreamSource(io.BytesIO(line.encode() + b"\n")))
    assert r.header.features[0].num_bytes == 33 * 8
    assert r.header.advice.name == "index_to_evict"
    assert r.next_event() is None


@pytest.mark.parametrize("cut", [1, 10, 40, -2, -1])
def test_truncated_stream_names_the_problem(cut):
    h = _header()
    data = _stream(h, [("observation", 0, _values(h, 0))])
    header_len = data.index(b"\n") + 1
    if cut > 0:
        data = data[: header_len + cut]
    else:
        data = data[:cut]
    r = LogReader(StreamSource(io.BytesIO(data), name="mod.c"))
    with pytest.raises(ProtocolError, match="mod.c"):
        list(r)


@pytest.mark.parametrize("header", [b"", b"not json\n", b'{"features": 3}\n', b'{"features": [{"name": "x"}]}\n',
                                    b'{"features": [{"name": "x", "type": "int128", "shape": [1]}]}\n',
                                    b'{"features": []'])
def test_bad_headers(header):
    with pytest.raises(ProtocolError):
        LogReader(StreamSource(io.BytesIO(header)))


def test_wrong_size_observation_is_caught():
    # The compiler sends 4 bytes where the header promised 8: the newline check fails loudly.
    h = Header((TensorSpec("a", "int64_t", (1,)),), advice=None)
    data = json.dumps(h.to_json()).encode() + b"\n" + b'{"observation": 0}\n' + b"\x01\x00\x00\x00\n" + b"junk"
    with pytest.raises(ProtocolError):
        list(LogReader(StreamSource(io.BytesIO(data))))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=600))
def test_fuzz_garbled_streams_never_crash_otherwise(garbage, pos):
    """Any byte soup yields events or a ProtocolError, never another exception or a hang."""
    h = _header()
    data = bytearray(_stream(h, [("context", "f"), ("observation", 0, _values(h, 2))]))
    pos = min(pos, len(data))
    data[pos:pos] = garbage
    try:
        r = LogReader(StreamSource(io.BytesIO(bytes(data))))
        for _ in r:
            pass
    except ProtocolError:
        pass


def test_encode_checks_sizes():
    spec = TensorSpec("x", "float", (2,))
    with pytest.raises(ValueError):
        spec.encode([1.0, 2.0, 3.0])
    assert spec.decode(spec.encode([1.0, 2.0])).tolist() == [1.0, 2.0]


def test_decode_plan_matches_per_feature_decoding():
    """Runs of same-typed features are cut from one array; every feature must still come out as
    its own array of its own dtype and shape, including 0-d and empty tensors."""
    feats = (TensorSpec("a", "int64_t", (1,)), TensorSpec("b", "int64_t", (1,)),
             TensorSpec("c", "float", (2, 3)), TensorSpec("d", "float", (2, 3)),
             TensorSpec("e", "int8_t", ()), TensorSpec("f", "int8_t", ()),
             TensorSpec("g", "int32_t", (0,)), TensorSpec("h", "int64_t", (1,)))
    h = Header(feats, advice=TensorSpec("inlining_decision", "int64_t", (1,)))
    v = _values(h, 3)
    raw = b"".join(f.encode(v[f.name]) for f in feats) + b"\n"
    out = h.decode_observation(raw)
    assert list(out) == [f.name for f in feats]
    for f in feats:
        assert isinstance(out[f.name], np.ndarray)
        assert out[f.name].dtype == f.dtype and out[f.name].shape == f.shape
        np.testing.assert_array_equal(out[f.name], v[f.name])


def test_llvm_spelling_of_event_lines():
    """LLVM writes compact JSON ({"observation":0}); the fast path and json agree, and a
    malformed index still falls through to a clear error."""
    h = Header((TensorSpec("a", "int64_t", (1,)),), advice=None)
    body = TensorSpec("a", "int64_t", (1,)).encode([7]) + b"\n"
    head = json.dumps(h.to_json()).encode() + b"\n"
    data = head + b'{"context":"f"}\n{"observation":0}\n' + body + b'{"observation": 1}\n' + body
    events = list(LogReader(StreamSource(io.BytesIO(data))))
    assert [(e.index, e.context, int(e.features["a"][0])) for e in events[1:]] == [(0, "f", 7), (1, "f", 7)]
    with pytest.raises(ProtocolError, match="not an integer|not JSON"):
        list(LogReader(StreamSource(io.BytesIO(head + b'{"observation":-1x}\n' + body))))


def test_one_header_per_process():
    """Every compile sends the same header line: it is parsed once and shared."""
    h = _header()
    data = _stream(h, [])
    r1, r2 = (LogReader(StreamSource(io.BytesIO(data))) for _ in range(2))
    assert r1.header is r2.header == h


def test_encode_scalar_is_encode():
    for t in ALL_TYPES:
        spec = TensorSpec("x", t, (1,))
        assert spec.encode_scalar(1) == spec.encode([1])
    with pytest.raises((ValueError, OverflowError)):
        TensorSpec("x", "int8_t", (1,)).encode_scalar(1000)


def test_features_behave_as_a_read_only_dict():
    import pickle

    h = _header()
    v = _values(h, 4)
    feats = h.decode_observation(b"".join(f.encode(v[f.name]) for f in h.features))
    assert list(feats) == list(feats.keys()) == h.feature_names and len(feats) == len(v)
    assert "f_float" in feats and "nope" not in feats and feats.get("nope") is None
    with pytest.raises(KeyError):
        feats["nope"]
    plain = pickle.loads(pickle.dumps(feats))
    assert type(plain) is dict and list(plain) == h.feature_names
    for name, arr in feats.items():
        np.testing.assert_array_equal(arr, v[name])
        np.testing.assert_array_equal(plain[name], v[name])
        assert not arr.flags.writeable
    assert feats.gather(("f_float", "f_double")) is None  # different dtypes: look up one by one
    np.testing.assert_array_equal(feats.gather(("f_int64_t",)), v["f_int64_t"][None])


def test_stack_features_matches_per_feature_stacking():
    from mlgo.protocol import stack_features

    feats = (TensorSpec("a", "int64_t", (1,)), TensorSpec("b", "float", (2, 3)),
             TensorSpec("c", "int8_t", ()), TensorSpec("d", "int8_t", ()))
    h = Header(feats)
    obs = []
    for seed in range(5):
        v = _values(h, seed)
        obs.append(h.decode_observation(b"".join(f.encode(v[f.name]) for f in feats) + b"\n"))
    for group in (obs, [dict(o) for o in obs]):  # the run-by-run path and the generic one
        out = stack_features(group)
        assert list(out) == [f.name for f in feats]
        for f in feats:
            want = np.stack([o[f.name] for o in obs])
            assert out[f.name].shape == want.shape == (5, *f.shape) and out[f.name].dtype == f.dtype
            np.testing.assert_array_equal(out[f.name], want)
    assert stack_features([]) == {}
