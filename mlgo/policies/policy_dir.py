"""The policy directory: everything needed to rebuild and run a trained policy.

    DIR/policy.json    {"format": "mlgo-policy", "version": 1,
                        "problem": "inlining" | "regalloc",
                        "network": {"class": "module:Class", "config": {...}},
                        "features": [TensorSpec JSON, in the compiler header's order],
                        "advice": TensorSpec JSON,
                        "param_shapes": [[name, shape], ...], "num_params": N,
                        "params_sha256": hex digest of params.npy,
                        "vocab": "vocab" or null,
                        "vocab_sha256": {"<feature>.buckets": hex digest} (with a vocab),
                        "meta": {training metadata: algorithm, iteration, corpus, ...}}
    DIR/params.npy     the flat float32 parameter vector
    DIR/vocab/         <feature>.buckets copied from the vocab the network was built with

Saving builds the whole directory next to DIR and swaps it into place
(mlgo_base.files.write_dir), so a reader never sees a half-written policy; the digest lets a
reader that raced a replacement notice it, and a reader that finds DIR missing for an instant
(where the swap is two renames) retries.

Every file a reader reads has its digest in policy.json, so a damaged copy is an error naming
the file instead of other decisions: a bucket file cut in half still parses, and moves every
quantile. Directories saved before "vocab_sha256" existed have their bucket files checked for
what a cut leaves visible (a last line without its newline); `save_policy` on what
`load_policy` returns re-saves such a directory with every digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlgo.policies.network import FeatureMismatchError, PolicyNetwork, as_specs, network_class
from mlgo.policies.vocab import SUFFIX, buckets_text, parse_buckets
from mlgo.protocol.tensor_spec import TensorSpec
from mlgo_base.errors import MlgoError
from mlgo_base.files import write_dir

FORMAT = "mlgo-policy"
VERSION = 1
POLICY_JSON = "policy.json"
PARAMS = "params.npy"
VOCAB_DIR = "vocab"


class PolicyFormatError(MlgoError):
    """A policy directory is missing, unreadable, or for another problem."""


def _npy_bytes(params: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(params, dtype=np.float32).reshape(-1), allow_pickle=False)
    return buf.getvalue()


def save_policy(policy_dir: Path | str, network: PolicyNetwork, params: np.ndarray,
                meta: dict[str, Any] | None = None, *, saved_at: str | None = None) -> Path:
    """Write (or atomically replace) a policy directory; returns its path. `saved_at` keeps
    the time of an earlier save (when re-saving a directory), else it is now."""
    policy_dir = Path(policy_dir)
    network.unflatten_numpy(params)  # refuses a vector of the wrong size
    check_finite(params, policy_dir)
    raw = _npy_bytes(params)
    vocab = network.vocab
    vocab_files = {f"{name}{SUFFIX}": buckets_text(bounds).encode()
                   for name, bounds in sorted(vocab.items())} if vocab else {}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "problem": network.problem,
        "network": network.to_json(),
        "features": [f.to_json() for f in network.features],
        "advice": network.advice.to_json(),
        "param_shapes": [[n, list(s)] for n, s in network.param_shapes()],
        "num_params": network.num_params,
        "params_sha256": hashlib.sha256(raw).hexdigest(),
        "vocab": VOCAB_DIR if vocab else None,
        **({"vocab_sha256": {name: hashlib.sha256(data).hexdigest()
                             for name, data in vocab_files.items()}} if vocab else {}),
        "saved_at": saved_at or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "meta": meta or {},
    }

    def fill(tmp: Path) -> None:
        (tmp / PARAMS).write_bytes(raw)
        if vocab:
            (tmp / VOCAB_DIR).mkdir()
            for name, data in vocab_files.items():  # the very bytes the digests are of
                (tmp / VOCAB_DIR / name).write_bytes(data)
        (tmp / POLICY_JSON).write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
        for name in (PARAMS, *(f"{VOCAB_DIR}/{name}" for name in vocab_files), POLICY_JSON):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())

    return write_dir(policy_dir, fill)


def check_finite(params: np.ndarray, where: Path | str) -> None:
    """Refuse NaN or infinite weights: every decision made with them is garbage (NaN logits
    compare false both ways), so they are never written, loaded, served or exported."""
    bad = int(np.size(params) - np.count_nonzero(np.isfinite(params)))
    if bad:
        raise PolicyFormatError(f"{where}: {bad} of {np.size(params)} parameters are NaN or "
                                "infinite (the training that made them diverged)")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"policy metadata: {type(o).__name__} is not JSON serializable")


def read_policy_json(policy_dir: Path | str) -> dict[str, Any]:
    policy_dir = Path(policy_dir)
    path = policy_dir / POLICY_JSON
    if not path.is_file():
        raise PolicyFormatError(f"{policy_dir}: not a policy directory (no {POLICY_JSON})")
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise PolicyFormatError(f"{path}: not valid JSON ({e})") from e
    if doc.get("format") != FORMAT:
        raise PolicyFormatError(f"{path}: not an mlgo policy (format {doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise PolicyFormatError(f"{path}: policy format version {doc.get('version')}, "
                                f"this mlgo reads version {VERSION}")
    return doc


_READ_DEADLINE = 10.0  # seconds of concurrent replacement a reader waits through


def _json_identity(policy_dir: Path) -> tuple[int, int, int] | None:
    """Which policy.json the path names now (a save replaces it with another file)."""
    try:
        st = os.stat(policy_dir / POLICY_JSON)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_snapshot(policy_dir: Path) -> tuple[dict[str, Any], bytes, dict[str, np.ndarray]]:
    """policy.json, params.npy and the vocab of one and the same save, each file checked
    against the digest policy.json records for it."""
    first = (policy_dir / POLICY_JSON).read_bytes() if (policy_dir / POLICY_JSON).is_file() else b""
    doc = read_policy_json(policy_dir)
    try:
        raw = (policy_dir / PARAMS).read_bytes()
    except FileNotFoundError:
        raw = b""
    if hashlib.sha256(raw).hexdigest() != doc.get("params_sha256"):
        raise PolicyFormatError(f"{policy_dir}: {PARAMS} is missing or does not match "
                                f"{POLICY_JSON} (corrupt or half-copied policy)")
    vocab = _read_vocab(policy_dir, doc) if doc.get("vocab") else {}
    if (policy_dir / POLICY_JSON).read_bytes() != first:
        raise PolicyFormatError(f"{policy_dir}: replaced while it was read")
    return doc, raw, vocab


def _read_vocab(policy_dir: Path, doc: dict[str, Any]) -> dict[str, np.ndarray]:
    """The bucket files policy.json lists, each parsed from the bytes its digest was checked
    on (so a file replaced in between cannot slip through)."""
    vocab_dir = policy_dir / doc["vocab"]
    if not vocab_dir.is_dir():
        raise PolicyFormatError(f"{vocab_dir}: missing ({POLICY_JSON} names it: corrupt or "
                                "half-copied policy)")
    digests = doc.get("vocab_sha256")
    if digests is None:
        return _read_vocab_saved_without_digests(vocab_dir)
    if not isinstance(digests, dict) or not all(
            isinstance(d, str) and _is_bucket_file(name) for name, d in digests.items()):
        raise PolicyFormatError(f"{policy_dir / POLICY_JSON}: vocab_sha256 must map "
                                f"<feature>{SUFFIX} file names to digests")
    vocab = {}
    for name, digest in sorted(digests.items()):
        path = vocab_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PolicyFormatError(f"{path}: missing ({POLICY_JSON} lists it: corrupt or "
                                    "half-copied policy)") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise PolicyFormatError(f"{path}: does not match its digest in {POLICY_JSON} "
                                    "(corrupt, truncated or half-copied policy)")
        vocab[name[: -len(SUFFIX)]] = parse_buckets(data, path)
    return vocab


def _is_bucket_file(name: str) -> bool:
    feature = name[: -len(SUFFIX)]
    return name.endswith(SUFFIX) and feature not in ("", ".", "..") and "/" not in feature


def _read_vocab_saved_without_digests(vocab_dir: Path) -> dict[str, np.ndarray]:
    """A vocab saved before vocab_sha256: each bucket file checked for the mark of a cut
    (save_policy ends every line, so a cut mostly ends inside one)."""
    vocab = {}
    for path in sorted(vocab_dir.glob(f"*{SUFFIX}")):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise PolicyFormatError(f"{path}: ends inside a line (truncated or half-copied "
                                    f"policy; its {POLICY_JSON} predates per-file digests)")
        vocab[path.name[: -len(SUFFIX)]] = parse_buckets(data, path)
    return vocab


def load_policy(policy_dir: Path | str, problem: str | None = None, features: Any = None,
                ) -> tuple[PolicyNetwork, np.ndarray, dict[str, Any]]:
    """(network, flat params, training metadata) from a policy directory. With `problem`,
    refuse another problem's policy; with `features` (a Header or TensorSpec list), refuse a
    policy built for different features, listing each difference."""
    policy_dir = Path(policy_dir)
    # A concurrent save_policy may replace the directory while it is read: read everything,
    # then check policy.json is still the same file, and start again if not.
    # Retry while the directory keeps changing (a trainer saving every iteration, or faster),
    # up to a deadline; an error seen twice on an unchanged policy.json is the policy's own.
    deadline = time.monotonic() + _READ_DEADLINE
    previous = None
    while True:
        before = _json_identity(policy_dir)
        try:
            doc, raw, vocab = _read_snapshot(policy_dir)
            break
        except (OSError, MlgoError):
            after = _json_identity(policy_dir)
            if (before == after == previous) or time.monotonic() > deadline:
                raise
            previous = after
            time.sleep(random.uniform(0.005, 0.05))
    if problem is not None and doc["problem"] != problem:
        raise PolicyFormatError(f"{policy_dir}: the policy is for problem {doc['problem']!r}, not {problem!r}")
    specs = [TensorSpec.from_json(f) for f in doc["features"]]
    advice = TensorSpec.from_json(doc["advice"]) if doc.get("advice") else None
    cls = network_class(doc["network"]["class"])
    if cls.problem != doc["problem"]:
        raise PolicyFormatError(f"{policy_dir}: network {doc['network']['class']} is for "
                                f"{cls.problem}, the policy says {doc['problem']}")
    network = cls.from_json(specs, doc["network"]["config"], vocab, advice)
    params = np.load(io.BytesIO(raw), allow_pickle=False)
    if params.shape != (network.num_params,):
        raise PolicyFormatError(f"{policy_dir}: {PARAMS} has shape {params.shape}, the network "
                                f"takes {network.num_params} parameters")
    check_finite(params, policy_dir / PARAMS)
    if features is not None:
        try:
            network.check_features(as_specs(features))
        except FeatureMismatchError as e:
            raise FeatureMismatchError(f"{policy_dir}: {e}") from None
    return network, params, dict(doc.get("meta", {}))
