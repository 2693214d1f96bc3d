"""The corpus description loader: clear errors for every malformed input, fuzzed."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus_tools.corpus import Corpus, Module, write_description
from mlgo_base.errors import CorpusError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(json_values, st.fixed_dictionaries({"modules": json_values}),
                     st.fixed_dictionaries({"modules": st.lists(st.text(max_size=6), max_size=4),
                                            "has_thinlto": json_values, "projects": json_values})))
def test_fuzzed_descriptions_load_or_fail_clearly(tmp_path, doc):
    (tmp_path / "corpus_description.json").write_text(json.dumps(doc))
    try:
        c = Corpus.load(tmp_path, check_files=False)
    except CorpusError as e:
        assert "corpus_description.json" in str(e)
    else:
        assert all(isinstance(m, Module) and m.name for m in c.modules)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b'{"modules": "a"}', b'{"modules": [1]}'])
def test_malformed_descriptions(tmp_path, raw):
    (tmp_path / "corpus_description.json").write_bytes(raw)
    with pytest.raises(CorpusError, match="corpus_description.json"):
        Corpus.load(tmp_path)


def test_missing_listed_module_is_named(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.bc").write_bytes(b"BC")
    (tmp_path / "p" / "a.cmd").write_bytes(b"-c")
    write_description(tmp_path, ["p/a", "p/gone"])
    with pytest.raises(CorpusError, match="p/gone"):
        Corpus.load(tmp_path)


def test_missing_directory_and_empty_corpus(tmp_path, capsys):
    with pytest.raises(CorpusError, match="not found"):
        Corpus.load(tmp_path / "nope")
    write_description(tmp_path, [])
    assert len(Corpus.load(tmp_path)) == 0
    from mlgo.cli.main import main

    assert main(["eval", "--problem", "inlining", "--corpus", str(tmp_path), "--policy", "never"]) == 2
    assert "has no modules" in capsys.readouterr().err
