"""Corpora are deterministic: same sources and parameters, same fingerprint."""
import pytest

from lib import corpora


def test_fingerprint_is_content_hash():
    assert corpora.fingerprint(["a", "b"]) == corpora.fingerprint(["a", "b"])
    assert corpora.fingerprint(["a", "b"]) != corpora.fingerprint(["b", "a"])
    assert corpora.fingerprint(["ab"]) != corpora.fingerprint(["a", "b"])


@pytest.mark.parametrize("name", corpora.CORPORA)
def test_build_is_deterministic_and_capped(name):
    a = corpora.build_corpus(name, max_chars=100_000, seed=0)
    b = corpora.build_corpus(name, max_chars=100_000, seed=0)
    assert a.fingerprint == b.fingerprint and len(a.docs) > 3
    assert a.n_chars >= 100_000 and a.n_chars - max(map(len, a.docs)) < 100_000  # stops at the first doc past the cap
    assert len(set(a.docs)) == len(a.docs)  # deduplicated
    c = corpora.build_corpus(name, max_chars=100_000, seed=1)
    assert c.fingerprint != a.fingerprint


def test_split_is_stable_and_disjoint():
    c = corpora.build_corpus("stories", max_chars=200_000)
    train, val = c.split(0.1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(c.docs)
    assert 0.03 < len(val) / len(c.docs) < 0.2
    assert c.split(0.1) == (train, val)


def test_cached_corpus_matches_built(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    a = corpora.load_corpus("lua", max_chars=50_000)
    assert a.fingerprint == corpora.build_corpus("lua", max_chars=50_000).fingerprint
    assert corpora.load_corpus("lua", max_chars=50_000).fingerprint == a.fingerprint


def test_wordnet_parse():
    syn = corpora.wordnet_synsets(("noun",))
    assert len(syn) == 82115  # WordNet 3.0 noun synsets
    dog = next(s for s in syn if "dog" in s.words and s.lexname == "noun.animal")
    assert "domesticated" in dog.gloss and any(p[0] == "@" for p in dog.pointers)


def test_missing_source_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(corpora, "SOURCES_DIR", tmp_path)
    with pytest.raises(corpora.MissingSourceError, match="make data"):
        corpora.require("wordnet-base")
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(corpora.MissingSourceError, match="wordnet-base"):
        corpora.fetch_sources(("wordnet-base",))
