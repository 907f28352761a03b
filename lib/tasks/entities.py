"""The entity-tracking "boxes" task of Prakash et al. 2024 (after Kim & Schuster 2023), with its counterfactual sets.

A prompt binds N objects to N box labels and asks for the content of one box:

    The {o1} is in Box {L1}, the {o2} is in Box {L2}, ..., the {oN} is in Box {LN}. Box {Lq} contains the

and the answer is the single next token ` {oq}`. Objects are nouns that are one token (with their leading space)
for the tokenizer at hand, labels single capital letters that are one token; within a prompt objects and labels are
distinct. Because every object and label is one token, every prompt with N boxes has the same length, so positions
are shared: the object of box k, the label of box k, the query label (last - 2 when " contains" is one token) and the last token ("the").

A batch of prompts is a :class:`Boxes` of index arrays; :func:`encode` turns it into token ids and positions.
Counterfactual sets (research/papers.md, Paper 3 (a)):

* :func:`corrupt` — path patching's corrupted run and the mean-ablation reference: a fresh context (other objects
  and labels) and a random capital letter as query label;
* :func:`desideratum` — DCM's three source prompts and targets: ``positional`` (the base prompt's object at the
  source's query box), ``object`` (the source's answer, absent from the base prompt), ``box_label`` (the base's
  object carrying the source's query label, placed at a different box in the source).

:func:`arithmetic_texts` is a "different objective": plain arithmetic lines (chapter 3's fine-tunes are in
lib.tasks.arithmetic).
"""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

import numpy as np
import torch

# Concrete nouns (the paper's data/objects.csv lists ~84 such words); the tokenizer decides which are usable.
OBJECTS = tuple("""
apple bag ball bell bill bird boat bone book bottle bowl box bread brick brush bus cake camera candle cap car card
cart chain chair chalk clock cloth coat coin comb computer cookie cord cup desk dish document dog doll door drug drum
egg engine fan file film fish flag flower fork frame frog fruit game gift glass glove gun hammer hat horse jar key
kite knife lamp leaf letter lock machine map mask milk mirror nail needle net note nut oil paper pen pencil phone
picture pin pipe plant plate plug radio ring rock rope salt seed sheet shell shirt shoe soap sock spoon stamp star
stick stone string sugar table tape television ticket tie tool toy train tray tree tube watch wheel whistle wire
""".split())
LABELS = tuple(string.ascii_uppercase)
DESIDERATA = ("positional", "object", "box_label")


@dataclass(frozen=True)
class Vocab:
    objects: tuple[str, ...]
    labels: tuple[str, ...]


@dataclass
class Boxes:
    """A batch of prompts as indices: objects (N, n_boxes) into vocab.objects, labels (N, n_boxes) into vocab.labels,
    query (N,) the query label (an index into vocab.labels; it need not occur in the context)."""

    objects: np.ndarray
    labels: np.ndarray
    query: np.ndarray

    @property
    def n_boxes(self) -> int:
        return self.objects.shape[1]

    def __len__(self) -> int:
        return len(self.query)

    @property
    def query_box(self) -> np.ndarray:
        """(N,) the box whose label is the query, -1 where the query label is not in the context."""
        hit = self.labels == self.query[:, None]
        return np.where(hit.any(1), hit.argmax(1), -1)

    @property
    def answer(self) -> np.ndarray:
        """(N,) object index of the correct answer, -1 where the query label is not in the context."""
        qb = self.query_box
        return np.where(qb >= 0, self.objects[np.arange(len(self)), np.maximum(qb, 0)], -1)


def _piece_tokens(tokenizer, word: str) -> list[int]:
    """Ids that ` word` adds after "The" (robust to tokenizers that add BOS or a dummy-prefix space)."""
    head = tokenizer("The")["input_ids"]
    ids = tokenizer(f"The {word}")["input_ids"]
    return ids[len(head):] if ids[:len(head)] == head else ids


def single_token_words(tokenizer, words) -> tuple[str, ...]:
    """The words that are one token (with their leading space) in running text."""
    return tuple(w for w in words if len(_piece_tokens(tokenizer, w)) == 1)


def vocab_words(tokenizer, min_len: int = 3, limit: int = 200) -> tuple[str, ...]:
    """Lower-case alphabetic words that are one token with a leading space (a fallback for tiny vocabularies)."""
    words = sorted({tokenizer.decode([i]).strip() for i in tokenizer.get_vocab().values()
                    if tokenizer.decode([i]).startswith(" ")})
    words = [w for w in words if w.isalpha() and w.islower() and w.isascii() and len(w) >= min_len]
    return single_token_words(tokenizer, words)[:limit]


