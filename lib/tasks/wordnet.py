"""Labelled classification sets derived from WordNet 3.0, stand-ins for DBpedia-14 and FewRel.

Tzach et al. (2025) fine-tune their BERT-6 on DBpedia-14 (topic of a Wikipedia abstract) and FewRel (relation
between two entities). Neither is available offline, but WordNet (Miller 1995; Fellbaum 1998) carries real,
human-made labels of the same two kinds:

- **Topic classification** (:func:`topic_set`, DBpedia-like): the input is a synset's definition, the label its
  *lexicographer file*, the broad semantic class the WordNet editors filed it under (``noun.animal``,
  ``noun.artifact``, ``noun.food``, ...). Only the definition is used (the quoted usage examples after ``; "`` and
  the headword are left out), so the classifier reads a description, as with a DBpedia abstract.
- **Relation classification** (:func:`relation_set`, FewRel-like): the input is a word pair ``(head, tail)``, the
  label the WordNet pointer joining their synsets (hypernym, instance-of, part / member meronym, antonym,
  similar-to, derivation). Each synset is represented by its first lemma. Antonym and derivation links are
  *lexical* in WordNet (between particular lemmas), which the parsed pointers do not keep, so for them the first
  lemmas stand in for the linked lemmas: a small source of label noise, stated here rather than hidden.

Both sets are balanced (``per_class`` examples per class, drawn with a seed from everything available), carry no
input twice (an input with two labels, e.g. a pair that is both antonym and derivation, is dropped), and split
into train / test by :meth:`LabelledSet.split` with disjoint examples; relation pairs are unique as *unordered*
pairs, so a pair never appears in one split and its reverse in the other.

WordNet glosses are also part of the study's English pre-training corpus (as Wikipedia is of BERT's), so the
encoder may have read a definition during pre-training, never its label.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lib.corpora import LEXNAMES, Synset, wordnet_synsets

NOUN_CLASSES = tuple(n for n in LEXNAMES if n.startswith("noun."))
# Ten concrete, DBpedia-like noun classes (DBpedia-14 has Animal, Plant, Artist, Building, ...).
DEFAULT_TOPICS = ("noun.animal", "noun.plant", "noun.person", "noun.artifact", "noun.food", "noun.location",
                  "noun.body", "noun.substance", "noun.act", "noun.communication")
# relation name -> WordNet pointer symbol (wndb(5WN)); X --symbol--> Y gives the pair (word of X, word of Y)
RELATIONS = {"hypernym": "@", "instance_of": "@i", "part_meronym": "%p", "member_meronym": "%m",
             "substance_meronym": "%s", "antonym": "!", "similar_to": "&", "derivation": "+", "also_see": "^",
             "pertainym": "\\", "entailment": "*", "cause": ">", "attribute": "="}
DEFAULT_RELATIONS = ("hypernym", "instance_of", "part_meronym", "member_meronym", "antonym", "similar_to",
                     "derivation")
_POS_FILE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


@dataclass(frozen=True)
class LabelledSet:
    """A balanced labelled set: ``inputs[i]`` (a str, or a (head, tail) pair) has class ``classes[labels[i]]``."""

    name: str
    inputs: tuple
    labels: np.ndarray  # (n,) int64 class ids
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the inputs, labels and class names (part of cache keys)."""
        h = hashlib.sha256("\x1f".join(self.classes).encode())
        for x, y in zip(self.inputs, self.labels.tolist()):
            h.update(("\x1e".join(x) if isinstance(x, tuple) else x).encode() + b"\x00" + str(y).encode() + b"\x01")
        return h.hexdigest()[:16]

    def split(self, n_train_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Stratified random split: (train indices, test indices), disjoint; n_train_per_class per class in train."""
        rng = np.random.default_rng(seed)
        train, test = [], []
        for c in range(len(self.classes)):
            idx = rng.permutation(np.flatnonzero(self.labels == c))
            if n_train_per_class >= len(idx):
                raise ValueError(f"class {self.classes[c]!r} has {len(idx)} examples: cannot put "
                                 f"{n_train_per_class} in train and keep a test set")
            train.append(idx[:n_train_per_class])
            test.append(idx[n_train_per_class:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def definition(gloss: str) -> str:
    """The definition part of a WordNet gloss: everything before the first quoted example."""
    return gloss.split('; "')[0].split(' "')[0].strip().rstrip(";").strip()


def lemma(word: str) -> str:
    """A WordNet lemma without its adjective-position marker, e.g. 'beautiful(a)' -> 'beautiful'."""
    return re.sub(r"\([a-z]+\)$", "", word).strip()


def _balanced(pools: dict[str, list], names: tuple[str, ...], per_class: int, seed: int, what: str):
    """Draw per_class items from each pool (seeded); returns (inputs tuple, labels array)."""
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for c, name in enumerate(names):
        pool = pools.get(name, [])
        if len(pool) < per_class:
            raise ValueError(f"{what} {name!r} has only {len(pool)} usable examples, fewer than per_class={per_class}")
        for i in np.sort(rng.choice(len(pool), per_class, replace=False)):
            inputs.append(pool[i])
            labels.append(c)
    return tuple(inputs), np.asarray(labels, dtype=np.int64)


def _drop_ambiguous(pairs: list[tuple[object, str]]) -> dict[str, list]:
    """Group (input, class) pairs by class, keeping each input once and dropping inputs seen with two classes."""
    seen: dict[object, set] = defaultdict(set)
    for key, cls in pairs:
        seen[key].add(cls)
    pools: dict[str, list] = defaultdict(list)
    done = set()
    for key, cls in pairs:
        if len(seen[key]) == 1 and key not in done:
            done.add(key)
            pools[cls].append(key)
    return pools


def topic_set(classes=DEFAULT_TOPICS, per_class: int = 200, seed: int = 0,
              synsets: list[Synset] | None = None) -> LabelledSet:
    """DBpedia-like topic classification: noun definitions labelled by lexicographer file.

    Definitions shorter than three words are skipped. ``synsets`` defaults to ``lib.corpora.wordnet_synsets()``.
    """
    classes = tuple(classes)
    bad = [c for c in classes if c not in NOUN_CLASSES]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be >= 2 distinct noun lexicographer files {NOUN_CLASSES}, got {classes}")
    synsets = wordnet_synsets(("noun",)) if synsets is None else synsets
    pairs = [(definition(s.gloss), s.lexname) for s in synsets
             if s.pos == "n" and s.lexname in classes and len(definition(s.gloss).split()) >= 3]
    inputs, labels = _balanced(_drop_ambiguous(pairs), classes, per_class, seed, "class")
    return LabelledSet("topic", inputs, labels, classes)


def relation_set(relations=DEFAULT_RELATIONS, per_class: int = 200, seed: int = 0,
                 synsets: list[Synset] | None = None) -> LabelledSet:
    """FewRel-like relation classification: (head word, tail word) pairs labelled by their WordNet pointer.

    Pairs whose words are equal (after removing markers) are skipped; a pair is kept once whatever its direction.
    """
    relations = tuple(relations)
    bad = [r for r in relations if r not in RELATIONS]
    if bad or len(set(relations)) != len(relations) or len(relations) < 2:
        raise ValueError(f"relations must be >= 2 distinct names from {tuple(RELATIONS)}, got {relations}")
    synsets = wordnet_synsets() if synsets is None else synsets
    by_key = {(s.offset, _POS_FILE[s.pos]): s for s in synsets}
    wanted = {RELATIONS[r]: r for r in relations}
    pairs, unordered = [], []
    for s in synsets:
        for symbol, offset, pos in s.pointers:
            target = by_key.get((offset, _POS_FILE[pos]))
            if symbol not in wanted or target is None:
                continue
            head, tail = lemma(s.words[0]), lemma(target.words[0])
            if head.lower() != tail.lower():
                pairs.append(((head, tail), wanted[symbol]))
                unordered.append(frozenset((head.lower(), tail.lower())))
    # ambiguity and uniqueness are judged on the unordered pair; the kept input is its first ordered occurrence
    first = {}
    for (pair, rel), key in zip(pairs, unordered):
        first.setdefault(key, pair)
    pools = _drop_ambiguous([(key, rel) for (_, rel), key in zip(pairs, unordered)])
    pools = {rel: [first[k] for k in keys] for rel, keys in pools.items()}
    inputs, labels = _balanced(pools, relations, per_class, seed, "relation")
    return LabelledSet("relation", inputs, labels, relations)
