"""Feature normalization by quantiles (the "vocab").

For each feature the vocab holds sorted boundaries b_0 <= ... <= b_{n-1}, taken at evenly
spaced quantiles of the values seen in a trace, one float per line in
`VOCAB_DIR/<feature>.buckets` (MLGO's layout). A raw value x becomes

    q = #{i : b_i <= x} / n          (in [0, 1]; 0 below every boundary, 1 at or above the last)

and the network sees [q, sqrt(q), q^2] (and, optionally, sign(x) * log1p(|x|), which keeps
the magnitude that q discards outside the trace's range). Quantiles make heavy-tailed counts
(costs, sizes, 2**40-sized outliers) comparable without hand-tuned scaling.

QuantileTable below is the numpy and TensorFlow implementation of the `quantile` operation
(mlgo/policies/ops.py); TensorFlow is imported lazily so numpy-only workers never load it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mlgo_base.errors import MlgoError, writing
from mlgo_base.files import atomic_write_text

SUFFIX = ".buckets"
DEFAULT_QUANTILES = 1000
_BISECT_ROWS = 8  # up to this many rows, bisect in Python beats numpy's per-call overhead


class VocabError(MlgoError):
    """A vocab directory lacks a feature's boundaries or holds unreadable ones."""


def buckets_path(vocab_dir: Path | str, feature: str) -> Path:
    return Path(vocab_dir) / f"{feature}{SUFFIX}"


def load_vocab(vocab_dir: Path | str, features: Iterable[str]) -> dict[str, np.ndarray]:
    """Boundaries (float64, sorted) for each named feature; all missing ones are reported at once."""
    vocab_dir = Path(vocab_dir)
    if not vocab_dir.is_dir():
        raise VocabError(f"vocab directory {vocab_dir} does not exist (build one with `mlgo vocab`)")
    out: dict[str, np.ndarray] = {}
    missing = []
    for name in features:
        path = buckets_path(vocab_dir, name)
        if not path.is_file():
            missing.append(name)
            continue
        out[name] = parse_buckets(path.read_bytes(), path)
    if missing:
        raise VocabError(
            f"vocab directory {vocab_dir} has no boundaries for feature(s) {', '.join(missing)} "
            f"(expected {', '.join(f'{m}{SUFFIX}' for m in missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}); rebuild it with `mlgo vocab` from a trace "
            "of the same compiler"
        )
    return out


def parse_buckets(data: bytes, path: Path | str) -> np.ndarray:
    """The sorted boundaries in the bytes of `path` (one number per line)."""
    try:
        values = np.array([float(t) for t in data.decode("ascii").split()], dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as e:
        raise VocabError(f"{path}: not one number per line ({e})") from e
    if np.isnan(values).any():
        raise VocabError(f"{path}: contains NaN")
    return np.sort(values)


def buckets_text(bounds: np.ndarray) -> str:
    """What `save_vocab` writes for one feature: every boundary, each on a line of its own
    ending in a newline (so a file cut short mostly ends inside a line)."""
    return "".join(f"{b!r}\n" for b in np.asarray(bounds, dtype=np.float64).tolist())


def quantile_boundaries(values: np.ndarray, n: int = DEFAULT_QUANTILES) -> np.ndarray:
    """Up to n+1 distinct boundaries at evenly spaced quantiles (duplicates dropped, so a
    feature with few distinct values gets few boundaries)."""
    if values.size == 0:
        return np.zeros(0)
    qs = np.quantile(values.astype(np.float64), np.linspace(0.0, 1.0, n + 1), method="inverted_cdf")
    return np.unique(qs)


def save_vocab(vocab_dir: Path | str, vocab: Mapping[str, np.ndarray]) -> None:
    """Write `<feature>.buckets` files, each atomically (temp file + rename)."""
    with writing(vocab_dir):
        Path(vocab_dir).mkdir(parents=True, exist_ok=True)
    for name, bounds in vocab.items():
        atomic_write_text(buckets_path(vocab_dir, name), buckets_text(bounds))


class QuantileTable:
    """The boundaries of F input columns, ready to turn x [B, F] into q [B, F] (float32).

    TensorFlow sees one [F, max_n] table padded with +inf (never <= a finite x) and searches
    row f for column f. numpy bisects plain Python lists when there are few rows (one decision
    at a time in a worker: ~40x faster than numpy's per-call overhead) and uses searchsorted
    otherwise. All three count #{i : b_i <= x} exactly (comparisons in float64)."""

    def __init__(self, bounds: list[np.ndarray]) -> None:
        bounds = [np.asarray(b, dtype=np.float64) for b in bounds]
        width = max([len(b) for b in bounds] + [1])
        self.table = np.full((len(bounds), width), np.inf, dtype=np.float64)
        for i, b in enumerate(bounds):
            self.table[i, : len(b)] = b
        self.rows = bounds
        self._lists = [b.tolist() for b in bounds]
        # n_f, at least 1 so that a feature without boundaries maps to q = 0.
        self.counts = np.array([max(len(b), 1) for b in bounds], dtype=np.float32)

    def numpy(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] <= _BISECT_ROWS:
            idx = np.array([[bisect.bisect_right(b, v) for b, v in zip(self._lists, row, strict=True)]
                            for row in x.tolist()], dtype=np.float32).reshape(x.shape)
        else:
            idx = np.empty(x.shape, dtype=np.float32)
            for f, b in enumerate(self.rows):
                idx[:, f] = np.searchsorted(b, x[:, f], side="right")
        return idx / self.counts

    def tf(self, x):
        """The TensorFlow twin (XLA-compilable: searchsorted lowers to UpperBound)."""
        import tensorflow as tf

        x = tf.cast(x, tf.float64)
        idx = tf.searchsorted(tf.constant(self.table), tf.transpose(x), side="right")
        return tf.cast(tf.transpose(idx), tf.float32) / tf.constant(self.counts)