def make_vocab(tokenizer, objects=OBJECTS, labels=LABELS, n_boxes: int = 7) -> Vocab:
    """Single-token objects and labels for `tokenizer`; raises ValueError if fewer than n_boxes of either."""
    vocab = Vocab(single_token_words(tokenizer, objects), single_token_words(tokenizer, labels))
    if min(len(vocab.objects), len(vocab.labels)) < 2 * n_boxes:  # two disjoint contexts for the DCM sources
        raise ValueError(f"only {len(vocab.objects)} single-token objects and {len(vocab.labels)} labels; need "
                         f"{2 * n_boxes} of each for {n_boxes} boxes")
    return vocab


# ---------------------------------------------------------------------------------------------------- sampling
def _distinct(rng, n_rows: int, n_pick: int, pool: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """(n_rows, n_pick) distinct indices from range(pool) per row, avoiding exclude[row] (n_rows, k)."""
    keys = rng.random((n_rows, pool))
    if exclude is not None:
        np.put_along_axis(keys, exclude, np.inf, axis=1)
    return np.argsort(keys, axis=1)[:, :n_pick]


def sample(vocab: Vocab, n: int, n_boxes: int, rng: np.random.Generator) -> Boxes:
    """n prompts: distinct objects and labels within a prompt, the query box uniform over the boxes."""
    objects = _distinct(rng, n, n_boxes, len(vocab.objects))
    labels = _distinct(rng, n, n_boxes, len(vocab.labels))
    qbox = rng.integers(0, n_boxes, n)
    return Boxes(objects, labels, labels[np.arange(n), qbox])


def corrupt(vocab: Vocab, n: int, n_boxes: int, rng: np.random.Generator) -> Boxes:
    """Path patching's corrupted prompts / the mean-ablation reference: fresh contexts, a random query letter."""
    b = sample(vocab, n, n_boxes, rng)
    return Boxes(b.objects, b.labels, rng.integers(0, len(vocab.labels), n))


def _other_box(rng, avoid: list[np.ndarray], n_boxes: int) -> np.ndarray:
    """(N,) a box index different from every avoid[k][i]."""
    keys = rng.random((len(avoid[0]), n_boxes))
    for a in avoid:
        keys[np.arange(len(a)), a] = np.inf
    return keys.argmin(1)


def desideratum(vocab: Vocab, base: Boxes, kind: str, rng: np.random.Generator) -> tuple[Boxes, np.ndarray]:
    """DCM source prompts for `base` and the target object (N,) the desideratum predicts (Prakash et al. 2024).

    positional: the source queries another box (its objects all absent from base); target = base's object at the
        source's query box, i.e. the model follows the *position* carried over from the source.
    object: the same sources; target = the source's answer, which does not occur in base.
    box_label: the source's query label L is one of base's labels other than its query (box j), placed in the source
        at a box k differing from j and from base's query box; target = base's object at box j (label L).
    """
    if kind not in DESIDERATA:
        raise ValueError(f"kind must be one of {DESIDERATA}, got {kind!r}")
    n, nb, rows = len(base), base.n_boxes, np.arange(len(base))
    qb = base.query_box
    objects = _distinct(rng, n, nb, len(vocab.objects), exclude=base.objects)
    if kind in ("positional", "object"):
        labels = _distinct(rng, n, nb, len(vocab.labels))
        sq = _other_box(rng, [qb], nb)
        source = Boxes(objects, labels, labels[rows, sq])
        target = base.objects[rows, sq] if kind == "positional" else objects[rows, sq]
        return source, target
    j = _other_box(rng, [qb], nb)
    label = base.labels[rows, j]
    labels = _distinct(rng, n, nb, len(vocab.labels), exclude=label[:, None])
    k = _other_box(rng, [qb, j], nb)
    labels[rows, k] = label
    return Boxes(objects, labels, label), base.objects[rows, j]


# ---------------------------------------------------------------------------------------------------- text and ids
def prompt(vocab: Vocab, b: Boxes, i: int) -> str:
    """The paper's prompt for row i (without the answer)."""
    segs = [f"{'The' if k == 0 else 'the'} {vocab.objects[o]} is in Box {vocab.labels[l]}"
            for k, (o, l) in enumerate(zip(b.objects[i], b.labels[i]))]
    return ", ".join(segs) + f". Box {vocab.labels[b.query[i]]} contains the"


def prompts(vocab: Vocab, b: Boxes) -> list[str]:
    return [prompt(vocab, b, i) for i in range(len(b))]


def answers(vocab: Vocab, b: Boxes) -> list[str]:
    return [f" {vocab.objects[a]}" if a >= 0 else "" for a in b.answer]


def token_ids(tokenizer, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """(object token ids (n_objects,), label token ids (n_labels,)) as they appear after a space."""
    ids = [torch.tensor([_piece_tokens(tokenizer, w)[0] for w in ws]) for ws in (vocab.objects, vocab.labels)]
    return ids[0], ids[1]


def layout(tokenizer, n_boxes: int, vocab: Vocab) -> dict:
    """Token positions shared by every prompt with n_boxes boxes: object_pos (n_boxes,), label_pos (n_boxes,),
    query_pos (the query label), T."""
    b = Boxes(np.arange(n_boxes)[None], np.arange(n_boxes)[None], np.zeros(1, dtype=int))
    text = prompt(vocab, b, 0)
    obj, lab = [], []
    for k in range(n_boxes):  # position of a word = length of the tokenized prefix ending with it, minus one
        head = text.split(f" Box {vocab.labels[k]}")[0]  # ends with "<object> is in"
        obj.append(len(tokenizer(head.rsplit(" is in", 1)[0])["input_ids"]) - 1)
        lab.append(len(tokenizer(f"{head} Box {vocab.labels[k]}")["input_ids"]) - 1)
    query = len(tokenizer(text.rsplit(" contains", 1)[0])["input_ids"]) - 1  # last - 2 when " contains" is one token
    return {"object_pos": torch.tensor(obj), "label_pos": torch.tensor(lab), "query_pos": query,
            "T": len(tokenizer(text)["input_ids"])}


def encode(tokenizer, vocab: Vocab, b: Boxes) -> dict:
    """Token ids and positions of a batch of prompts (all of one length).

    input_ids / attention_mask (N, T); answer_ids (N,) the answer token (-1 where the query is absent); last = T-1,
    query_pos the query label (T-3 when " contains" is one token, as for Llama), prev_query_pos (N,) the query label's box label position in the context (-1
    if absent); object_pos / label_pos (n_boxes,). Checks that every object and label sits where the layout says.
    """
    lay = layout(tokenizer, b.n_boxes, vocab)
    ids = torch.tensor(tokenizer(prompts(vocab, b))["input_ids"])  # ragged lengths would fail here
    obj_ids, lab_ids = token_ids(tokenizer, vocab)
    objects, labels = torch.as_tensor(b.objects), torch.as_tensor(b.labels)
    T = ids.shape[1]
    if T != lay["T"] or not torch.equal(ids[:, lay["object_pos"]], obj_ids[objects]) \
            or not torch.equal(ids[:, lay["label_pos"]], lab_ids[labels]) \
            or not torch.equal(ids[:, lay["query_pos"]], lab_ids[torch.as_tensor(b.query)]):
        raise ValueError("prompts do not follow the shared layout: an object or label is not a single token")
    qb = torch.as_tensor(b.query_box)
    answer = torch.as_tensor(b.answer)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "answer_ids": torch.where(answer >= 0, obj_ids[answer.clamp(min=0)], -1),
            "last": T - 1, "query_pos": lay["query_pos"],
            "prev_query_pos": torch.where(qb >= 0, lay["label_pos"][qb.clamp(min=0)], -1),
            "object_pos": lay["object_pos"], "label_pos": lay["label_pos"]}


def model_inputs(enc: dict) -> dict:
    """The model's keyword arguments of an encoded batch. Every method reads the last position only (prompts share
    one length), so the model computes logits there alone (`logits_to_keep=1`: the 4096-way unembedding of every
    position was most of the cost)."""
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "logits_to_keep": 1}


def fingerprint(*batches: Boxes) -> str:
    h = hashlib.sha256()
    for b in batches:
        for a in (b.objects, b.labels, b.query):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- arithmetic
def arithmetic_texts(n: int, rng: np.random.Generator, max_digits: int = 3) -> list[str]:
    """n lines of exact arithmetic, "What is 123 + 45? 123 + 45 = 168." style (the Goat / FLoat analogue)."""
    out = []
    for _ in range(n):
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, max_digits + 1)))) for _ in range(2))
        op = rng.choice(["+", "-", "*"])
        value = a + b if op == "+" else a - b if op == "-" else a * b
        out.append(f"What is {a} {op} {b}? {a} {op} {b} = {value}.")
    return out

