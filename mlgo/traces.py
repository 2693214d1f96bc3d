"""Decision traces on disk: what the compiler asked, what was answered, and how it turned out.

A trace is a directory:
    TRACE/trace.tfrecord   one tf.train.SequenceExample per module: context {module, reward,
                           policy_total, default_total}, feature_lists {<feature>..., action,
                           default_action, reward} with one entry per decision; traces made
                           with the inliner plugin (`--env plugin`) also have the call site of
                           each decision: call_site_caller, call_site_callee, call_site_loc
                           (bytes) and call_site_ordinal (int64), which training reads only
                           when asked (`read_trace(..., call_sites=True)`)
    TRACE/trace.json       the compiler header (feature specs), problem, policy, counts, failures
    TRACE/failures.json    each failed module's full error (only when some failed)
Make one with `trace_modules`; read it with `read_trace` (numpy arrays per module) or
`trace_dataset` (a tf.data.Dataset); `build_vocab` turns it into feature quantiles.
TensorFlow is imported only here, in the process that writes or reads, never in compile workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import Corpus, Module
from corpus_tools.report import DECISION_FACTS, ModuleDecisions, join_decisions
from mlgo.policies.vocab import DEFAULT_QUANTILES, feature_boundaries, save_vocab
from mlgo.problems import Problem
from mlgo.protocol import Header, TensorSpec
from mlgo.workers.pool import WorkerPool, run_with_progress
from mlgo.workers.tasks import CallSites, ModuleOutcome, ModuleTask, PolicySpec
from mlgo_base.errors import MlgoError, writing
from mlgo_base.files import atomic_write_text

RECORDS = "trace.tfrecord"
META = "trace.json"
FAILURES = "failures.json"
# Who decides while tracing unless told otherwise: the problem's imitation of its default
# heuristic, which behavioral cloning learns from.
PROXY_POLICY = {"inlining": "cost-threshold", "regalloc": "proxy"}
# The call-site columns (bytes, but for the ordinal) and the CallSites field each one holds.
CALL_SITE_COLUMNS = {"call_site_caller": "caller", "call_site_callee": "callee",
                     "call_site_ordinal": "ordinal", "call_site_loc": "loc"}


@dataclass
class ModuleTrace:
    module: str
    reward: float
    policy_total: float
    default_total: float
    features: dict[str, np.ndarray]  # name -> [T, *shape]
    actions: np.ndarray  # [T]
    default_actions: np.ndarray  # [T]
    call_sites: CallSites | None = None  # with read_trace(call_sites=True), when recorded

    def __len__(self) -> int:
        return len(self.actions)


def _feature(tf: Any, spec: TensorSpec, value: np.ndarray) -> Any:
    flat = np.asarray(value).reshape(-1)
    if spec.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32)))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))


class TraceWriter:
    def __init__(self, out_dir: Path | str, header: Header, meta: dict[str, Any]) -> None:
        import tensorflow as tf

        self._tf = tf
        self.dir = Path(out_dir)
        self.header = header
        self.meta = dict(meta)
        self._tmp = self.dir / (RECORDS + ".tmp")
        with writing(self._tmp):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.io.TFRecordWriter(str(self._tmp))
        self.modules = 0
        self.decisions = 0
        self.call_site_modules = 0  # modules whose decisions name their call sites

    def add(self, outcome: ModuleOutcome) -> None:
        tf = self._tf
        if outcome.actions is None or len(outcome.actions) == 0:
            return
        steps = len(outcome.actions)
        lists = {}
        for spec in self.header.features:
            if spec.name not in outcome.features:
                raise MlgoError(f"{outcome.module}: trace lacks feature {spec.name!r}")
            vals = outcome.features[spec.name]
            lists[spec.name] = tf.train.FeatureList(feature=[_feature(tf, spec, vals[t]) for t in range(steps)])
        i64 = TensorSpec("a", "int64_t", (1,))
        f32 = TensorSpec("r", "float", (1,))
        lists["action"] = tf.train.FeatureList(feature=[_feature(tf, i64, a) for a in outcome.actions])
        default = outcome.default_actions if outcome.default_actions is not None else outcome.actions
        lists["default_action"] = tf.train.FeatureList(feature=[_feature(tf, i64, a) for a in default])
        lists["reward"] = tf.train.FeatureList(feature=[_feature(tf, f32, outcome.reward)] * steps)
        sites = outcome.call_sites
        if sites is not None:
            if len(sites) != steps:
                raise MlgoError(f"{outcome.module}: {len(sites)} call site(s) for {steps} decision(s)")
            for column, attr in CALL_SITE_COLUMNS.items():
                values = getattr(sites, attr)
                lists[column] = tf.train.FeatureList(feature=[
                    tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) if attr == "ordinal"
                    else tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                    for v in values])
            self.call_site_modules += 1
        context = tf.train.Features(feature={
            "module": tf.train.Feature(bytes_list=tf.train.BytesList(value=[outcome.module.encode()])),
            "reward": _feature(tf, f32, outcome.reward),
            "policy_total": _feature(tf, f32, outcome.policy_total),
            "default_total": _feature(tf, f32, outcome.default_total),
        })
        ex = tf.train.SequenceExample(context=context, feature_lists=tf.train.FeatureLists(feature_list=lists))
        with writing(self._tmp):
            self._writer.write(ex.SerializeToString())
        self.modules += 1
        self.decisions += steps

    def close(self, extra_meta: dict[str, Any] | None = None) -> None:
        """Finish: records first, then the metadata; a trace without trace.json is incomplete."""
        with writing(self._tmp):
            self._writer.close()
            self._tmp.replace(self.dir / RECORDS)
        meta = {**self.meta, **(extra_meta or {}), "header": self.header.to_json(),
                "modules": self.modules, "decisions": self.decisions,
                "call_site_modules": self.call_site_modules}
        atomic_write_text(self.dir / META, json.dumps(meta, indent=1) + "\n")


def load_meta(trace_dir: Path | str) -> dict[str, Any]:
    p = Path(trace_dir) / META
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as e:
        raise MlgoError(f"{p}: not found; {trace_dir} is not a finished trace (run `mlgo trace`)") from e
    except json.JSONDecodeError as e:
        raise MlgoError(f"{p}: not valid JSON ({e})") from e


def trace_header(trace_dir: Path | str) -> Header:
    from mlgo.protocol import parse_header

    return parse_header(json.dumps(load_meta(trace_dir)["header"]).encode(), str(trace_dir))


def _parse_spec(tf: Any, header: Header, call_sites: bool = False) -> tuple[dict, dict]:
    context = {
        "module": tf.io.FixedLenFeature([], tf.string),
        "reward": tf.io.FixedLenFeature([1], tf.float32),
        "policy_total": tf.io.FixedLenFeature([1], tf.float32),
        "default_total": tf.io.FixedLenFeature([1], tf.float32),
    }
    seq = {}
    for f in header.features:
        dt = tf.float32 if f.dtype.kind == "f" else tf.int64
        seq[f.name] = tf.io.FixedLenSequenceFeature([f.num_elements], dt)
    seq["action"] = tf.io.FixedLenSequenceFeature([1], tf.int64)
    seq["default_action"] = tf.io.FixedLenSequenceFeature([1], tf.int64)
    seq["reward"] = tf.io.FixedLenSequenceFeature([1], tf.float32)
    if call_sites:  # absent from a module (an older trace, interactive mode): zero entries
        for column in CALL_SITE_COLUMNS:
            dt = tf.int64 if column == "call_site_ordinal" else tf.string
            seq[column] = tf.io.FixedLenSequenceFeature([1], dt, allow_missing=True)
    return context, seq


def trace_dataset(trace_dir: Path | str, call_sites: bool = False) -> Any:
    """A tf.data.Dataset of (context, sequence) dicts, one element per module; with
    `call_sites`, the sequences also hold the CALL_SITE_COLUMNS (empty where not recorded)."""
    import tensorflow as tf

    header = trace_header(trace_dir)
    ctx, seq = _parse_spec(tf, header, call_sites)
    ds = tf.data.TFRecordDataset(str(Path(trace_dir) / RECORDS))
    return ds.map(lambda r: tf.io.parse_single_sequence_example(r, ctx, seq))


def _call_sites(seq: dict[str, np.ndarray], steps: int, where: str) -> CallSites | None:
    columns = {attr: seq[column][:, 0] for column, attr in CALL_SITE_COLUMNS.items()}
    if all(len(v) == 0 for v in columns.values()):
        return None
    if any(len(v) != steps for v in columns.values()):
        raise MlgoError(f"{where}: call-site columns of {sorted(len(v) for v in columns.values())} "
                        f"entries for {steps} decisions")
    return CallSites([b.decode() for b in columns["caller"]], [b.decode() for b in columns["callee"]],
                     [int(o) for o in columns["ordinal"]], [b.decode() for b in columns["loc"]])


def read_trace(trace_dir: Path | str, call_sites: bool = False) -> Iterator[ModuleTrace]:
    """Each module's trace as numpy arrays, features reshaped to the header's shapes; with
    `call_sites`, each module's CallSites when the trace recorded them (else None)."""
    header = trace_header(trace_dir)
    try:
        for ctx, seq in trace_dataset(trace_dir, call_sites).as_numpy_iterator():
            steps = len(seq["action"])
            feats = {
                f.name: seq[f.name].reshape((steps, *f.shape)).astype(f.dtype)
                for f in header.features
            }
            module = ctx["module"].decode()
            yield ModuleTrace(
                module, float(ctx["reward"][0]), float(ctx["policy_total"][0]),
                float(ctx["default_total"][0]), feats, seq["action"][:, 0],
                seq["default_action"][:, 0],
                _call_sites(seq, steps, f"{Path(trace_dir) / RECORDS}: {module}") if call_sites else None,
            )
    except Exception as e:  # tf.errors.DataLossError and friends
        if type(e).__module__.startswith("tensorflow"):
            raise MlgoError(f"{Path(trace_dir) / RECORDS}: corrupt or truncated trace ({e})") from e
        raise


