"""The environment measures the build a user makes: for every module of a real Debian package
extracted for inlining-for-size, the default measurement the rewards are relative to equals the
.text of `clang-19 -Oz -c SOURCE` with the package's own flags, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus_tools import debian
from corpus_tools.corpus import Corpus
from corpus_tools.ir_analysis import size_attributes
from mlgo.problems import get_problem
from mlgo.problems.frontend import compare_with_build


@pytest.mark.slow
@pytest.mark.parametrize("package", ["lua5.4", "double-conversion"])  # C, C++
def test_default_measurement_is_the_real_oz_compile_of_each_source(
        tmp_path: Path, package: str) -> None:
    # The package's build is cached across runs (~/.cache/mlgo/debian); extraction is not.
    res = debian.build_package(package, tmp_path / "corpus", jobs=2, progress=False,
                               opt_level="-Oz")
    assert not res.extract.failed
    corpus = Corpus.load(tmp_path / "corpus")
    assert corpus.opt_level == "-Oz" and len(corpus) >= 10
    levels = {m.name: size_attributes(m.bc_path).level() for m in corpus.modules}
    assert set(levels.values()) <= {"-Oz", "no functions"}, levels
    assert "-Oz" in levels.values()

    assert res.src_dir is not None
    rows = compare_with_build(get_problem("inlining"), corpus,
                              res.src_dir / "mlgo_compile_commands.json", project=package,
                              root=res.src_dir, exclude=res.exclude)
    assert sorted(r.module for r in rows) == sorted(m.name for m in corpus.modules)
    differ = [(r.module, r.environment, r.build) for r in rows if r.environment != r.build]
    assert not differ
