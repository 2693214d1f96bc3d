"""An IR2Vec seed vocabulary trained from a corpus, for LLVM 22's inliner embeddings.

Given `-mllvm -ml-inliner-ir2vec-vocab-file=F`, clang-22's ML inliner also sends
`callee_embedding` and `caller_embedding`: sums over each function's instructions of the
vocabulary's vectors for the opcode, the type and the operand kinds. No vocabulary ships with
LLVM and none is downloaded: this module trains one from the corpus's own IR.

`llvm-ir2vec-22 entities` names the vocabulary's entries (opcodes, then types, then operand
kinds and compare predicates), `llvm-ir2vec-22 triplets M.bc` lists each module's facts as
(head, tail, relation): an instruction's opcode and its type, the next instruction's opcode,
its operands' kinds. A TransE model (Bordes et al., 2013) places every entity and relation in
R^dim so that head + relation is near tail for the facts and far for corrupted ones (head or
tail replaced by a random entity), trained by SGD on the margin loss. The vocabulary file is
LLVM's JSON layout: {"Opcodes": {name: [floats]}, "Types": {...}, "Arguments": {...}}."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpus_tools.corpus import Corpus
from mlgo_base import process, toolchain
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text

log = logging.getLogger(__name__)
TOOL = "llvm-ir2vec"
IR2VEC_MAJOR = 22  # the first LLVM mlgo runs on whose inliner reads a vocabulary


@dataclass(frozen=True)
class VocabSummary:
    path: Path
    modules: int
    facts: int  # distinct (head, tail, relation) triplets trained on
    entities: int
    dim: int
    final_loss: float
    ranked_first: float  # fraction of facts whose true tail is the nearest entity to head + r


def ir2vec_tool() -> str:
    if toolchain.llvm_major() < IR2VEC_MAJOR:
        raise MlgoError(f"IR2Vec vocabularies need LLVM {IR2VEC_MAJOR} (mlgo is set to LLVM "
                        f"{toolchain.llvm_major()}): set {toolchain.VERSION_VARIABLE}=22")
    return toolchain.locate(TOOL, override=False)


def entities(tool: str) -> list[str]:
    """The vocabulary's entry names, indexed by the ids the triplets use."""
    with tempfile.TemporaryDirectory(prefix="mlgo-ir2vec-") as td:
        out = Path(td) / "entity2id.txt"
        process.run([tool, "entities", "-o", str(out)], what="IR2Vec entities", timeout=60)
        lines = out.read_text().splitlines()
    names: dict[int, str] = {}
    for line in lines[1:]:
        name, ident = line.rsplit("\t", 1)
        names[int(ident)] = name
    if sorted(names) != list(range(len(names))) or len(names) != int(lines[0]):
        raise MlgoError(f"{tool} entities: unexpected listing ({lines[:2]} ...)")
    return [names[i] for i in range(len(names))]


def module_triplets(tool: str, bc: Path, timeout: float = 300.0) -> np.ndarray:
    """(head, tail, relation) rows of one module's facts."""
    with tempfile.TemporaryDirectory(prefix="mlgo-ir2vec-") as td:
        out = Path(td) / "train2id.txt"
        process.run([tool, "triplets", str(bc), "-o", str(out)], what=f"{bc}: IR2Vec triplets",
                    timeout=timeout)
        rows = [line.split() for line in out.read_text().splitlines()[1:] if line.strip()]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def sections(names: Sequence[str]) -> dict[str, list[int]]:
    """Entity ids per vocabulary section: the opcodes come first, then the types (named
    ...Ty), then the operand kinds and predicates, which LLVM reads from "Arguments"."""
    types = [i for i, n in enumerate(names) if n.endswith("Ty")]
    if not types or types != list(range(types[0], types[-1] + 1)):
        raise MlgoError(f"IR2Vec entities: the types are not one run ({names[:5]} ...)")
    return {"Opcodes": list(range(types[0])), "Types": types,
            "Arguments": list(range(types[-1] + 1, len(names)))}


