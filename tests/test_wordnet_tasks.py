"""WordNet-derived labelled sets: labels correct by construction, balanced, unambiguous, disjoint splits."""
from collections import defaultdict

import numpy as np
import pytest

from lib import corpora
from lib.corpora import Synset
from lib.tasks import wordnet


def _syn(offset, pos, lexname, words, pointers=(), gloss="a thing that is here"):
    return Synset(offset, pos, lexname, tuple(words), tuple(pointers), gloss)


def _toy():
    """Six noun synsets in two classes and pointers of known kinds."""
    return [
        _syn(1, "n", "noun.animal", ["dog"], [("@", 3, "n"), ("%p", 5, "n")], 'a domestic canine; "the dog barked"'),
        _syn(2, "n", "noun.animal", ["cat"], [("@", 3, "n"), ("!", 1, "n")], "a small domestic feline"),
        _syn(3, "n", "noun.animal", ["animal"], [("~", 1, "n")], "a living organism that moves"),
        _syn(4, "n", "noun.artifact", ["car"], [("%p", 6, "n"), ("@", 7, "n")], "a motor vehicle with four wheels"),
        _syn(5, "n", "noun.animal", ["tail"], [("!", 1, "n")], "the hindmost part of an animal"),
        _syn(6, "n", "noun.artifact", ["wheel"], [("@", 7, "n")], "a simple machine with a round frame"),
        _syn(7, "n", "noun.artifact", ["vehicle", "conveyance"], [], "a conveyance that transports people"),
        _syn(8, "a", "adj.all", ["big(a)"], [("&", 9, "s")], "above average in size"),
        _syn(9, "s", "adj.all", ["large"], [], "of considerable size"),
    ]


def test_definition_and_lemma():
    assert wordnet.definition('a domestic canine; "the dog barked"') == "a domestic canine"
    assert wordnet.definition("plain text; more text") == "plain text; more text"
    assert wordnet.lemma("big(a)") == "big" and wordnet.lemma("ice cream") == "ice cream"


def test_topic_labels_by_construction():
    ds = wordnet.topic_set(("noun.animal", "noun.artifact"), per_class=3, seed=0, synsets=_toy())
    by_def = {wordnet.definition(s.gloss): s.lexname for s in _toy()}
    assert len(ds) == 6 and np.bincount(ds.labels).tolist() == [3, 3]
    for x, y in zip(ds.inputs, ds.labels):
        assert by_def[x] == ds.classes[y]
    assert "the dog barked" not in " ".join(ds.inputs)  # usage examples are cut


def test_relation_labels_by_construction():
    ds = wordnet.relation_set(("hypernym", "part_meronym", "similar_to"), per_class=1, seed=0, synsets=_toy())
    got = {x: ds.classes[y] for x, y in zip(ds.inputs, ds.labels)}
    allowed = {("dog", "animal"): "hypernym", ("cat", "animal"): "hypernym", ("car", "vehicle"): "hypernym",
               ("wheel", "vehicle"): "hypernym", ("dog", "tail"): "part_meronym", ("car", "wheel"): "part_meronym",
               ("big", "large"): "similar_to"}
    assert all(allowed[x] == rel for x, rel in got.items())
    assert ("big", "large") in got  # the adjective marker is stripped and 's' targets resolve to data.adj


def test_ambiguous_and_symmetric_pairs():
    toy = _toy() + [_syn(10, "n", "noun.animal", ["puppy"], [("@", 1, "n"), ("!", 1, "n")], "a young dog")]
    ds = wordnet.relation_set(("hypernym", "antonym"), per_class=2, seed=0, synsets=toy)
    keys = [frozenset(x) for x in ds.inputs]
    assert len(keys) == len(set(keys))  # unique as unordered pairs
    assert frozenset(("puppy", "dog")) not in keys  # labelled both hypernym and antonym: dropped


def test_split_disjoint_and_stratified():
    ds = wordnet.topic_set(("noun.animal", "noun.artifact"), per_class=3, seed=0, synsets=_toy())
    tr, te = ds.split(2, seed=1)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(ds)
    assert np.bincount(ds.labels[tr]).tolist() == [2, 2]
    assert not {ds.inputs[i] for i in tr} & {ds.inputs[i] for i in te}
    assert ds.split(2, seed=1)[0].tolist() == tr.tolist()
    with pytest.raises(ValueError):
        ds.split(3, seed=0)


def test_fingerprint_and_errors():
    a = wordnet.topic_set(("noun.animal", "noun.artifact"), per_class=3, seed=0, synsets=_toy())
    b = wordnet.LabelledSet(a.name, a.inputs, a.labels[::-1].copy(), a.classes)
    assert a.fingerprint == wordnet.topic_set(("noun.animal", "noun.artifact"), 3, 0, _toy()).fingerprint
    assert a.fingerprint != b.fingerprint
    with pytest.raises(ValueError, match="fewer than per_class"):
        wordnet.topic_set(("noun.animal", "noun.artifact"), per_class=5, synsets=_toy())
    with pytest.raises(ValueError):
        wordnet.topic_set(("noun.animal", "verb.motion"), synsets=_toy())
    with pytest.raises(ValueError):
        wordnet.relation_set(("hypernym", "nonsense"), synsets=_toy())


@pytest.fixture(scope="module")
def synsets():
    if not corpora.have_package("wordnet-base"):
        pytest.skip("WordNet source not fetched (make data)")
    return corpora.wordnet_synsets()


def test_real_topic_set(synsets):
    ds = wordnet.topic_set(per_class=40, seed=3, synsets=synsets)
    assert np.bincount(ds.labels).tolist() == [40] * len(wordnet.DEFAULT_TOPICS)
    lexnames = defaultdict(set)
    for s in synsets:
        lexnames[wordnet.definition(s.gloss)].add(s.lexname)
    assert all(lexnames[x] == {ds.classes[y]} for x, y in zip(ds.inputs, ds.labels))
    assert len(set(ds.inputs)) == len(ds)


def test_real_relation_set(synsets):
    ds = wordnet.relation_set(per_class=40, seed=3, synsets=synsets)
    by_word = defaultdict(list)
    for s in synsets:
        by_word[wordnet.lemma(s.words[0])].append(s)
    file_of = wordnet._POS_FILE  # offsets are unique within one data.<pos> file
    for (head, tail), y in zip(ds.inputs, ds.labels):
        symbol = wordnet.RELATIONS[ds.classes[y]]
        targets = {(o, file_of[p]) for s in by_word[head] for sym, o, p in s.pointers if sym == symbol}
        tails = {(t.offset, file_of[t.pos]) for t in by_word[tail]}
        assert targets & tails, (head, tail, ds.classes[y])
