"""mlgo on LLVM 19 and on LLVM 22 (MLGO_LLVM_VERSION): the compiler-facing basics run on each
installed version, corpora record the version that emitted them, and a corpus of the other
version is refused with one line naming a module."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import SOURCES, generated_source, make_small_corpus

import mlgo.env
from corpus_tools import check, extract, merge
from corpus_tools.corpus import Corpus, LlvmVersionError, check_llvm_version
from mlgo.cli.main import main as mlgo_main
from mlgo.compiler.cache import BaselineCache
from mlgo.problems import get_problem
from mlgo.problems.inlining.problem import LLVM_DEFAULT
from mlgo.protocol import for_llvm
from mlgo_base import toolchain
from mlgo_base.errors import CorpusError, MlgoError, ToolchainError

VERSIONS = [pytest.param(v, marks=pytest.mark.skipif(
    not toolchain.is_installed(v),
    reason=f"clang-{v} is not installed (apt-get install clang-{v} llvm-{v} llvm-{v}-dev "
    f"lld-{v})")) for v in toolchain.SUPPORTED_MAJORS]
MODULES = ("calls.c", "strings.c", "pressure.c")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Per installed LLVM version, a corpus extracted (at -Oz) with that version's clang."""
    src = tmp_path_factory.mktemp("src") / "small"
    src.mkdir()
    for name in MODULES:
        (src / name).write_text(SOURCES[name])
    # Many values live across a call: the allocator evicts on both versions (pressure.c's
    # functions need no eviction on LLVM 22).
    (src / "evicting.c").write_text(generated_source("regalloc", 1))
    out = {}
    for major in toolchain.SUPPORTED_MAJORS:
        if not toolchain.is_installed(major):
            continue
        corpus = tmp_path_factory.mktemp(f"llvm{major}") / "corpus"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(toolchain.VERSION_VARIABLE, str(major))
            summary = extract.extract_sources(src, corpus, project="small", opt_level="-Oz",
                                              progress=False)
        assert not summary.failed, summary.failed
        out[major] = corpus
    return out


@pytest.fixture(params=VERSIONS)
def llvm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(request.param))
    return request.param