@dataclass
class TraceSummary:
    output: Path
    modules: int  # modules with decisions, written to the trace
    decisions: int
    no_decisions: int  # modules the compiler asked nothing about
    failures: list[tuple[str, str]] = field(default_factory=list)  # (module, error)

    def format(self) -> str:
        return (f"traced {self.modules} module(s), {self.decisions} decision(s) -> {self.output} "
                f"({self.no_decisions} with no decision, {len(self.failures)} failed)")


def trace_modules(problem: Problem, modules: Sequence[Module], output: Path, *,
                  pool: WorkerPool, policy: str | None = None, gin_config: str = "",
                  timeout: float = 300.0) -> TraceSummary:
    """Compile `modules` under `policy` (default: PROXY_POLICY) and record every decision
    into the trace directory `output`."""
    policy = policy or PROXY_POLICY[problem.name]
    spec = PolicySpec.named(policy)
    tasks = [ModuleTask(problem.name, m, spec, record=True, gin_config=gin_config,
                        timeout=timeout) for m in modules]
    writer = TraceWriter(output, problem.header(), {"problem": problem.name, "policy": policy})
    failures: list[ModuleOutcome] = []
    no_decisions = 0
    for out in run_with_progress(pool, tasks, "trace"):
        if not out.ok:
            failures.append(out)
        elif out.actions is None:
            no_decisions += 1
        else:
            writer.add(out)
    writer.close({"failed": [f.module for f in failures], "no_decisions": no_decisions})
    if failures:
        atomic_write_text(Path(output) / FAILURES, json.dumps(
            [{"module": f.module, "error": f.error} for f in failures], indent=1))
    return TraceSummary(Path(output), writer.modules, writer.decisions, no_decisions,
                        [(f.module, f.error) for f in failures])