def train_transe(facts: np.ndarray, num_entities: int, num_relations: int, *, dim: int = 64,
                 epochs: int = 200, lr: float = 0.01, margin: float = 1.0, batch: int = 512,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Entity and relation vectors with head + relation near tail (squared L2) for `facts`,
    entities kept on the unit sphere; returns (entities, relations, last epoch's mean loss)."""
    rng = np.random.default_rng(seed)
    bound = 6.0 / np.sqrt(dim)
    ent = rng.uniform(-bound, bound, (num_entities, dim))
    rel = rng.uniform(-bound, bound, (num_relations, dim))
    rel /= np.linalg.norm(rel, axis=1, keepdims=True)
    loss = 0.0
    for _ in range(epochs):
        ent /= np.linalg.norm(ent, axis=1, keepdims=True)
        order = rng.permutation(len(facts))
        total = 0.0
        for start in range(0, len(order), batch):
            h, t, r = facts[order[start:start + batch]].T
            # Corrupt the head or the tail of each fact with a random entity.
            corrupt_head = rng.random(len(h)) < 0.5
            rand = rng.integers(0, num_entities, len(h))
            h2, t2 = np.where(corrupt_head, rand, h), np.where(corrupt_head, t, rand)
            pos = ent[h] + rel[r] - ent[t]
            neg = ent[h2] + rel[r] - ent[t2]
            gap = margin + (pos * pos).sum(1) - (neg * neg).sum(1)
            active = gap > 0
            total += float(gap[active].sum())
            if not active.any():
                continue
            gp, gn = 2 * pos[active], 2 * neg[active]
            g_ent = np.zeros_like(ent)
            g_rel = np.zeros_like(rel)
            np.add.at(g_ent, h[active], gp)
            np.add.at(g_ent, t[active], -gp)
            np.add.at(g_ent, h2[active], -gn)
            np.add.at(g_ent, t2[active], gn)
            np.add.at(g_rel, r[active], gp - gn)
            ent -= lr * g_ent
            rel -= lr * g_rel
        loss = total / max(1, len(facts))
    ent /= np.linalg.norm(ent, axis=1, keepdims=True)
    return ent, rel, loss


def ranked_first(facts: np.ndarray, ent: np.ndarray, rel: np.ndarray) -> float:
    """Fraction of facts whose tail is the entity nearest to head + relation (a fit check)."""
    guess = ent[facts[:, 0]] + rel[facts[:, 2]]
    dist = ((guess[:, None, :] - ent[None, :, :]) ** 2).sum(-1)
    return float((dist.argmin(1) == facts[:, 1]).mean())


def train_vocab(corpus: Corpus, out: Path, *, dim: int = 64, epochs: int = 200,
                seed: int = 0, max_modules: int = 0) -> VocabSummary:
    """Train a vocabulary on `corpus`'s modules (the first `max_modules`, 0: all) and write it
    to `out` in LLVM's JSON layout."""
    if dim < 1:
        raise MlgoError(f"IR2Vec vocabulary dimension must be at least 1, got {dim}")
    tool = ir2vec_tool()
    names = entities(tool)
    modules = corpus.modules[:max_modules] if max_modules else corpus.modules
    if not modules:
        raise MlgoError(f"{corpus.root}: the corpus has no modules")
    rows = [module_triplets(tool, m.bc_path) for m in modules]
    facts = np.unique(np.concatenate(rows), axis=0)
    if len(facts) == 0:
        raise MlgoError(f"{corpus.root}: no IR2Vec facts in {len(modules)} module(s)")
    if facts[:, :2].max() >= len(names):
        raise MlgoError(f"{tool}: triplets name entity {facts[:, :2].max()}, the tool lists "
                        f"{len(names)}")
    ent, rel, loss = train_transe(facts, len(names), int(facts[:, 2].max()) + 1, dim=dim,
                                  epochs=epochs, seed=seed)
    vocab = {section: {names[i]: [round(float(x), 6) for x in ent[i]] for i in ids}
             for section, ids in sections(names).items()}
    atomic_write_text(out, json.dumps(vocab) + "\n")
    return VocabSummary(out, len(modules), len(facts), len(names), dim, loss,
                        ranked_first(facts, ent, rel))
