"""LLVM's training-log / interactive wire protocol: the one place that reads and writes it."""

from mlgo.protocol.tensor_spec import DTYPES, TensorSpec
from mlgo.protocol.training_log import (
    ByteSource,
    Context,
    Event,
    Features,
    FeatureValues,
    Header,
    LogReader,
    LogWriter,
    Observation,
    Outcome,
    StreamSource,
    parse_header,
    stack_features,
)

__all__ = [
    "DTYPES", "TensorSpec", "ByteSource", "Context", "Event", "Features", "FeatureValues",
    "Header", "LogReader", "LogWriter",
    "Observation", "Outcome", "StreamSource", "parse_header", "stack_features",
]
