"""What stock LLVM 22 sends and expects on its channels, beside mlgo/protocol/llvm19.py.

LLVM 22 declares the same 38 inliner features (llvm/Analysis/InlineModelFeatureMaps.h of
llvm-22-dev: INLINE_COST_FEATURE_ITERATOR then INLINE_FEATURE_ITERATOR) and the same 21
regalloc eviction features (of shape [1,33], plus `progress`), with the same advice names, so
the lists are LLVM 19's; tests/test_llvm_versions.py checks them against clang-22's live header
and against that header file. What differs:
  - Under -inliner-interactive-include-default the default advisor's decision arrives in its own
    slot, `inlining_default`, the last feature; no feature is overwritten (LLVM 19 writes it
    over callee_basic_block_count).
  - Given `-mllvm -ml-inliner-ir2vec-vocab-file=F -mllvm -ir2vec-vocab-path=F`, the inliner also sends the IR2Vec
    embeddings of the callee and the caller (float, one element per vocabulary dimension).
  - The ML eviction advisor stops offering a live range once it was evicted
    `-mlregalloc-max-eviction-count` times (default 100): its mask bit is then 0.

Pure data, no numpy: the compiler wrapper's per-compile path imports it."""

from __future__ import annotations

from mlgo.protocol import llvm19
from mlgo.protocol.llvm19 import FeatureDecl

ADVICE = dict(llvm19.ADVICE)
INLINE_FEATURES: tuple[str, ...] = llvm19.INLINE_FEATURES
REGALLOC_FEATURES: tuple[FeatureDecl, ...] = llvm19.REGALLOC_FEATURES
FEATURES: dict[str, tuple[FeatureDecl, ...]] = dict(llvm19.FEATURES)

# The extra tensor LLVM adds last under -inliner-interactive-include-default; in LLVM 22 it
# holds the default advisor's decision.
DEFAULT_DECISION_SLOT = "inlining_default"

# Sent only with -ml-inliner-ir2vec-vocab-file: float embeddings of the vocabulary's dimension.
# That option switches the embeddings on; IR2Vec's analysis reads the file named by the other.
IR2VEC_VOCAB_OPTIONS = ("-ml-inliner-ir2vec-vocab-file", "-ir2vec-vocab-path")
EMBEDDING_FEATURES = ("callee_embedding", "caller_embedding")