def _producer(bc: Path, major: int) -> str:
    """The producer string of a bitcode file's identification block ("LLVM22.1.8")."""
    tool = shutil.which(f"llvm-bcanalyzer-{major}") or f"/usr/lib/llvm-{major}/bin/llvm-bcanalyzer"
    dump = subprocess.run([tool, "--dump", str(bc)], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    m = re.search(r"record string = '(LLVM[0-9.]+)'", dump)
    assert m, dump[:500]
    return m.group(1)


def test_the_chosen_version_is_the_compiler_mlgo_runs(llvm: int) -> None:
    assert toolchain.llvm_major() == llvm
    assert toolchain.clang().version.startswith(f"{llvm}.")
    assert toolchain.clang().path.endswith(f"clang-{llvm}")


def test_extraction_records_the_version(llvm: int, corpora: dict[int, Path]) -> None:
    corpus = Corpus.load(corpora[llvm])
    desc = json.loads((corpora[llvm] / "corpus_description.json").read_text())
    assert desc["llvm_version"] == llvm and corpus.llvm_version == llvm
    assert desc["opt_level"] == "-Oz"
    # The IR really is that clang's.
    for m in corpus.modules:
        assert _producer(m.bc_path, llvm).startswith(f"LLVM{llvm}.")
    check_llvm_version(corpus)  # and the problems take it


def test_feature_lists_are_the_compilers(llvm: int) -> None:
    data = for_llvm(llvm)
    inlining = get_problem("inlining")
    assert inlining.header().feature_names == list(data.INLINE_FEATURES)
    regalloc = get_problem("regalloc").header()
    assert [(f.name, f.type, f.num_elements) for f in regalloc.features] == list(
        data.REGALLOC_FEATURES)
    assert regalloc.advice.name == data.ADVICE["regalloc"]
    with_default = inlining.for_policy(LLVM_DEFAULT).header().feature_names
    assert with_default == [*data.INLINE_FEATURES, "inlining_default"]


def test_llvm22_inliner_features_match_its_header_file() -> None:
    """LLVM 22's list against llvm-22-dev's InlineModelFeatureMaps.h, where the compiler
    declares it (the cost features, then the other inliner features; the embeddings come
    after, only with a vocabulary)."""
    config = shutil.which("llvm-config-22") or "/usr/lib/llvm-22/bin/llvm-config"
    if not Path(config).exists():
        pytest.skip("llvm-22-dev is not installed")
    include = subprocess.run([config, "--includedir"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
    text = (Path(include) / "llvm/Analysis/InlineModelFeatureMaps.h").read_text()
    names = []
    for iterator in ("INLINE_COST_FEATURE_ITERATOR", "INLINE_FEATURE_ITERATOR"):
        body = text.split(f"#define {iterator}(M)", 1)[1].split("\n\n", 1)[0]
        names += re.findall(r"M\(\s*int64_t,\s*\{1\},\s*(\w+),", body)
    assert names == list(for_llvm(22).INLINE_FEATURES)
    tail = text.split("INLINE_FEATURE_ITERATOR(POPULATE_INDICES)", 1)[1]
    assert re.findall(r"^\s*(\w+_embedding),?$", tail, re.M) == list(
        for_llvm(22).EMBEDDING_FEATURES)


def test_llvm_default_reproduces_plain_oz(llvm: int, corpora: dict[int, Path],
                                          tmp_path: Path) -> None:
    """Served through the environment, the compiler's own default decisions give plain -Oz's
    object; on LLVM 22 they arrive in their own slot and every other feature is the release
    compile's, on LLVM 19 callee_basic_block_count carries them instead."""
    corpus = Corpus.load(corpora[llvm])
    variant = get_problem("inlining").for_policy(LLVM_DEFAULT)
    assert variant.overwritten_features == (
        ("callee_basic_block_count",) if llvm == 19 else ())
    cache = BaselineCache(tmp_path / "cache")
    overwritten = 0
    decisions = 0
    for module in corpus.modules:
        env = mlgo.env.CompilerEnv(variant, module, cache=cache, record=True)
        first = mlgo.env.run_episode(env, variant.heuristic(LLVM_DEFAULT))
        assert first.measurement.total == first.default.total, module.name
        decisions += first.num_decisions
        plain = mlgo.env.CompilerEnv(variant.plain, module, cache=cache, record=True)
        again = mlgo.env.replay(plain, first.actions)
        for a, b in zip(first.observations, again.observations, strict=True):
            differ = [n for n in b if not np.array_equal(a[n], b[n])]
            assert set(differ) <= set(variant.overwritten_features), (module.name, differ)
            overwritten += bool(differ)
            if llvm == 22:
                assert int(a["inlining_default"].item(0)) in (0, 1)
    assert decisions >= 5
    # LLVM 19's decisions (0/1) replace block counts of 1 or more somewhere.
    assert (overwritten > 0) == (llvm == 19)


def test_regalloc_environment_runs(llvm: int, corpora: dict[int, Path], tmp_path: Path) -> None:
    corpus = Corpus.load(corpora[llvm])
    module = next(m for m in corpus.modules if m.name.endswith("evicting.c"))
    problem = get_problem("regalloc")
    env = mlgo.env.CompilerEnv(problem, module, cache=BaselineCache(tmp_path / "cache"))
    never = mlgo.env.run_episode(env, problem.heuristic("never"))
    rule = mlgo.env.run_episode(env, problem.heuristic("default-rule"))
    assert never.num_decisions > 0 and rule.num_decisions > 0
    assert never.default.total > 0 and never.measurement.total != rule.measurement.total


def test_a_corpus_of_the_other_version_is_refused(tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    """By the problems (mlgo eval: one line naming a module), by extraction into it and by
    merging; a corpus that records no version is LLVM 19's. Runs on whichever version is
    installed: the other one is only named in the corpus description."""
    ours = toolchain.llvm_major()
    theirs = next(m for m in toolchain.SUPPORTED_MAJORS if m != ours)
    mine = make_small_corpus(tmp_path / "mine")
    assert Corpus.load(mine).llvm_version == ours
    other = tmp_path / "other"
    shutil.copytree(mine, other)
    desc = json.loads((other / "corpus_description.json").read_text())
    (other / "corpus_description.json").write_text(json.dumps({**desc, "llvm_version": theirs}))

    monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(ours))
    with pytest.raises(LlvmVersionError) as info:
        get_problem("inlining").check_corpus(Corpus.load(other))
    first = Corpus.load(other).modules[0].bc_path
    assert str(info.value).startswith(f"{first}: IR emitted by LLVM {theirs}")
    assert f"MLGO_LLVM_VERSION={theirs}" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LlvmVersionError,
                       match=f"holds IR of LLVM {theirs}, mlgo is set to LLVM {ours}"):
        extract.extract_sources(tmp_path / "mine" / "src", other, project="small",
                                opt_level="-Oz", progress=False)
    with pytest.raises(LlvmVersionError, match=f"IR emitted by LLVM {theirs}"):
        check.check_corpus(other, progress=False)  # `mlgo corpus check`
    with pytest.raises(CorpusError, match="different LLVM versions cannot be merged"):
        merge.merge_corpora([mine, other], tmp_path / "merged")
    (other / "corpus_description.json").write_text(json.dumps({**desc, "llvm_version": "22"}))
    with pytest.raises(CorpusError, match=r"corpus_description.json: llvm_version '22' is not"):
        get_problem("inlining").check_corpus(Corpus.load(other))

    # The CLI: --llvm-version 22 on a corpus that records no version (LLVM 19's) stops before
    # any compile, in one line.
    unrecorded = {k: v for k, v in desc.items() if k != "llvm_version"}
    (mine / "corpus_description.json").write_text(json.dumps(unrecorded))
    assert Corpus.load(mine).llvm_version == 19
    assert mlgo_main(["eval", "--problem", "inlining", "--corpus", str(mine), "--policy",
                      "cost-threshold", "--workers", "1", "--llvm-version", "22"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"mlgo: error: {Corpus.load(mine).modules[0].bc_path}: ")
    assert "IR emitted by LLVM 19 (no version recorded" in err


def test_the_version_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, "20")
    with pytest.raises(ToolchainError, match=r"MLGO_LLVM_VERSION='20': mlgo runs on LLVM 19 or 22"):
        toolchain.clang()
    monkeypatch.delenv(toolchain.VERSION_VARIABLE)
    for installed, chosen in (({19, 22}, 19), ({22}, 22), ({19}, 19), (set(), 19)):
        monkeypatch.setattr(toolchain, "is_installed", lambda m, i=installed: m in i)
        assert toolchain.llvm_major() == chosen, installed


def test_trained_ir2vec_vocabulary_loads_in_clang22(corpora: dict[int, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlgo vocab --ir2vec` trains a vocabulary from the corpus; given to clang-22, the inliner
    sends both embeddings, of the vocabulary's width, and they differ between call sites."""
    if 22 not in corpora:
        pytest.skip("clang-22 is not installed")
    from mlgo.problems.inlining.problem import InliningForSize

    vocab = tmp_path / "vocab.json"
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, "22")
    assert mlgo_main(["vocab", "--ir2vec", str(corpora[22]), "-o", str(vocab), "--dim", "8",
                      "--epochs", "30"]) == 0
    sections = json.loads(vocab.read_text())
    assert set(sections) == {"Opcodes", "Types", "Arguments"}
    assert {"Load", "Call"} <= set(sections["Opcodes"]) and "PointerTy" in sections["Types"]
    assert all(len(v) == 8 for s in sections.values() for v in s.values())

    problem = InliningForSize(ir2vec_vocab=str(vocab))
    specs = {f.name: f for f in problem.header().features}
    for name in for_llvm(22).EMBEDDING_FEATURES:
        assert specs[name].type == "float" and specs[name].shape == (8,)
    module = next(m for m in Corpus.load(corpora[22]).modules if m.name.endswith("strings.c"))
    env = mlgo.env.CompilerEnv(problem, module, cache=BaselineCache(tmp_path / "cache"))
    res = mlgo.env.run_episode(env, problem.heuristic("cost-threshold"))
    callees = {tuple(np.round(o["callee_embedding"], 4)) for o in res.observations}
    assert res.num_decisions >= 3 and len(callees) >= 2
    assert all(np.isfinite(o["caller_embedding"]).all() and np.abs(o["caller_embedding"]).sum() > 0
               for o in res.observations)

    # LLVM 19 has no such inputs: a clear error, not a compile that ignores the file.
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, "19")
    with pytest.raises(MlgoError, match="IR2Vec embeddings need LLVM 22"):
        InliningForSize(ir2vec_vocab=str(vocab))


def test_llvm22_protocol_data_imports_no_numpy() -> None:
    """Pure data like llvm19.py: the compiler wrapper's per-compile path may import it."""
    import sys

    code = ("import sys, mlgo.protocol.llvm22\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_a_module_given_without_its_corpus(llvm: int, corpora: dict[int, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """mlgo.env.make on a module alone: a lone .bc file records no version and is taken as the
    chosen LLVM's (on a machine with clang-22 only it used to be refused as LLVM 19's IR); a
    module of a corpus keeps its corpus's recorded version."""
    module = next(m for m in Corpus.load(corpora[llvm]).modules if m.name.endswith("calls.c"))
    lone = tmp_path / "calls.bc"
    shutil.copy(module.bc_path, lone)
    (tmp_path / "calls.cmd").write_bytes(module.cmd_path.read_bytes())
    cache = BaselineCache(tmp_path / "cache")
    problem = get_problem("inlining")
    result = mlgo.env.run_episode(mlgo.env.make(problem, lone, cache=cache),
                                  problem.heuristic("cost-threshold"))
    assert result.num_decisions >= 3 and result.measurement.total == result.default.total
    mlgo.env.make(problem, module, cache=cache)  # its corpus says this version
    other = next(m for m in toolchain.SUPPORTED_MAJORS if m != llvm)
    monkeypatch.setenv(toolchain.VERSION_VARIABLE, str(other))
    with pytest.raises(LlvmVersionError, match=f"IR emitted by LLVM {llvm} "):
        mlgo.env.make(problem, module, cache=cache)