def build_vocab(trace_dir: Path, out_dir: Path, n: int = DEFAULT_QUANTILES) -> dict[str, int]:
    """Per-feature (per-component for a vector) quantile boundaries of a trace's decisions
    into `out_dir` (the vocab, mlgo/policies/vocab.py); returns each list's length by name."""
    header = trace_header(trace_dir)
    chunks: dict[str, list[np.ndarray]] = {f.name: [] for f in header.features}
    modules = 0
    for t in read_trace(trace_dir):
        modules += 1
        for name, arr in t.features.items():
            chunks[name].append(np.asarray(arr).reshape(-1))
    if modules == 0:
        raise MlgoError(f"{trace_dir}: the trace has no decisions; nothing to build a vocab from")
    elements = {f.name: f.num_elements for f in header.features}
    vocab = {}
    for name, parts in chunks.items():
        vocab.update(feature_boundaries(name, elements[name], np.concatenate(parts), n))
    save_vocab(out_dir, vocab)
    return {name: len(b) for name, b in vocab.items()}


def trace_decisions(trace_dir: Path | str) -> dict[str, ModuleDecisions]:
    """Per module of a trace (or of a search directory, whose best trajectories are one), its
    decisions with their call sites. MlgoError unless every module recorded its call sites,
    which compiles under the inliner plugin (`--env plugin`) do."""
    out: dict[str, ModuleDecisions] = {}
    for t in read_trace(trace_dir, call_sites=True):
        if t.call_sites is None:
            raise MlgoError(f"{trace_dir}: module {t.module} has no call-site identities; only "
                            "decisions made with --env plugin name their call sites")
        out[t.module] = ModuleDecisions(t.call_sites.caller, t.call_sites.callee,
                                        t.call_sites.ordinal, [int(a) for a in t.actions],
                                        [int(a) for a in t.default_actions])
    if not out:
        raise MlgoError(f"{trace_dir}: the trace has no decisions")
    return out


CALL_GRAPH_MATCHED = "call_graph_matched"


def decision_graph_features(trace_dir: Path | str, corpus: Corpus | Path | str
                            ) -> dict[str, dict[str, np.ndarray]]:
    """Extra per-decision features for training: per module of the trace, each of
    corpus_tools.report.DECISION_FACTS by name as an int64 array [T] in decision order (the
    call-graph facts of the corpus module before optimization), and CALL_GRAPH_MATCHED, 1 where
    the decision's caller and callee are in that graph and 0 where not (an inliner clone, a
    module llvmlite cannot read), whose facts are then -1."""
    corp = corpus if isinstance(corpus, Corpus) else Corpus.load(corpus)
    joined = join_decisions(corp, trace_decisions(trace_dir), str(trace_dir))
    return {
        module: {**{f: np.asarray(columns[f], dtype=np.int64) for f in DECISION_FACTS},
                 CALL_GRAPH_MATCHED: np.asarray(joined.matched[module], dtype=np.int64)}
        for module, columns in joined.facts.items()
    }
